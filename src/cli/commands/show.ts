import type { RegisterCommand } from "../command-runtime.js";
import { idArgument } from "../flags.js";
import { withExamples } from "../help-text.js";
import { heading, renderAttempts, renderRun, renderWinners } from "../views.js";

/**
 * `show <runId>`: one run with its attempts and winners. `--json` prints
 * `{ run, attempts: [{ shard, attempt, taskAttemptId, url, status, … }], winners }`.
 *
 * @example `shardledger show 2026-11-23 --json`
 */
export const registerShow: RegisterCommand = (program, runtime) => {
  const command = program
    .command("show")
    .description("one run: its status, every attempt and how it was classified, and the winners")
    .argument("<runId>", "the run")
    .action(
      runtime.action(async (ctx, [runId]) => {
        const id = idArgument("<runId>", runId as string);
        const ledger = await ctx.ledger();
        const shown = await ledger.run(id);
        return {
          json: shown,
          human: (style) =>
            renderRun(style, shown.run) +
            heading(style, "attempts") +
            renderAttempts(style, shown.attempts) +
            heading(style, "winners") +
            renderWinners(style, shown.winners),
        };
      }),
    );
  withExamples(command, [
    "shardledger show 2026-11-23",
    "shardledger show 2026-11-23 --json | jq '.attempts[] | select(.status == \"LOSER\")'",
  ]);
};
