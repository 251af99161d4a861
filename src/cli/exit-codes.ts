import { CommanderError } from "commander";
import { exitCodeFor, ShardledgerError } from "../errors.js";

/**
 * The exit codes of the contract (SPEC "Interfaces"), plus the conventional 128+n for a run
 * stopped by a signal.
 *
 * @example
 * ```ts
 * return { json, human, exitCode: EXIT.PENDING }
 * ```
 */
export const EXIT = {
  /** Done. */
  OK: 0,
  /** An unexpected error (a bug, an unreachable database, an object store that failed). */
  UNEXPECTED: 1,
  /** Bad usage or invalid input; the message names the flag or field. Nothing was written. */
  USAGE: 2,
  /** Refused by a rule: coverage error, concurrency conflict, safety rail, illegal transition. */
  REFUSED: 3,
  /** Done, but items were left pending (for example cleanup that could not delete everything). */
  PENDING: 4,
  /** Stopped by SIGINT (128 + 2). */
  SIGINT: 130,
  /** Stopped by SIGTERM (128 + 15). */
  SIGTERM: 143,
} as const;

/**
 * One of {@link EXIT}'s values.
 *
 * @example `const code: ExitCode = EXIT.PENDING`
 */
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/**
 * The command was stopped by a signal before it finished; the ledger was closed. Code
 * `INTERRUPTED`; the exit code is 128 + the signal's number.
 *
 * @example
 * ```ts
 * throw new InterruptedError("SIGTERM")
 * ```
 */
export class InterruptedError extends ShardledgerError {
  readonly signal: NodeJS.Signals;
  constructor(signal: NodeJS.Signals) {
    super("INTERRUPTED", `interrupted by ${signal}; the ledger was closed cleanly`, { details: { signal } });
    this.signal = signal;
  }

  get exitCode(): ExitCode {
    return this.signal === "SIGTERM" ? EXIT.SIGTERM : EXIT.SIGINT;
  }
}

/**
 * The exit code for anything a command threw: commander's usage errors are 2 (help and
 * `--version` are 0), an interruption is 130/143, and shardledger errors follow
 * {@link exitCodeFor}, which reads the code's row of `ERROR_CODES` (2 invalid input or not
 * found, 3 refused by a rule, 1 anything else).
 *
 * @example
 * ```ts
 * cliExitCode(new ShardCoverageError("r1", [3])) // 3
 * ```
 */
export function cliExitCode(e: unknown): number {
  if (e instanceof InterruptedError) return e.exitCode;
  // Help and --version end with exit code 0 (`help run` as well as `run --help`); every other
  // commander error (unknown option, missing argument, a group without its subcommand) is usage.
  if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
  return exitCodeFor(e);
}
