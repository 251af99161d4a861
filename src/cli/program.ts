import { readFileSync } from "node:fs";
import { Command } from "commander";
import { wantsJson } from "./cli-errors.js";
import { type CliIo, resolveIo } from "./cli-io.js";
import { CliRuntime, type RegisterCommand } from "./command-runtime.js";
import { registerAttempt } from "./commands/attempt.js";
import { registerAudit } from "./commands/audit.js";
import { registerCleanup } from "./commands/cleanup.js";
import { registerDataset } from "./commands/dataset.js";
import { registerDatasets } from "./commands/datasets.js";
import { registerDemo } from "./commands/demo.js";
import { registerEvents } from "./commands/events.js";
import { registerFloors } from "./commands/floors.js";
import { registerGc } from "./commands/gc.js";
import { registerMaintain } from "./commands/maintain.js";
import { registerMigrate } from "./commands/migrate.js";
import { registerPending } from "./commands/pending.js";
import { registerPublish } from "./commands/publish.js";
import { registerRetryFailed } from "./commands/retry-failed.js";
import { registerRollback } from "./commands/rollback.js";
import { registerRollups } from "./commands/rollups.js";
import { registerRun } from "./commands/run.js";
import { registerRuns } from "./commands/runs.js";
import { registerServe } from "./commands/serve.js";
import { registerShow } from "./commands/show.js";
import { registerStatus } from "./commands/status.js";
import { addGlobalOptions } from "./global-options.js";
import { withExamples } from "./help-text.js";

/**
 * Every command, in the order `--help` lists them. To add one: write `src/cli/commands/<name>.ts`
 * exporting a {@link RegisterCommand}, and add it here.
 *
 * @example `for (const register of COMMANDS) register(program, runtime)`
 */
const COMMANDS: readonly RegisterCommand[] = [
  registerMigrate,
  registerDataset,
  registerDatasets,
  registerRun,
  registerAttempt,
  registerPublish,
  registerRollback,
  registerStatus,
  registerRuns,
  registerShow,
  registerEvents,
  registerAudit,
  registerPending,
  registerFloors,
  registerRollups,
  registerCleanup,
  registerGc,
  registerRetryFailed,
  registerMaintain,
  registerServe,
  registerDemo,
];

const ROOT_NOTES = `Global options go before or after the command. --json prints exactly one JSON document on
stdout (messages go to stderr); without it, output is aligned tables, coloured on a terminal
unless NO_COLOR is set.

Environment: SHARDLEDGER_DATABASE_URL (default database), SHARDLEDGER_SCHEMA,
NO_COLOR, SHARDLEDGER_DEBUG=1 (stack traces of unexpected errors).

Exit codes: 0 done; 1 unexpected error; 2 bad usage, invalid input or not found (a run,
dataset or stream that does not exist; nothing was written); 3 refused by a rule (shard
coverage, concurrency conflict, safety rail, illegal transition, locked, audit mismatch); 4 done
but items left pending; 130/143 stopped by SIGINT/SIGTERM. With --json a failure prints one
document on stdout: {"error": {"code", "message", "field"?, ...details}} (see the README).`;

/**
 * The `shardledger` commander program, wired to a runtime.
 *
 * @example
 * ```ts
 * const program = createProgram(new CliRuntime(resolveIo()))
 * ```
 */
export function createProgram(runtime: CliRuntime): Command {
  const { io } = runtime;
  const program = new Command("shardledger")
    .description(
      "Control plane for sharded writes to object storage: records every attempt of every shard in an append-only PostgreSQL log, picks winners deterministically, publishes marker-last, cleans up.",
    )
    .version(packageVersion(), "-V, --version", "print the version")
    .helpOption("-h, --help", "show help (every command has its own, with an example)")
    .exitOverride()
    .configureOutput({
      writeOut: (text) => io.stdout.write(text),
      writeErr: (text) => io.stderr.write(text),
      outputError: (text, write) => write(`shardledger: ${text.replace(/^error: /, "")}`),
    })
    .configureHelp({ showGlobalOptions: true })
    .showHelpAfterError("(run with --help for usage and an example)");
  addGlobalOptions(program);
  // Settings above are copied into each command as it is created, so they come first.
  for (const register of COMMANDS) register(program, runtime);
  withExamples(
    program,
    [
      "shardledger migrate",
      "shardledger dataset create events --root file:///data/events",
      "RUN=$(shardledger run start events --shards 2 --json | jq -r .runId)",
      'shardledger attempt succeed "$RUN" --shard 0 --attempt 0 --url "file:///data/events/data/$RUN/shard=00000/attempt=00"',
      'shardledger attempt succeed "$RUN" --shard 1 --attempt 0 --url "file:///data/events/data/$RUN/shard=00001/attempt=00"',
      'shardledger publish "$RUN"',
    ],
    ROOT_NOTES,
  );
  return program;
}

/**
 * Runs the `shardledger` CLI with the given arguments and resolves to the process exit code
 * (0 done, 1 unexpected, 2 usage, 3 refused, 4 pending; see `shardledger --help`). `io` replaces
 * the process's streams, environment, working directory and signals (tests).
 *
 * @example
 * ```ts
 * process.exitCode = await runCli(process.argv.slice(2))
 * ```
 */
export async function runCli(argv: readonly string[], io: Partial<CliIo> = {}): Promise<number> {
  const runtime = new CliRuntime(resolveIo(io));
  const program = createProgram(runtime);
  try {
    await program.parseAsync([...argv], { from: "user" });
    return runtime.exitCode;
  } catch (e) {
    // Commander's usage errors come before any action, so --json is read from argv itself.
    return runtime.reportError(e, { json: wantsJson(argv) });
  }
}

function packageVersion(): string {
  try {
    // src/cli/program.ts and dist/cli/program.js both sit two levels below package.json.
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
      version?: string;
    };
    return pkg.version ?? "0.0.0";
  } catch {
    return "0.0.0";
  }
}
