import type { RegisterCommand } from "../command-runtime.js";
import { datasetListing } from "../dataset-listing.js";
import { withExamples } from "../help-text.js";
import { renderRuns } from "../views.js";

/**
 * `runs <datasetId>`: the run registry, newest first. `--json` prints an array of runs with
 * `runId, status, numShards, current, startedAt, updatedAt` and the rest of the RunView.
 *
 * @example `shardledger runs events --json`
 */
export const registerRuns: RegisterCommand = (program, runtime) => {
  const command = program
    .command("runs")
    .description("the run registry of a dataset, newest first")
    .argument("<datasetId>", "the dataset")
    .action(runtime.action(datasetListing((ledger, id) => ledger.runs(id), renderRuns)));
  withExamples(command, [
    "shardledger runs events",
    "shardledger runs events --json | jq '.[] | select(.current)'",
  ]);
};
