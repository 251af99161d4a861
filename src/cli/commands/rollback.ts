import type { RegisterCommand } from "../command-runtime.js";
import { idArgument } from "../flags.js";
import { withExamples } from "../help-text.js";

/**
 * `rollback <datasetId> --to <runId>`: moves `_CURRENT` back (or forward again) to a retained
 * SUCCEEDED run, after checking its manifest and every winner's data in the object store; the
 * pointer is written last. `--json` prints `{ datasetId, runId, previousRunId, manifestUrl }`.
 * Refused with the reason (exit 3): a run of another dataset, a run that is not SUCCEEDED (STARTED,
 * PUBLISHING, FAILED, PRUNED), the current run, a missing manifest or missing winner data. An
 * unknown dataset or run is not found.
 *
 * @example `shardledger rollback events --to 2026-11-22 --json`
 */
export const registerRollback: RegisterCommand = (program, runtime) => {
  const command = program
    .command("rollback")
    .description("move _CURRENT back to a retained succeeded run (its manifest and data are checked first)")
    .argument("<datasetId>", "the dataset")
    .requiredOption("--to <runId>", "the run readers should read again")
    .action(
      runtime.action<{ to: string }>(async (ctx, [datasetId], options) => {
        const id = idArgument("<datasetId>", datasetId as string);
        const to = idArgument("--to", options.to);
        const ledger = await ctx.ledger();
        const result = await ledger.rollback(id, to);
        return {
          json: result,
          human: (style) =>
            `rolled dataset ${style.bold(result.datasetId)} back to run ${style.bold(result.runId)}` +
            `${result.previousRunId === null ? "" : ` (from ${result.previousRunId})`}\n` +
            `manifest ${result.manifestUrl}\n`,
        };
      }),
    );
  withExamples(
    command,
    [
      "shardledger runs events   # pick a SUCCEEDED run to go back to",
      "shardledger rollback events --to 2026-11-22",
      "shardledger rollback events --to 2026-11-23 --json   # and forward again",
    ],
    "Exit 3 when the run is not a retained SUCCEEDED run of the dataset, is already current, or its\nmanifest or winner data is missing; nothing changes then. The run rolled back from is kept for\nthe safety window, then is ordinary retained data (keepRuns, retention). `publish` never moves\n_CURRENT back to a run that was current once; a new run's publish moves it forward as usual.",
  );
};
