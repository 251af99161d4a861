/**
 * Everything the CLI touches outside its arguments: output streams, environment, working
 * directory, signals and the forced exit. `runCli` takes it so tests can inject their own.
 */

/**
 * A writable text stream; `isTTY` and `columns` decide colour, tables and progress bars.
 *
 * @example `const out: CliStream = { write: (s: string) => chunks.push(s), isTTY: false }`
 */
export interface CliStream {
  write(chunk: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

/**
 * Where SIGINT and SIGTERM come from (the process, or an EventEmitter in tests).
 *
 * @example `const signals: SignalSource = new EventEmitter() as never`
 */
interface SignalSource {
  on(signal: "SIGINT" | "SIGTERM", listener: (signal: NodeJS.Signals) => void): unknown;
  off(signal: "SIGINT" | "SIGTERM", listener: (signal: NodeJS.Signals) => void): unknown;
}

/**
 * The CLI's view of its process.
 *
 * @example
 * ```ts
 * const io: Partial<CliIo> = { stdout: { write: (s: string) => out.push(s) }, env: {} }
 * await runCli(["--json", "migrate"], io)
 * ```
 */
export interface CliIo {
  stdout: CliStream;
  stderr: CliStream;
  env: Readonly<Record<string, string | undefined>>;
  /** Relative `pglite:` directories are resolved against it. */
  cwd: string;
  signals: SignalSource;
  /** Called only on a second SIGINT/SIGTERM, when the user insists on stopping at once. */
  exit(code: number): void;
}

/**
 * The real process's io, with any part replaced.
 *
 * @example
 * ```ts
 * const io = resolveIo({ env: { SHARDLEDGER_DATABASE_URL: "pglite:memory" } })
 * ```
 */
export function resolveIo(overrides: Partial<CliIo> = {}): CliIo {
  return {
    stdout: overrides.stdout ?? process.stdout,
    stderr: overrides.stderr ?? process.stderr,
    env: overrides.env ?? process.env,
    cwd: overrides.cwd ?? process.cwd(),
    signals: overrides.signals ?? process,
    exit: overrides.exit ?? ((code) => process.exit(code)),
  };
}
