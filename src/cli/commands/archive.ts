import type { ArchiveReport } from "../../maintenance/maintenance-reports.js";
import type { RegisterCommand } from "../command-runtime.js";
import { EXIT } from "../exit-codes.js";
import { durationFlag, idArgument } from "../flags.js";
import { withExamples } from "../help-text.js";
import type { Style } from "../style.js";
import { renderTable } from "../table.js";

/**
 * `archive [--dataset ID] [--after D] [--dry-run]`: moves the events of runs pruned at least
 * `--after` ago (default: the ledger's `archiveAfter`, 7d) from the hot log to
 * `<root>/_archive/run-<runId>.jsonl` (then its `.complete` marker, then the delete and the
 * `Archived` event in one transaction). `--json` prints `{ archived: [{ datasetId, runId,
 * archiveUrl, events, checksum }], failed: [{ datasetId, runId, error }], deferred, skipped, dryRun }`.
 * Exit 4 when a run failed or was deferred (the next pass resumes it).
 *
 * @example `shardledger archive --dataset events --dry-run --json`
 */
export const registerArchive: RegisterCommand = (program, runtime) => {
  const command = program
    .command("archive")
    .description(
      "move the events of pruned runs from the hot log to the dataset's _archive/ (content, marker, then delete)",
    )
    .option("--dataset <id>", "only this dataset")
    .option("--after <duration>", "archive runs pruned at least this long ago (default: the ledger's, 7d)")
    .option("--dry-run", "list the runs that are due and their event counts; change nothing")
    .action(
      runtime.action<{ dataset?: string; after?: string; dryRun?: boolean }>(async (ctx, _args, options) => {
        const datasetId =
          options.dataset === undefined ? undefined : idArgument("--dataset", options.dataset);
        const afterMs =
          options.after === undefined
            ? undefined
            : durationFlag("--after", options.after, { allowZero: true });
        const ledger = await ctx.ledger();
        if (datasetId !== undefined) await ledger.dataset(datasetId);
        const progress = ctx.progress({
          label: options.dryRun ? "archive (dry run)" : "archive",
          unit: "runs",
        });
        let report: ArchiveReport;
        try {
          report = await ledger.archive({
            ...(datasetId !== undefined ? { datasetId } : {}),
            ...(afterMs !== undefined ? { after: afterMs } : {}),
            ...(options.dryRun ? { dryRun: true } : {}),
            signal: ctx.signal,
          });
        } finally {
          progress.stop();
        }
        const left = report.failed.length + report.deferred.length;
        return {
          json: report,
          human: (style) => renderArchive(style, report),
          ...(left > 0
            ? {
                exitCode: EXIT.PENDING,
                message: `archive: ${left} run(s) not archived this time (failed or deferred); the next pass resumes them`,
              }
            : {}),
        };
      }),
    );
  withExamples(command, [
    "shardledger archive --dry-run",
    "shardledger archive --dataset events --after 30d --json | jq '.archived[].runId'",
  ]);
};

function renderArchive(style: Style, report: ArchiveReport): string {
  const lines: string[] = [];
  if (report.archived.length === 0) lines.push(style.dim("nothing to archive"));
  else {
    lines.push(report.dryRun ? "would archive:" : "archived:");
    lines.push(
      renderTable(
        style,
        ["DATASET", "RUN", "EVENTS", "ARCHIVE"],
        report.archived.map((a) => [a.datasetId, a.runId, a.events, a.archiveUrl]),
      ).trimEnd(),
    );
  }
  if (report.failed.length > 0) {
    lines.push(
      "",
      renderTable(
        style,
        ["DATASET", "FAILED RUN", "ERROR"],
        report.failed.map((f) => [f.datasetId, f.runId, f.error]),
      ).trimEnd(),
    );
  }
  for (const d of report.deferred) lines.push(style.dim(`deferred: ${d.datasetId}/${d.runId}: ${d.why}`));
  if (report.skipped.length > 0)
    lines.push(style.dim(`skipped (another pass holds them): ${report.skipped.join(", ")}`));
  return `${lines.join("\n")}\n`;
}
