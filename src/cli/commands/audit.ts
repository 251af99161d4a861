import type { AuditReport } from "../../adapters/postgres/rebuild.js";
import type { RegisterCommand } from "../command-runtime.js";
import { EXIT } from "../exit-codes.js";
import { withExamples } from "../help-text.js";
import type { Style } from "../style.js";
import { renderTable } from "../table.js";

/**
 * `audit`: replays the whole log into scratch projections and compares them with the live ones.
 * `--json` prints `{ events, match, differences }`. A mismatch exits 3: the live projections
 * break the rule "replay rebuilds exactly what is live", and an operator must see it; the
 * differences are printed either way.
 *
 * @example `shardledger audit --json`
 */
export const registerAudit: RegisterCommand = (program, runtime) => {
  const command = program
    .command("audit")
    .description("replay the log into scratch projections and compare them with the live ones, row by row")
    .action(
      runtime.action(async (ctx) => {
        const ledger = await ctx.ledger();
        const progress = ctx.progress({ label: "audit", unit: "events replayed" });
        let report: AuditReport;
        try {
          report = await ledger.audit({
            onProgress: (events) => {
              // Throwing here rolls the audit's transaction back and drops its scratch schema.
              ctx.throwIfInterrupted();
              progress.update(events);
            },
          });
        } finally {
          progress.stop();
        }
        return {
          json: report,
          human: (style) => renderReport(style, report),
          ...(report.match
            ? {}
            : {
                exitCode: EXIT.REFUSED,
                message: `audit: the live projections differ from a replay of the log (${report.differences.length} difference(s)); run a rebuild after investigating`,
              }),
        };
      }),
    );
  withExamples(
    command,
    ["shardledger audit", "shardledger audit --json | jq .differences"],
    "Exit 0 when the projections match the log, 3 when they differ (the differences are printed).",
  );
};

function renderReport(style: Style, report: AuditReport): string {
  const head = report.match
    ? `replayed ${report.events} event(s): ${style.green("projections match the log")}\n`
    : `replayed ${report.events} event(s): ${style.red(`${report.differences.length} difference(s)`)}\n`;
  if (report.match) return head;
  return `${head}\n${renderTable(
    style,
    ["TABLE", "KEY", "COLUMN", "LIVE", "REPLAYED"],
    report.differences.map((d) => [
      d.table,
      JSON.stringify(d.key),
      d.column,
      JSON.stringify(d.live) ?? "",
      JSON.stringify(d.replayed) ?? "",
    ]),
  )}`;
}
