import type { GcReport } from "../../maintenance/maintenance-reports.js";
import type { RegisterCommand } from "../command-runtime.js";
import { EXIT } from "../exit-codes.js";
import { idArgument, optionalIntegerFlag, withFlagNames } from "../flags.js";
import { withExamples } from "../help-text.js";
import type { Style } from "../style.js";
import { renderTable } from "../table.js";

/**
 * `gc <datasetId> [--dry-run]`: stale runs, keep-runs, retention and the failed-retention floor,
 * plus orphans, in one locked pass. `--json` prints `{ actions: [{ kind, runId, urls }] }` (plus
 * `failed`, `protected` and `dryRun`); `kind` is `fail_stale`, `failed_retention`, `keep_runs`,
 * `retention` or `orphan`, the pruning kinds being the `Pruned` reasons the rollups count. Exit 4
 * when a deletion failed (its run is pruned by a later pass). `--concurrency N` (default 16)
 * bounds the orphan deletes in flight.
 *
 * @example `shardledger gc events --dry-run --json`
 */
export const registerGc: RegisterCommand = (program, runtime) => {
  const command = program
    .command("gc")
    .description(
      "collect stale runs and orphans, enforce keep-runs, retention and the failed-retention floor",
    )
    .argument("<datasetId>", "the dataset")
    .option("--dry-run", "list exactly what would be deleted or pruned; change nothing")
    .option("--concurrency <n>", "orphan deletes in flight (1: one at a time); default 16")
    .action(
      runtime.action<{ dryRun?: boolean; concurrency?: string }>(async (ctx, [datasetArg], options) => {
        const datasetId = idArgument("<datasetId>", datasetArg as string);
        const concurrency = optionalIntegerFlag("--concurrency", options.concurrency, { min: 1, max: 256 });
        const ledger = await ctx.ledger();
        await ledger.dataset(datasetId);
        const progress = ctx.progress({
          label: options.dryRun ? `gc ${datasetId} (dry run)` : `gc ${datasetId}`,
          unit: "runs",
        });
        let report: GcReport;
        try {
          report = await withFlagNames({ concurrency: "--concurrency" }, () =>
            ledger.gc(datasetId, {
              ...(options.dryRun ? { dryRun: true } : {}),
              ...(concurrency !== undefined ? { concurrency } : {}),
              signal: ctx.signal,
            }),
          );
        } finally {
          progress.stop();
        }
        return {
          json: report,
          human: (style) => renderGc(style, report, options.dryRun === true),
          ...(report.failed.length > 0
            ? {
                exitCode: EXIT.PENDING,
                message: `gc: ${report.failed.length} deletion(s) failed and stay pending; their runs are pruned by a later pass`,
              }
            : {}),
        };
      }),
    );
  withExamples(command, [
    "shardledger gc events --dry-run",
    "shardledger gc events --json | jq '.actions[].kind'",
  ]);
};

function renderGc(style: Style, report: GcReport, dryRun: boolean): string {
  const lines: string[] = [];
  if (report.actions.length === 0) lines.push(style.dim("nothing to do"));
  else {
    lines.push(dryRun ? "would do:" : "done:");
    lines.push(
      renderTable(
        style,
        ["KIND", "RUN", "URLS"],
        report.actions.map((a) => [a.kind, a.runId, a.urls.length]),
      ).trimEnd(),
    );
  }
  if (report.failed.length > 0) {
    lines.push(
      "",
      renderTable(
        style,
        ["FAILED URL", "ERROR", "TRIES"],
        report.failed.map((f) => [f.url, f.error, f.tries]),
      ).trimEnd(),
    );
  }
  const kept = [...new Set(report.protected.map((p) => p.runId))];
  if (kept.length > 0) lines.push(style.dim(`kept: ${kept.join(", ")}`));
  return `${lines.join("\n")}\n`;
}
