import type { Command } from "commander";
import { CommanderError } from "commander";
import { errorBody, isShardledgerError } from "../errors.js";
import type { Ledger } from "../ledger/open-ledger.js";
import { cliError, type Invocation } from "./cli-errors.js";
import type { CliIo } from "./cli-io.js";
import { cliExitCode, EXIT, type ExitCode, InterruptedError } from "./exit-codes.js";
import { type GlobalOptions, resolveGlobalOptions } from "./global-options.js";
import { toJsonDocument, toJsonLine } from "./json-output.js";
import { describeError, type LedgerSession, openLedgerSession } from "./ledger-session.js";
import { createProgress, type Progress, type ProgressOptions } from "./progress.js";
import { createStyle, type Style } from "./style.js";

/**
 * What a command returns: the contract's JSON document and its human rendering. The runtime
 * prints exactly one of them on stdout, after the ledger is closed.
 *
 * @example
 * ```ts
 * return { json: run, human: (style) => renderRun(style, run) }
 * ```
 */
interface CommandOutcome {
  /** What `--json` prints, and nothing else. */
  json: unknown;
  /** What a person reads (tables, colour through `style`). */
  human(style: Style): string;
  /** `EXIT.REFUSED` or `EXIT.PENDING` when the work was done but the answer is not "all good". */
  exitCode?: ExitCode;
  /** Printed on stderr after the output, to say why the exit code is not 0. */
  message?: string;
}

/**
 * What a command's handler gets: the resolved global options, the io, colours, and the ledger,
 * opened on first use (after the handler validated its input, so bad input never opens, let alone
 * writes to, the database).
 *
 * @example `const ledger = await ctx.ledger(); ctx.warn("2 items left pending")`
 */
interface CommandContext {
  readonly globals: GlobalOptions;
  readonly io: CliIo;
  readonly style: Style;
  /** Aborted on the first SIGINT/SIGTERM; long-running commands stop at their next safe point. */
  readonly signal: AbortSignal;
  /**
   * The ledger. `migrating: true` (only `migrate`) skips the check that the schema is migrated;
   * `poolSize` widens the connection pool of a server database (default 4; `serve` asks for more);
   * `database` opens another than `--database` (`demo --serve`: the demo's own, in its home).
   * Throws {@link InterruptedError} if a signal arrived meanwhile.
   */
  ledger(options?: { migrating?: boolean; poolSize?: number; database?: string }): Promise<Ledger>;
  /** Throws {@link InterruptedError} once a signal has arrived. Call it between steps. */
  throwIfInterrupted(): void;
  /** A progress bar on stderr (only on a terminal, never in `--json`). */
  progress(options: ProgressOptions): Progress;
  /** A message on stderr (never on stdout, so `--json` output stays one document). */
  warn(message: string): void;
  /** For commands that stream (`maintain`): one JSON line per item in `--json`, else `human`. */
  emit(json: unknown, human: (style: Style) => string): void;
}

/**
 * A command's handler: `args` are its positional arguments, `options` its own flags.
 *
 * @example
 * ```ts
 * const handler: CommandHandler<{ dryRun?: boolean }> = async (ctx, [datasetId], options) => { … }
 * ```
 */
export type CommandHandler<O> = (
  ctx: CommandContext,
  args: readonly string[],
  options: O,
) => Promise<CommandOutcome | undefined>;

/** How long a forced stop (second signal) waits for the ledger to close before exiting. */
const FORCED_CLOSE_MS = 3_000;

/**
 * Runs command handlers for one CLI invocation: resolves global options, opens and closes the
 * ledger, prints the outcome, maps errors to exit codes, and handles SIGINT/SIGTERM (the first
 * signal stops after the current step and closes the ledger; a second one exits at once).
 *
 * @example
 * ```ts
 * program.command("publish <runId>").action(runtime.action(publishHandler))
 * ```
 */
export class CliRuntime {
  readonly io: CliIo;
  #exitCode: number = EXIT.OK;
  /** An error body is on stdout already (a forced exit wrote it); never print a second one. */
  #errorPrinted = false;

  constructor(io: CliIo) {
    this.io = io;
  }

  /** The exit code of the last action that ran. */
  get exitCode(): number {
    return this.#exitCode;
  }

  /** Adapts a handler to commander's `.action()`. */
  action<O>(handler: CommandHandler<O>): (...raw: unknown[]) => Promise<void> {
    return async (...raw: unknown[]) => {
      const command = raw.at(-1) as Command;
      const options = raw.at(-2) as O;
      const args = raw.slice(0, -2).flat() as string[];
      this.#exitCode = await this.#execute(handler, command, args, options);
    };
  }

