import type { CleanupReport } from "../../maintenance/maintenance-reports.js";
import type { PendingCleanupItem } from "../../projections/views.js";
import type { RegisterCommand } from "../command-runtime.js";
import { EXIT } from "../exit-codes.js";
import { idArgument, optionalIntegerFlag, withFlagNames } from "../flags.js";
import { withExamples } from "../help-text.js";
import type { Style } from "../style.js";
import { renderTable } from "../table.js";

/**
 * `cleanup [--dataset ID] [--dry-run] [--retry-now]`: deletes the losers of published runs and
 * drains the due part of the pending-cleanup set (`--retry-now`: every item not exhausted, due or
 * not). `--json` prints `{ deleted: [url], failed: [{ url, error, tries }], planned: [url] }` plus
 * `skipped` (datasets another pass was working on), `leaseLost` (datasets whose pass was fenced off
 * midway; exit 3), `pending` (items left in the pending set) and
 * `nextDueAt` (the earliest next retry, or null) and `dryRun`, and `throughput` (per dataset the
 * concurrent pass cleaned: concurrency, the delete rate it settled at, requests, throttled). Exit 4
 * whenever `pending` is not 0. `--concurrency N` (default 16; 1 = one prefix at a time) and
 * `--initial-rate R` (keys/s the adaptive limiter starts at, default 1000) tune the pass.
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
    .option(
      "--retry-now",
      "try every pending item that is not exhausted now, even before its next retry time",
    )
    .option("--concurrency <n>", "prefixes in flight (1: one at a time); default 16")
    .option(
      "--initial-rate <keys-per-second>",
      "delete rate the adaptive limiter starts at (it ramps up, and backs off on SlowDown); default 1000",
    )
    .action(
      runtime.action<{
        dataset?: string;
        dryRun?: boolean;
        retryNow?: boolean;
        concurrency?: string;
        initialRate?: string;
      }>(async (ctx, _args, options) => {
        const datasetId =
          options.dataset === undefined ? undefined : idArgument("--dataset", options.dataset);
        // Validated here (flag names in the error) and again by the ledger (its own bounds).
        const concurrency = optionalIntegerFlag("--concurrency", options.concurrency, { min: 1, max: 256 });
        const initialRate = optionalIntegerFlag("--initial-rate", options.initialRate, { min: 1 });
        const ledger = await ctx.ledger();
        if (datasetId !== undefined) await ledger.dataset(datasetId);
        const progress = ctx.progress({
          label: options.dryRun ? "cleanup (dry run)" : "cleanup",
          unit: "datasets",
        });
        let report: CleanupReport;
        try {
          report = await withFlagNames({ concurrency: "--concurrency", initialRate: "--initial-rate" }, () =>
            ledger.cleanup({
              ...(datasetId !== undefined ? { datasetId } : {}),
              ...(options.dryRun ? { dryRun: true } : {}),
              ...(options.retryNow ? { retryNow: true } : {}),
              ...(concurrency !== undefined ? { concurrency } : {}),
              ...(initialRate !== undefined ? { initialRate } : {}),
              signal: ctx.signal,
            }),
          );
        } finally {
          progress.stop();
        }
        const { skipped, ...contract } = report;
        // Which of the pending items no pass retries on its own: the message says what does.
        const exhausted =
          report.pending > 0
            ? (await ledger.pendingCleanup(datasetId !== undefined ? { datasetId } : {})).filter(
                (i) => i.state === "exhausted",
              )
            : [];
        return {
          json: { ...contract, skipped },
          human: (style) => renderCleanup(style, report, options.dryRun === true),
          // A pass fenced off midway is a refusal by a rule (another pass owns the dataset now).
          ...(report.leaseLost.length > 0
            ? {
                exitCode: EXIT.REFUSED,
                message: `cleanup: the maintenance lease of ${report.leaseLost.join(", ")} was lost midway (another pass took it); this pass stopped before its next request`,
              }
            : report.pending > 0 || report.failed.length > 0
              ? { exitCode: EXIT.PENDING, message: pendingMessage(report, exhausted) }
              : {}),
        };
      }),
    );
  withExamples(
    command,
    [
      "shardledger cleanup --dry-run",
      "shardledger cleanup --dataset events --json",
      "shardledger cleanup --dataset events --retry-now",
      "shardledger cleanup --dataset events --concurrency 32 --initial-rate 2000",
    ],
    "Exit 4 whenever the pending set is not empty after the pass: deletions that failed, items\nwaiting for their next retry (`nextDueAt` says when the first is due) and exhausted items\n(see `shardledger pending`, `shardledger retry-failed`). Alert when exit 4 persists.\n--retry-now tries every waiting item now instead of when it is due.",
  );
};

/**
 * What exit 4 means and what clears it: a later pass (or `--retry-now`) retries the waiting items;
 * only `retry-failed` requeues the exhausted ones, which no pass touches on its own.
 */
function pendingMessage(report: CleanupReport, exhausted: readonly PendingCleanupItem[]): string {
  const parts: string[] = [];
  const waiting = report.pending - exhausted.length;
  if (waiting > 0) {
    const when = report.nextDueAt === null ? "" : `, the next due at ${report.nextDueAt}`;
    parts.push(
      `${waiting} waiting for a retry${when}: a later pass retries them when due, --retry-now at once`,
    );
  }
  if (exhausted.length > 0) {
    const datasets = [...new Set(exhausted.map((i) => i.datasetId))].sort();
    const commands = datasets.map((d) => `\`shardledger retry-failed ${d}\``).join(", ");
    parts.push(
      `${exhausted.length} exhausted: no pass retries them until ${commands} requeues them (\`shardledger pending\` shows their errors)`,
    );
  }
  return `cleanup: ${report.pending} item(s) pending; ${parts.join("; ")}`;
}

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
  if (report.pending > 0) {
    lines.push(
      `pending ${style.red(String(report.pending))}${report.nextDueAt === null ? "" : `, next retry due at ${report.nextDueAt}`}`,
    );
  }
  if (report.skipped.length > 0)
    lines.push(style.dim(`skipped (another pass holds the lock): ${report.skipped.join(", ")}`));
  return `${lines.join("\n")}\n`;
}
