import type { RegisterCommand } from "../command-runtime.js";
import { idArgument } from "../flags.js";
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
    .action(
      runtime.action(async (ctx, [datasetId]) => {
        const id = idArgument("<datasetId>", datasetId as string);
        const ledger = await ctx.ledger();
        await ledger.dataset(id); // an unknown dataset is an error (exit 2), not an empty registry
        const runs = await ledger.runs(id);
        return { json: runs, human: (style) => renderRuns(style, runs) };
      }),
    );
  withExamples(command, [
    "shardledger runs events",
    "shardledger runs events --json | jq '.[] | select(.current)'",
  ]);
};
