import { isShardledgerError } from "../errors.js";
import type { Ledger } from "./open-ledger.js";

/**
 * One line of `maintain --json`: what one pass over one dataset did.
 *
 * @example
 * ```ts
 * const log = (pass: MaintainPass) => {
 *   if (pass.error !== null) console.error(pass.datasetId, pass.error)
 *   else if (!pass.skipped) console.log(pass.datasetId, pass.cleanup?.deleted ?? 0, "deleted")
 * }
 * ```
 */
export interface MaintainPass {
  datasetId: string;
  startedAt: string;
  finishedAt: string;
  /** Another worker held the dataset's maintenance lock: this pass did nothing. */
  skipped: boolean;
  cleanup: { deleted: number; failed: number; planned: number } | null;
  gc: { actions: number; failed: number } | null;
  /** The archive step after gc: runs moved out of the hot log, and runs that failed to. */
  archive: { archived: number; failed: number } | null;
  error: string | null;
}

/**
 * The long-running worker behind `maintain`: every `everyMs`, for each dataset (or one), a cleanup
 * pass, a gc pass, then an archive pass (runs pruned longer than the ledger's `archiveAfter` ago). Workers on many machines can run side by side: each dataset's maintenance
 * lock lets one pass at a time through and the others report `skipped`. When `signal` aborts, the
 * current batch finishes, no new pass starts, and the promise resolves.
 *
 * @example
 * ```ts
 * const stop = new AbortController()
 * process.once("SIGTERM", () => stop.abort())
 * await maintainLoop(ledger, { everyMs: 60_000, signal: stop.signal, onPass: (p) => console.log(JSON.stringify(p)) })
 * ```
 */
export async function maintainLoop(
  ledger: Ledger,
  options: {
    everyMs: number;
    datasetId?: string;
    signal?: AbortSignal;
    onPass?: (pass: MaintainPass) => void;
    clock?: () => Date;
  },
): Promise<void> {
  const clock = options.clock ?? (() => new Date());
  while (!options.signal?.aborted) {
    const datasets = options.datasetId
      ? [options.datasetId]
      : (await ledger.datasets()).map((d) => d.datasetId);
    for (const datasetId of datasets) {
      if (options.signal?.aborted) break;
      options.onPass?.(await onePass(ledger, datasetId, clock, options.signal));
    }
    await sleep(options.everyMs, options.signal);
  }
}

async function onePass(
  ledger: Ledger,
  datasetId: string,
  clock: () => Date,
  signal?: AbortSignal,
): Promise<MaintainPass> {
  const startedAt = clock().toISOString();
  const pass: MaintainPass = {
    datasetId,
    startedAt,
    finishedAt: startedAt,
    skipped: false,
    cleanup: null,
    gc: null,
    archive: null,
    error: null,
  };
  try {
    const cleanup = await ledger.cleanup({ datasetId, ...(signal ? { signal } : {}) });
    if (cleanup.skipped.includes(datasetId)) {
      pass.skipped = true;
    } else {
      pass.cleanup = {
        deleted: cleanup.deleted.length,
        failed: cleanup.failed.length,
        planned: cleanup.planned.length,
      };
      const gc = await ledger.gc(datasetId, signal ? { signal } : {});
      pass.gc = { actions: gc.actions.length, failed: gc.failed.length };
      if (!signal?.aborted) {
        const archived = await ledger.archive({ datasetId, ...(signal ? { signal } : {}) });
        pass.archive = { archived: archived.archived.length, failed: archived.failed.length };
      }
    }
  } catch (e) {
    if (isShardledgerError(e) && e.code === "LOCKED") pass.skipped = true;
    else pass.error = e instanceof Error ? e.message : String(e);
  }
  pass.finishedAt = clock().toISOString();
  return pass;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
