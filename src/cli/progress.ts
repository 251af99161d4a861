import { createRequire } from "node:module";
import type cliProgressModule from "cli-progress";
import type { CliStream } from "./cli-io.js";

/**
 * Progress of long work (audit, cleanup, gc, demo). A bar on a terminal; silent in `--json` and
 * when stderr is not a terminal, so pipes and logs stay clean.
 *
 * @example
 * ```ts
 * const progress = ctx.progress({ label: "audit", unit: "events" })
 * await ledger.audit({ onProgress: (n) => progress.update(n) })
 * progress.stop()
 * ```
 */
export interface Progress {
  /** Whether anything is drawn (false in `--json` or off a terminal). */
  readonly visible: boolean;
  /** Sets the count done; `total` may be given or changed at any time. */
  update(done: number, total?: number): void;
  /** Adds to the count done. */
  increment(by?: number): void;
  /** Removes the bar; safe to call more than once. */
  stop(): void;
}

/**
 * Options of {@link createProgress}.
 *
 * @example `ctx.progress({ label: "cleanup events", total: urls.length, unit: "prefixes" })`
 */
export interface ProgressOptions {
  /** What is being done, printed before the bar (`audit`, `cleanup my-dataset`). */
  label: string;
  /** The total when known up front; without it a running count is shown. */
  total?: number;
  /** What is counted (`events`, `objects`). */
  unit?: string;
}

// Required only when a bar is actually drawn (a terminal, not --json), not at every start-up.
const loadCliProgress = (): typeof cliProgressModule =>
  createRequire(import.meta.url)("cli-progress") as typeof cliProgressModule;

const SILENT: Progress = { visible: false, update() {}, increment() {}, stop() {} };

/**
 * A {@link Progress} drawn on `stream` when `enabled` and `stream` is a terminal.
 *
 * @example
 * ```ts
 * const p = createProgress(process.stderr, !json, { label: "gc", total: actions.length, unit: "actions" })
 * ```
 */
export function createProgress(stream: CliStream, enabled: boolean, options: ProgressOptions): Progress {
  if (!enabled || stream.isTTY !== true) return SILENT;
  const unit = options.unit ?? "items";
  let total = options.total;
  let done = 0;
  const cliProgress = loadCliProgress();
  const bar = new cliProgress.SingleBar(
    {
      stream: stream as NodeJS.WriteStream,
      format:
        total === undefined
          ? `${options.label} {value} ${unit} | {duration_formatted}`
          : `${options.label} [{bar}] {value}/{total} ${unit} | {duration_formatted}`,
      hideCursor: true,
      clearOnComplete: true,
      barsize: 30,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total ?? 0, 0);
  let stopped = false;
  return {
    visible: true,
    update(value, newTotal) {
      if (stopped) return;
      done = value;
      if (newTotal !== undefined && newTotal !== total) {
        total = newTotal;
        bar.setTotal(newTotal);
      }
      bar.update(done);
    },
    increment(by = 1) {
      this.update(done + by);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      bar.stop();
    },
  };
}