  /**
   * Prints an error on stderr (commander already printed its own) and returns its exit code. With
   * `json`, stdout gets exactly one JSON error body (`errorBody`), as one line when the command
   * was streaming JSON lines; help and `--version` are no failure and print none.
   */
  reportError(
    e: unknown,
    context: { json?: boolean; invocation?: Invocation; streaming?: boolean } = {},
  ): number {
    const code = cliExitCode(e);
    if (context.json && code !== EXIT.OK && !this.#errorPrinted) {
      const body = errorBody(cliError(e, context.invocation));
      this.io.stdout.write(context.streaming ? toJsonLine(body) : toJsonDocument(body));
      this.#errorPrinted = true;
    }
    if (e instanceof CommanderError) return code;
    const debug = this.io.env.SHARDLEDGER_DEBUG !== undefined && this.io.env.SHARDLEDGER_DEBUG !== "";
    if (code === EXIT.UNEXPECTED && !isShardledgerError(e)) {
      this.io.stderr.write(`shardledger: unexpected error: ${describeError(e)}\n`);
    } else {
      this.io.stderr.write(`shardledger: ${describeError(e)}\n`);
    }
    if (code === EXIT.UNEXPECTED) {
      const cause = e instanceof Error ? e.cause : undefined;
      if (cause !== undefined && !(e instanceof Error && e.message.includes(describeError(cause)))) {
        this.io.stderr.write(`  caused by: ${describeError(cause)}\n`);
      }
      if (debug && e instanceof Error && e.stack) this.io.stderr.write(`${e.stack}\n`);
      // A stack trace helps with a bug, not with a store or an archive that failed: their
      // messages say what to do.
      else if (!isShardledgerError(e) || e.code === "INTERNAL")
        this.io.stderr.write("  (set SHARDLEDGER_DEBUG=1 to see the stack trace)\n");
    }
    return code;
  }

  async #execute<O>(
    handler: CommandHandler<O>,
    command: Command,
    args: string[],
    options: O,
  ): Promise<number> {
    const io = this.io;
    const raw = command.optsWithGlobals();
    const invocation: Invocation = { command, args, options };
    let globals: GlobalOptions;
    try {
      globals = await resolveGlobalOptions(raw, io);
    } catch (e) {
      return this.reportError(e, { json: raw.json === true, invocation });
    }
    let streaming = false;
    const style = createStyle(io, { color: globals.color });
    const controller = new AbortController();
    let session: Promise<LedgerSession> | undefined;
    let closing: Promise<void> | undefined;
    const close = () => {
      closing ??= (async () => {
        if (!session) return;
        const opened = await session.catch(() => undefined);
        await opened?.close();
      })();
      return closing;
    };
    const interrupted = () => {
      if (controller.signal.aborted) throw controller.signal.reason;
    };

    const onSignal = (signal: NodeJS.Signals) => {
      const exitCode = new InterruptedError(signal).exitCode;
      if (controller.signal.aborted) {
        io.stderr.write(`shardledger: ${signal} again; exiting now\n`);
        // The command never gets to report: this is the invocation's one error body.
        if (globals.json && !this.#errorPrinted) {
          const body = errorBody(cliError(new InterruptedError(signal)));
          io.stdout.write(streaming ? toJsonLine(body) : toJsonDocument(body));
          this.#errorPrinted = true;
        }
        const timer = setTimeout(() => io.exit(exitCode), FORCED_CLOSE_MS);
        timer.unref?.();
        void close()
          .catch(() => {})
          .finally(() => {
            clearTimeout(timer);
            io.exit(exitCode);
          });
        return;
      }
      io.stderr.write(
        `shardledger: ${signal} received; stopping after the current step and closing the ledger (send it again to exit at once)\n`,
      );
      controller.abort(new InterruptedError(signal));
    };
    io.signals.on("SIGINT", onSignal);
    io.signals.on("SIGTERM", onSignal);

    const ctx: CommandContext = {
      globals,
      io,
      style,
      signal: controller.signal,
      async ledger(opts = {}) {
        interrupted();
        session ??= openLedgerSession(
          opts.database === undefined ? globals : { ...globals, database: opts.database },
          {
            cwd: io.cwd,
            migrating: opts.migrating === true,
            ...(opts.poolSize !== undefined ? { poolSize: opts.poolSize } : {}),
            warn: ctx.warn,
          },
        );
        const { ledger } = await session;
        interrupted();
        return ledger;
      },
      throwIfInterrupted: interrupted,
      progress: (opts) => createProgress(io.stderr, !globals.json, opts),
      warn: (message) => {
        io.stderr.write(`shardledger: ${message}\n`);
      },
      emit(json, human) {
        streaming = true;
        io.stdout.write(globals.json ? toJsonLine(json) : ensureNewline(human(style)));
      },
    };

    let outcome: CommandOutcome | undefined;
    let failure: { error: unknown } | undefined;
    try {
      outcome = await handler(ctx, args, options);
    } catch (e) {
      failure = { error: e };
    }
    try {
      // Close before printing: what is printed has been committed and the database released.
      await close();
    } catch (e) {
      failure ??= { error: e };
    } finally {
      io.signals.off("SIGINT", onSignal);
      io.signals.off("SIGTERM", onSignal);
    }
    if (failure) return this.reportError(failure.error, { json: globals.json, invocation, streaming });
    if (!outcome) return EXIT.OK;
    io.stdout.write(globals.json ? toJsonDocument(outcome.json) : ensureNewline(outcome.human(style)));
    if (outcome.message !== undefined) io.stderr.write(`shardledger: ${outcome.message}\n`);
    return outcome.exitCode ?? EXIT.OK;
  }
}

function ensureNewline(text: string): string {
  return text.endsWith("\n") || text.length === 0 ? text : `${text}\n`;
}

/**
 * How a command file plugs into the program: it adds its command(s) to `program` and wires the
 * actions through `runtime`. Adding a command is one file exporting one of these and one entry
 * in `COMMANDS` (src/cli/program.ts).
 *
 * @example
 * ```ts
 * export const registerPublish: RegisterCommand = (program, runtime) => {
 *   program.command("publish").argument("<runId>").action(runtime.action(publish))
 * }
 * ```
 */
export type RegisterCommand = (program: Command, runtime: CliRuntime) => void;
