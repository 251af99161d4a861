import type { RunCommand } from "../machines/run-commands.js";
import { forEachBounded } from "../maintenance/bounded-pool.js";
import { FENCED_BY_STORE, fenceStore } from "../maintenance/fenced-store.js";
import { deletePrefix, type PrefixCleanupResult } from "../maintenance/prefix-deleter.js";
import { isExhausted, nextRetryAt, type RetryPolicy } from "../maintenance/retry-policy.js";
import type { ObjectInfo, ObjectStore } from "../storage/object-store.js";
import { objectSpare, prefixShape, type WorkItem } from "./cleanup-item.js";

/** One deletion a pass may make (see {@link WorkItem}). */
export type CleanupWork = WorkItem;

/** What became of one item; `newlyPlanned` when this pass appended its CleanupPlanned. */
export interface CleanupItemResult {
  url: string;
  deleted: boolean;
  error: string | null;
  tries: number;
  refused?: string;
  newlyPlanned: boolean;
}

/** What the engine needs from its pass: the guard, the fenced appends, the lease check, the store. */
export interface ConcurrentCleanupDeps {
  store: ObjectStore;
  /** The item's root-relative key, or why it has none. */
  keyOf(item: CleanupWork): { key: string } | { refused: string };
  /** Whether the item is one object (deleted by its exact key) rather than a prefix. */
  isObject(item: CleanupWork, key: string): boolean;
  /** What a prefix deletion of the item must leave alone (see youngObjects in cleanup-item.ts). */
  spare(item: CleanupWork): ((object: ObjectInfo) => boolean) | undefined;
  /** Why each item must not be deleted now (fresh state, read once for the batch), or null. */
  refusals(items: readonly CleanupWork[]): Promise<(string | null)[]>;
  /** Appends the commands of one run in one fenced append. */
  executeMany(runId: string, commands: readonly RunCommand[]): Promise<void>;
  /**
   * The fencing check (a coalesced one: many requests share a check that started after they
   * asked). Every store request is sent in the reaction to its success, after the request's wait
   * for the rate limiter (see fenced-store.ts).
   */
  assertHeld(): Promise<void>;
  /** Deletes one object, unless `spare` keeps it as it is now, and verifies it is gone. */
  deleteObject(
    store: ObjectStore,
    key: string,
    authorise: () => Promise<void>,
    spare?: (object: ObjectInfo) => boolean,
  ): Promise<PrefixCleanupResult>;
  policies: { deletion: RetryPolicy; pending: RetryPolicy };
  clock(): Date;
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
  signal?: AbortSignal;
  log?: (record: { level: "info" | "warn" | "error"; msg: string; [field: string]: unknown }) => void;
}

/**
 * Deletes many items with `concurrency` of them in flight, keeping every rule of the sequential
 * pass:
 * - planned before deleted: items go in batches of `batchSize`; a batch is judged by the guard on
 *   fresh state and its CleanupPlanned events are appended (one fenced append per run) BEFORE any
 *   of its items is handed to a worker. The next batch is judged and planned while the workers
 *   delete this one (pipelined), so the pool never waits for planning.
 * - per-item outcomes: each item's CleanupSucceeded / StaleAttemptCollected / CleanupFailed is its
 *   own event; they are appended in batches (one append per run per flush). A crash between a
 *   deletion and the flush leaves the item planned, and the next pass resumes it exactly (deleting
 *   an emptied prefix again is success with nothing to delete).
 * - strict fencing: every store request waits for its pool slot and its rate-limiter token
 *   first, then for a fencing check that started after it asked, and is sent in the reaction to
 *   that check's success (`fenceStore`), so no request is issued after the pass observed a
 *   revocation, however many are in flight or queued; transient failures follow the retry
 *   policy, permanent ones are never retried.
 *
 * Results come back in the order of `items`; null for an item the pass never reached (aborted).
 *
 * @example
 * ```ts
 * const results = await cleanConcurrently(items, deps, { concurrency: 16, batchSize: 64 })
 * ```
 */
