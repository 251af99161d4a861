import type { RegisterCommand } from "../command-runtime.js";
import { idArgument, integerFlag, withFlagNames } from "../flags.js";
import { withExamples } from "../help-text.js";
import { renderRun } from "../views.js";

const START_FLAGS = { datasetId: "<datasetId>", numShards: "--shards", runId: "--run-id" } as const;

/**
 * `run start|heartbeat|fail`: the writer's side of a run's lifecycle. `run start --json` prints
 * `{ runId, datasetId, numShards, status }`; `heartbeat` and `fail` print the run (RunView).
 *
 * @example `shardledger run start events --shards 16 --run-id 2026-11-23 --json`
 */
export const registerRun: RegisterCommand = (program, runtime) => {
  const group = program.command("run").description("start a run, keep it alive, or abort it");
  withExamples(group, ["shardledger run start events --shards 16 --run-id 2026-11-23"]);

  const start = group
    .command("start")
    .description("start a run of a dataset: numShards shards, each attempted as often as needed")
    .argument("<datasetId>", "the dataset to write")
    .requiredOption("--shards <n>", "number of shards (a positive integer)")
    .option("--run-id <id>", "the run's id (default: run-<UTC timestamp>-<random>)")
    .action(
      runtime.action<{ shards: string; runId?: string }>(async (ctx, [datasetId], options) => {
        const numShards = integerFlag("--shards", options.shards, { min: 1 });
        const input = {
          datasetId: datasetId as string,
          numShards,
          ...(options.runId !== undefined ? { runId: options.runId } : {}),
        };
        const { parseInput, startRunInputSchema } = await import("../../ledger/inputs.js");
        withFlagNames(START_FLAGS, () => parseInput(startRunInputSchema, input));
        const ledger = await ctx.ledger();
        const started = await ledger.startRun(input);
        return {
          json: started,
          human: (style) =>
            `started run ${style.bold(started.runId)} of ${started.datasetId} with ${started.numShards} shard(s)\n`,
        };
      }),
    );
  withExamples(start, [
    "shardledger run start events --shards 16 --run-id 2026-11-23",
    "RUN=$(shardledger run start events --shards 16 --json | jq -r .runId)",
  ]);

  const heartbeat = group
    .command("heartbeat")
    .description(
      "record that a STARTED run is still alive (a run silent longer than staleAfter is abandoned)",
    )
    .argument("<runId>", "the run")
    .action(
      runtime.action(async (ctx, [runId]) => {
        const id = idArgument("<runId>", runId as string);
        const ledger = await ctx.ledger();
        const run = await ledger.heartbeat(id);
        return { json: run, human: (style) => renderRun(style, run) };
      }),
    );
  withExamples(heartbeat, ["shardledger run heartbeat 2026-11-23"]);

  const fail = group
    .command("fail")
    .description("abort a run (writer gave up); its data is collected later by gc")
    .argument("<runId>", "the run")
    .requiredOption("--reason <message>", "why the run was aborted (recorded in the log)")
    .action(
      runtime.action<{ reason: string }>(async (ctx, [runId], options) => {
        const { failRunInputSchema, parseInput } = await import("../../ledger/inputs.js");
        const input = withFlagNames({ runId: "<runId>", reason: "--reason" }, () =>
          parseInput(failRunInputSchema, { runId, reason: options.reason }),
        );
        const ledger = await ctx.ledger();
        const run = await ledger.failRun(input.runId, input.reason);
        return { json: run, human: (style) => renderRun(style, run) };
      }),
    );
  withExamples(fail, ['shardledger run fail 2026-11-23 --reason "executor lost: OOM"']);
};
