import type { RegisterCommand } from "../command-runtime.js";
import { idArgument } from "../flags.js";
import { withExamples } from "../help-text.js";
import { renderTable } from "../table.js";
import { when } from "../views.js";

/**
 * `rollups <datasetId>`: how many runs, attempts and failed items were pruned, per reason (the
 * counts survive the pruning of the events themselves). `--json` prints an array of
 * `{ datasetId, reason, prunedRuns, prunedAttempts, prunedFailedItems, lastPrunedAt }`.
 *
 * @example `shardledger rollups events --json`
 */
export const registerRollups: RegisterCommand = (program, runtime) => {
  const command = program
    .command("rollups")
    .description("counts of what was pruned from a dataset, per reason")
    .argument("<datasetId>", "the dataset")
    .action(
      runtime.action(async (ctx, [datasetId]) => {
        const id = idArgument("<datasetId>", datasetId as string);
        const ledger = await ctx.ledger();
        await ledger.dataset(id);
        const rollups = await ledger.rollups(id);
        return {
          json: rollups,
          human: (style) =>
            rollups.length === 0
              ? style.dim("nothing pruned yet\n")
              : renderTable(
                  style,
                  ["REASON", "RUNS", "ATTEMPTS", "FAILED ITEMS", "LAST PRUNED"],
                  rollups.map((r) => [
                    r.reason,
                    r.prunedRuns,
                    r.prunedAttempts,
                    r.prunedFailedItems,
                    when(r.lastPrunedAt),
                  ]),
                ),
        };
      }),
    );
  withExamples(command, ["shardledger rollups events --json"]);
};
