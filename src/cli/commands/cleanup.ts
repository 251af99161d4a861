import type { CleanupReport } from "../../ledger/maintenance.js";
import type { RegisterCommand } from "../command-runtime.js";
import { EXIT } from "../exit-codes.js";
import { idArgument } from "../flags.js";
import { withExamples } from "../help-text.js";
import type { Style } from "../style.js";
import { renderTable } from "../table.js";

/**
 * `cleanup [--dataset ID] [--dry-run]`: deletes the losers of published runs and drains the due
 * part of the pending-cleanup set. `--json` prints `{ deleted: [url], failed: [{ url, error,
 * tries }], planned: [url] }` (plus `skipped`: datasets another pass was working on). Exit 4 when
 * something was left pending.
 *
 * @example `shardledger cleanup --dataset events --dry-run --json`
 */
export const registerCleanup: RegisterCommand = (program, runtime) => {
  const command = program
    .command("cleanup")
    .description(
      "delete losers of published runs and retry the pending-cleanup set (each deletion planned as an event first)",
    )
    .option("--dataset <id>", "only this dataset")
    .option("--dry-run", "list exactly what would be deleted; delete nothing")
    .action(
      runtime.action<{ dataset?: string; dryRun?: boolean }>(async (ctx, _args, options) => {
        const datasetId =
          options.dataset === undefined ? undefined : idArgument("--dataset", options.dataset);
        const ledger = await ctx.ledger();
        if (datasetId !== undefined) await ledger.dataset(datasetId);
        const progress = ctx.progress({
          label: options.dryRun ? "cleanup (dry run)" : "cleanup",
          unit: "datasets",
        });
        let report: CleanupReport;
        try {
          report = await ledger.cleanup({
            ...(datasetId !== undefined ? { datasetId } : {}),
            ...(options.dryRun ? { dryRun: true } : {}),
            signal: ctx.signal,
          });
        } finally {
          progress.stop();
        }
        const { skipped, ...contract } = report;
        return {
          json: { ...contract, skipped },
          human: (style) => renderCleanup(style, report, options.dryRun === true),
          ...(report.failed.length > 0
            ? {
                exitCode: EXIT.PENDING,
                message: `cleanup: ${report.failed.length} item(s) left pending; a later pass retries them`,
              }
            : {}),
        };
      }),
    );
  withExamples(
    command,
    ["shardledger cleanup --dry-run", "shardledger cleanup --dataset events --json"],
    "Exit 4 when some deletions failed: they stay in the pending set (see `shardledger pending`)\nwith their last error, and a later pass retries them when due.",
  );
};

function renderCleanup(style: Style, report: CleanupReport, dryRun: boolean): string {
  const lines: string[] = [];
  if (dryRun) {
    lines.push(
      report.planned.length === 0
        ? style.dim("nothing to delete")
        : `would delete ${report.planned.length} prefix(es):`,
    );
    for (const url of report.planned) lines.push(`  ${url}`);
  } else {
    lines.push(
      `deleted ${style.green(String(report.deleted.length))}, failed ${report.failed.length > 0 ? style.red(String(report.failed.length)) : "0"}, planned ${report.planned.length}`,
    );
    if (report.failed.length > 0) {
      lines.push(
        "",
        renderTable(
          style,
          ["URL", "ERROR", "TRIES"],
          report.failed.map((f) => [f.url, f.error, f.tries]),
        ).trimEnd(),
      );
    }
  }
  if (report.skipped.length > 0)
    lines.push(style.dim(`skipped (another pass holds the lock): ${report.skipped.join(", ")}`));
  return `${lines.join("\n")}\n`;
}
