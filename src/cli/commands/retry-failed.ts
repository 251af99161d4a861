import type { RegisterCommand } from "../command-runtime.js";
import { idArgument } from "../flags.js";
import { withExamples } from "../help-text.js";

/**
 * `retry-failed <datasetId> [--run ID]`: reopens failed runs and re-queues exhausted cleanup items
 * that are still inside the failed-retention floor. `--json` prints `{ matched, retried,
 * prunedPastRetention }`, deduplicated (one run with many failed attempts counts once).
 *
 * @example `shardledger retry-failed events --run 2026-11-23 --json`
 */
export const registerRetryFailed: RegisterCommand = (program, runtime) => {
  const command = program
    .command("retry-failed")
    .description("reopen failed runs and re-queue exhausted cleanup items inside the failed-retention floor")
    .argument("<datasetId>", "the dataset")
    .option("--run <id>", "only this run")
    .action(
      runtime.action<{ run?: string }>(async (ctx, [datasetArg], options) => {
        const datasetId = idArgument("<datasetId>", datasetArg as string);
        const runId = options.run === undefined ? undefined : idArgument("--run", options.run);
        const ledger = await ctx.ledger();
        await ledger.dataset(datasetId);
        const report = await ledger.retryFailed({ datasetId, ...(runId !== undefined ? { runId } : {}) });
        return {
          json: report,
          human: (style) =>
            report.matched === 0 && report.prunedPastRetention === 0
              ? style.dim("nothing failed\n")
              : `matched ${report.matched}, retried ${style.green(String(report.retried))}, pruned past the floor before this call ${report.prunedPastRetention}\n`,
        };
      }),
    );
  withExamples(
    command,
    ["shardledger retry-failed events", "shardledger retry-failed events --run 2026-11-23 --json"],
    '{ "matched": 0, "prunedPastRetention": 0 } means nothing failed; prunedPastRetention > 0 means\nit failed and was pruned past the floor before you asked.',
  );
};
