import type { MaintainPass } from "../../ledger/maintain-loop.js";
import type { RegisterCommand } from "../command-runtime.js";
import { durationFlag, idArgument } from "../flags.js";
import { withExamples } from "../help-text.js";

/**
 * `maintain [--dataset ID] [--every D]`: the long-running worker: `cleanup` then `gc` for each
 * dataset on a schedule, one pass per dataset at a time across all workers (the advisory lock), a
 * graceful stop on SIGTERM/SIGINT after the current batch. `--json` prints one JSON line per pass.
 *
 * @example `shardledger maintain --every 5m --json`
 */
export const registerMaintain: RegisterCommand = (program, runtime) => {
  const command = program
    .command("maintain")
    .description(
      "long-running worker: cleanup then gc for each dataset every interval; stops cleanly on SIGTERM/SIGINT",
    )
    .option("--dataset <id>", "only this dataset")
    .option("--every <duration>", "time between rounds, e.g. 30s, 5m, 1h", "5m")
    .action(
      runtime.action<{ dataset?: string; every: string }>(async (ctx, _args, options) => {
        const everyMs = durationFlag("--every", options.every);
        const datasetId =
          options.dataset === undefined ? undefined : idArgument("--dataset", options.dataset);
        const ledger = await ctx.ledger();
        if (datasetId !== undefined) await ledger.dataset(datasetId);
        const { maintainLoop } = await import("../../ledger/maintain-loop.js");
        await maintainLoop(ledger, {
          everyMs,
          ...(datasetId !== undefined ? { datasetId } : {}),
          signal: ctx.signal,
          onPass: (pass: MaintainPass) =>
            ctx.emit(pass, (style) =>
              pass.skipped
                ? style.dim(`${pass.finishedAt} ${pass.datasetId}: skipped (another worker holds the lock)\n`)
                : pass.error
                  ? style.red(`${pass.finishedAt} ${pass.datasetId}: ${pass.error}\n`)
                  : `${pass.finishedAt} ${pass.datasetId}: cleanup deleted ${pass.cleanup?.deleted ?? 0}, failed ${pass.cleanup?.failed ?? 0}; gc actions ${pass.gc?.actions ?? 0}\n`,
            ),
        });
        return undefined;
      }),
    );
  withExamples(
    command,
    ["shardledger maintain --every 5m", "shardledger maintain --dataset events --every 30s --json"],
    "Several workers may run at once: a Postgres advisory lock lets one pass per dataset through,\nthe others report the pass as skipped. SIGTERM/SIGINT stop it after the current batch (exit 0).",
  );
};
