import type { Command } from "commander";
import type { AttemptInput, AttemptResult } from "../../ledger/open-ledger.js";
import type { CliRuntime, RegisterCommand } from "../command-runtime.js";
import { integerFlag, withFlagNames } from "../flags.js";
import { withExamples } from "../help-text.js";
import type { Style } from "../style.js";

interface AttemptOptions {
  shard: string;
  attempt: string;
  taskAttemptId?: string;
  url?: string;
  error?: string;
}

const FLAG_NAMES = {
  runId: "<runId>",
  shard: "--shard",
  attempt: "--attempt",
  taskAttemptId: "--task-attempt-id",
  url: "--url",
  error: "--error",
} as const;

type Outcome = "start" | "succeed" | "fail";

const DESCRIPTIONS: Record<Outcome, string> = {
  start: "record that an attempt of a shard started writing",
  succeed: "record that an attempt of a shard finished writing (a candidate winner)",
  fail: "record that an attempt of a shard failed (its data, if any, is a loser)",
};

/**
 * `attempt start|succeed|fail <runId> --shard S --attempt A [--task-attempt-id T] [--url U]`
 * (`--error MSG` on `fail`). `--json` prints the attempt
 * `{ runId, shard, attempt, taskAttemptId, url, status }`.
 *
 * @example `shardledger attempt succeed 2026-11-23 --shard 3 --attempt 1 --url s3://lake/events/data/2026-11-23/shard=00003/attempt=01 --json`
 */
export const registerAttempt: RegisterCommand = (program, runtime) => {
  const group = program.command("attempt").description("record attempt events: start, succeed, fail");
  withExamples(group, [
    "shardledger attempt succeed 2026-11-23 --shard 3 --attempt 0 --url s3://lake/events/data/2026-11-23/shard=00003/attempt=00",
  ]);
  for (const outcome of ["start", "succeed", "fail"] as const) addAttemptCommand(group, runtime, outcome);
};

function addAttemptCommand(group: Command, runtime: CliRuntime, outcome: Outcome): void {
  const command = group
    .command(outcome)
    .description(DESCRIPTIONS[outcome])
    .argument("<runId>", "the run")
    .requiredOption("--shard <n>", "the shard, 0 ≤ shard < numShards")
    .requiredOption("--attempt <n>", "the attempt number as the engine counts it")
    .option("--task-attempt-id <id>", "the engine's task attempt id (a 64-bit integer, e.g. Spark's)")
    .option("--url <url>", "where the attempt writes, under the dataset root");
  if (outcome === "fail") command.option("--error <message>", "what went wrong (recorded in the log)");
  command.action(
    runtime.action<AttemptOptions>(async (ctx, [runId], options) => {
      const input: AttemptInput & { error?: string } = {
        runId: runId as string,
        shard: integerFlag("--shard", options.shard, { min: 0 }),
        attempt: integerFlag("--attempt", options.attempt, { min: 0 }),
        ...(options.taskAttemptId !== undefined ? { taskAttemptId: options.taskAttemptId } : {}),
        ...(options.url !== undefined ? { url: options.url } : {}),
        ...(options.error !== undefined ? { error: options.error } : {}),
      };
      // Validated here too, so bad input is refused before the database is opened.
      const { attemptFailedInputSchema, attemptInputSchema, parseInput } = await import(
        "../../ledger/inputs.js"
      );
      withFlagNames(FLAG_NAMES, () =>
        parseInput(outcome === "fail" ? attemptFailedInputSchema : attemptInputSchema, input),
      );
      const ledger = await ctx.ledger();
      const result = await withFlagNames(FLAG_NAMES, () =>
        outcome === "start"
          ? ledger.attemptStarted(input)
          : outcome === "succeed"
            ? ledger.attemptSucceeded(input)
            : ledger.attemptFailed(input),
      );
      return { json: result, human: (style) => renderAttempt(style, result) };
    }),
  );
  const example = {
    start: "shardledger attempt start 2026-11-23 --shard 3 --attempt 1 --task-attempt-id 1042",
    succeed:
      "shardledger attempt succeed 2026-11-23 --shard 3 --attempt 1 --task-attempt-id 1042 --url s3://lake/events/data/2026-11-23/shard=00003/attempt=01-1042",
    fail: 'shardledger attempt fail 2026-11-23 --shard 3 --attempt 0 --error "ExecutorLostFailure"',
  }[outcome];
  withExamples(command, [example]);
}

function renderAttempt(style: Style, a: AttemptResult): string {
  const task = a.taskAttemptId === null ? "" : ` (task attempt ${a.taskAttemptId})`;
  const url = a.url === null ? "" : ` ${style.dim(a.url)}`;
  return `run ${style.bold(a.runId)} shard ${a.shard} attempt ${a.attempt}${task}: ${style.status(a.status)}${url}\n`;
}