export async function cleanConcurrently(
  items: readonly CleanupWork[],
  deps: ConcurrentCleanupDeps,
  options: { concurrency: number; batchSize: number },
): Promise<(CleanupItemResult | null)[]> {
  const results: (CleanupItemResult | undefined)[] = new Array(items.length);
  const recorder = new OutcomeRecorder(deps.executeMany, options.batchSize);
  const indexed = items.map((item, index) => ({ item, index }));
  const batches: (typeof indexed)[] = [];
  for (let i = 0; i < indexed.length; i += options.batchSize) {
    batches.push(indexed.slice(i, i + options.batchSize));
  }

  const refuse = async (entry: { item: CleanupWork; index: number }, reason: string) => {
    const { item } = entry;
    const tries = item.priorTries + 1;
    if (item.reason === "loser") {
      await recorder.add(
        item.runId,
        failedCommand(
          item,
          tries,
          { code: "Protected", message: `not deleted: ${reason}`, transient: true },
          deps,
        ),
      );
    }
    deps.log?.({ level: "warn", msg: "deletion refused", runId: item.runId, url: item.url, refused: reason });
    results[entry.index] = {
      url: item.url,
      deleted: false,
      error: `Protected: ${reason}`,
      tries,
      refused: reason,
      newlyPlanned: false,
    };
  };

  /** Judges a batch on fresh state and plans what may go; resolves to what workers may delete. */
  const plan = async (batch: typeof indexed) => {
    const judged: { item: CleanupWork; index: number; key: string }[] = [];
    for (const entry of batch) {
      const k = deps.keyOf(entry.item);
      if ("refused" in k) await refuse(entry, k.refused);
      else judged.push({ ...entry, key: k.key });
    }
    const reasons = await deps.refusals(judged.map((j) => j.item));
    const go: typeof judged = [];
    for (const [i, j] of judged.entries()) {
      const reason = reasons[i] ?? null;
      if (reason !== null) await refuse(j, reason);
      else go.push(j);
    }
    const byRun = new Map<string, RunCommand[]>();
    for (const { item } of go) {
      if (item.planned) continue;
      const list = byRun.get(item.runId) ?? [];
      list.push({ type: "planCleanup", runId: item.runId, url: item.url, reason: item.reason });
      byRun.set(item.runId, list);
    }
    for (const [runId, commands] of byRun) await deps.executeMany(runId, commands);
    return go;
  };

  async function* planned() {
    let next: Promise<Awaited<ReturnType<typeof plan>>> | null = batches[0] ? plan(batches[0]) : null;
    try {
      for (let b = 0; next !== null; b++) {
        const ready: Awaited<ReturnType<typeof plan>> = await next;
        const following = batches[b + 1];
        next = following && !deps.signal?.aborted ? plan(following) : null;
        // Awaited on the next turn of the loop (or in finally): never an unhandled rejection.
        next?.catch(() => {});
        for (const r of ready) {
          if (deps.signal?.aborted) return;
          yield r;
        }
      }
    } finally {
      if (next !== null) await next.catch(() => {});
    }
  }

  // The fence sits under the limiter of a rate-limited store: slot, token, check, request.
  const store = fenceStore(deps.store, deps.assertHeld);
  await forEachBounded(planned(), options.concurrency, async ({ item, index, key }) => {
    const result = deps.isObject(item, key)
      ? await deps.deleteObject(store, key, FENCED_BY_STORE, objectSpare(item.reason, deps.spare(item)))
      : await deletePrefix(store, `${key}/`, {
          policy: deps.policies.deletion,
          // Shaped as in the sequential pass.
          ...prefixShape(item.runId, key, deps.spare(item)),
          ...(deps.sleep ? { sleep: deps.sleep } : {}),
          ...(deps.random ? { random: deps.random } : {}),
          ...(deps.signal ? { signal: deps.signal } : {}),
        });
    const tries = item.priorTries + Math.max(1, result.tries);
    if (result.status === "deleted") {
      await recorder.add(
        item.runId,
        item.reason === "stale"
          ? { type: "recordStaleCollected", runId: item.runId, url: item.url }
          : {
              type: "recordCleanupSucceeded",
              runId: item.runId,
              url: item.url,
              deletedObjects: result.deletedObjects,
            },
      );
      results[index] = { url: item.url, deleted: true, error: null, tries, newlyPlanned: !item.planned };
      return;
    }
    const error = result.error ?? { code: "Unknown", message: "deletion did not complete", transient: true };
    const command = failedCommand(item, tries, error, deps);
    await recorder.add(item.runId, command);
    deps.log?.({
      level: "warn",
      msg: "cleanup failed",
      runId: item.runId,
      url: item.url,
      code: error.code,
      tries,
      exhausted: command.type === "recordCleanupFailed" && command.exhausted,
    });
    results[index] = {
      url: item.url,
      deleted: false,
      error: `${error.code}: ${error.message}`,
      tries,
      newlyPlanned: !item.planned,
    };
  });
  await recorder.flush();
  // An item never handed to a worker (the signal fired first) stays as it was: null.
  return results.map((r) => r ?? null);
}

/** The CleanupFailed command of an item, with its next retry or exhausted (as the sequential pass). */
function failedCommand(
  item: CleanupWork,
  tries: number,
  error: { code: string; message: string; transient: boolean },
  deps: Pick<ConcurrentCleanupDeps, "policies" | "clock" | "random">,
): RunCommand {
  const exhausted = !error.transient || isExhausted(deps.policies.pending, tries);
  return {
    type: "recordCleanupFailed",
    runId: item.runId,
    url: item.url,
    errorCode: error.code,
    errorMessage: error.message.slice(0, 8000),
    transient: error.transient,
    tries,
    exhausted,
    nextRetryAt: exhausted ? null : nextRetryAt(deps.policies.pending, tries, deps.clock(), deps.random),
  };
}

/**
 * Buffers outcome commands and appends them per run, `batchSize` at a time, one flush after
 * another (appends to one run stream are serial anyway). Only the worker whose outcome filled the
 * buffer waits for the flush; the others go on deleting. A failed flush (a lost lease) fails the
 * `add` that triggered it and every later one.
 */
class OutcomeRecorder {
  #buffer: { runId: string; command: RunCommand }[] = [];
  #chain: Promise<void> = Promise.resolve();
  #failure: { error: unknown } | null = null;

  constructor(
    readonly append: (runId: string, commands: readonly RunCommand[]) => Promise<void>,
    readonly batchSize: number,
  ) {}

  /** Buffers; when the buffer is full, flushes and resolves once that flush is appended. */
  add(runId: string, command: RunCommand): Promise<void> {
    if (this.#failure !== null) return Promise.reject(this.#failure.error);
    this.#buffer.push({ runId, command });
    return this.#buffer.length >= this.batchSize ? this.flush() : Promise.resolve();
  }

  flush(): Promise<void> {
    const taken = this.#buffer;
    this.#buffer = [];
    this.#chain = this.#chain.then(async () => {
      const byRun = new Map<string, RunCommand[]>();
      for (const { runId, command } of taken) {
        const list = byRun.get(runId) ?? [];
        list.push(command);
        byRun.set(runId, list);
      }
      for (const [runId, commands] of byRun) await this.append(runId, commands);
    });
    this.#chain.catch((error: unknown) => {
      this.#failure ??= { error };
    });
    return this.#chain;
  }
}
