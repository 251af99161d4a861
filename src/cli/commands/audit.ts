import type { AuditReport } from "../../adapters/postgres/rebuild.js";
import type { RegisterCommand } from "../command-runtime.js";
import { EXIT } from "../exit-codes.js";
import { withExamples } from "../help-text.js";
import type { Style } from "../style.js";
import { renderTable } from "../table.js";

/**
 * `audit [--deep]`: replays the whole log into scratch projections and compares them with the live
 * ones; `--deep` also checks every archive against its `Archived` event (marker, content, sha256,
 * count) and adds `archives: { checked, events, problems }`, a problem making `match` false.
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
    .option("--deep", "also verify every archive of pruned runs against its Archived event (checksum, count)")
    .action(
      runtime.action<{ deep?: boolean }>(async (ctx, _args, options) => {
        const ledger = await ctx.ledger();
        const progress = ctx.progress({ label: "audit", unit: "events replayed" });
        let report: AuditReport;
        try {
          report = await ledger.audit({
            ...(options.deep ? { deep: true } : {}),
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
                message:
                  report.differences.length > 0
                    ? `audit: the live projections differ from a replay of the log (${report.differences.length} difference(s)); after investigating, rebuild them from the log with the library's \`ledger.rebuild()\``
                    : `audit: ${report.archives?.problems.length ?? 0} archive(s) are missing or do not match their Archived event`,
              }),
        };
      }),
    );
  withExamples(
    command,
    [
      "shardledger audit",
      "shardledger audit --json | jq .differences",
      "shardledger audit --deep --json | jq .archives",
    ],
    "Exit 0 when the projections match the log (and, with --deep, every archive verifies), 3 otherwise (the differences and archive problems are printed).",
  );
};

function renderReport(style: Style, report: AuditReport): string {
  const projectionsMatch = report.differences.length === 0;
  let head = projectionsMatch
    ? `replayed ${report.events} event(s): ${style.green("projections match the log")}\n`
    : `replayed ${report.events} event(s): ${style.red(`${report.differences.length} difference(s)`)}\n`;
  const archives = report.archives;
  if (archives) {
    head +=
      archives.problems.length === 0
        ? `checked ${archives.checked} archive(s), ${archives.events} event(s): ${style.green("all verify")}\n`
        : `checked ${archives.checked} archive(s): ${style.red(`${archives.problems.length} problem(s)`)}\n\n${renderTable(
            style,
            ["RUN", "PROBLEM", "ARCHIVE", "REASON"],
            archives.problems.map((p) => [p.runId, p.kind, p.archiveUrl, p.reason]),
          )}`;
  }
  if (projectionsMatch) return head;
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
