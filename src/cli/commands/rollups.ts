import type { RegisterCommand } from "../command-runtime.js";
import { datasetListing } from "../dataset-listing.js";
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
      runtime.action(
        datasetListing(
          (ledger, id) => ledger.rollups(id),
          (style, rollups) =>
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
        ),
      ),
    );
  withExamples(command, ["shardledger rollups events --json"]);
};
