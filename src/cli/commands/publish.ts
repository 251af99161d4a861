import type { RegisterCommand } from "../command-runtime.js";
import { idArgument } from "../flags.js";
import { withExamples } from "../help-text.js";
import { renderWinners } from "../views.js";

/**
 * `publish <runId>`: selects the winners, writes the manifest, then moves `_CURRENT` (marker
 * last). `--json` prints `{ runId, status, winners: [{ shard, attempt, taskAttemptId, url }],
 * manifestUrl }`. A missing shard fails the run (exit 3, the shards named); publishing twice is
 * refused (exit 3).
 *
 * @example `shardledger publish 2026-11-23 --json`
 */
export const registerPublish: RegisterCommand = (program, runtime) => {
  const command = program
    .command("publish")
    .description("select one winner per shard, write the manifest, then move _CURRENT to the run")
    .argument("<runId>", "the run to publish")
    .action(
      runtime.action(async (ctx, [runId]) => {
        const id = idArgument("<runId>", runId as string);
        const ledger = await ctx.ledger();
        const result = await ledger.publish(id);
        return {
          json: result,
          human: (style) =>
            `published run ${style.bold(result.runId)}: ${style.status(result.status)}\n` +
            `manifest ${result.manifestUrl}\n\n${renderWinners(style, result.winners)}`,
        };
      }),
    );
  withExamples(
    command,
    ["shardledger publish 2026-11-23", "shardledger publish 2026-11-23 --json | jq .manifestUrl"],
    "Exit 3 when a shard has no successful attempt (the run becomes FAILED and nothing is\npublished; with --json the error body lists missingShards, and `shardledger retry-failed\n<dataset> --run <runId>` reopens the run) or when the run is already published.",
  );
};
