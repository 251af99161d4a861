/**
 * An ObjectStore wrapper for the safety property: every call goes through a controller that may
 * hold it at a gate (to interleave two operations), fail it (transient or permanent, whole request
 * or per key), or crash it (the ledger instance behind it is then abandoned). The real store still
 * does everything that is not failed. It sees only the public ObjectStore interface.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import type { DeleteOutcome, ObjectStore, ObjectStoreFailure } from "../../src/index.js";

/** One call the ledger makes on a store: the operation, the root and the key (or keys). */
export interface StoreCall {
  op: "list" | "get" | "put" | "deleteMany";
  rootUrl: string;
  /** The key, the listing prefix, or the first of the keys. */
  key: string;
  keys: readonly string[];
}

/** What the controller wants done with a call. */
export type FaultAction =
  | { kind: "pass" }
  /** Throw instead of calling the store (`after`: call it first, then throw, e.g. a crash). */
  | { kind: "throw"; error: Error; after?: boolean }
  /** deleteMany only: these keys fail inside a successful response; the others are deleted. */
  | { kind: "perKey"; failures: ObjectStoreFailure[] };

/**
 * Decides the fate of each call. `beforeCall` may wait (a gate); `beforeDelete` runs right before
 * the real deleteMany with the keys that will really be sent (to check each deletion as it
 * happens).
 */
export interface StoreController {
  beforeCall(call: StoreCall): Promise<FaultAction>;
  beforeDelete?(rootUrl: string, keys: readonly string[]): Promise<void>;
}

/**
 * Wraps `inner` so that every call first asks `controller`.
 *
 * @example
 * ```ts
 * const store = createFaultyStore(openObjectStore(root), { beforeCall: async () => ({ kind: "pass" }) })
 * ```
 */
export function createFaultyStore(inner: ObjectStore, controller: StoreController): ObjectStore {
  const ask = (op: StoreCall["op"], key: string, keys: readonly string[] = [key]) =>
    controller.beforeCall({ op, rootUrl: inner.rootUrl, key, keys });
  async function apply<T>(action: FaultAction, call: () => Promise<T>): Promise<T> {
    if (action.kind === "throw") {
      if (action.after) await call();
      throw action.error;
    }
    return call();
  }
  return {
    rootUrl: inner.rootUrl,
    async list(prefix, options) {
      return apply(await ask("list", prefix), () => inner.list(prefix, options));
    },
    async get(key) {
      return apply(await ask("get", key), () => inner.get(key));
    },
    async put(key, body, options) {
      return apply(await ask("put", key), () => inner.put(key, body, options));
    },
    async deleteMany(keys) {
      const action = await ask("deleteMany", keys[0] ?? "", keys);
      if (action.kind === "perKey") {
        const failing = new Set(action.failures.map((f) => f.key));
        const rest = keys.filter((k) => !failing.has(k));
        if (rest.length > 0) await controller.beforeDelete?.(inner.rootUrl, rest);
        const outcome: DeleteOutcome =
          rest.length > 0 ? await inner.deleteMany(rest) : { deleted: [], errors: [] };
        return { deleted: outcome.deleted, errors: [...outcome.errors, ...action.failures] };
      }
      if (action.kind === "pass" || action.after) await controller.beforeDelete?.(inner.rootUrl, keys);
      return apply(action, () => inner.deleteMany(keys));
    },
    async close() {
      await inner.close?.();
    },
  };
}

/**
 * The operation a store call belongs to, carried through every await of that operation
 * (AsyncLocalStorage), so one store shared by two concurrent operations knows whose call it is.
 */
export interface OpContext {
  /** Index of the operation within its step (0 for a step with one operation). */
  op: number;
  label: string;
  /** Set while the step interleaves several operations. */
  interleaver?: Interleaver;
  /** Store calls this operation made so far (crash points count them). */
  calls: number;
  /** Anything the harness wants to attach (its fault plan). */
  data: unknown;
}

const context = new AsyncLocalStorage<OpContext>();

/** The operation of the calling async context, if any. */
export const currentOp = (): OpContext | undefined => context.getStore();

/** Runs `fn` as operation `ctx` (its store calls see `ctx` through {@link currentOp}). */
export function runAsOp<T>(ctx: OpContext, fn: () => Promise<T>): Promise<T> {
  return context.run(ctx, fn);
}

/**
 * A deterministic scheduler for a few concurrent operations. Every operation stops at a gate
 * before it starts and before each store call; only when every live operation is parked at a gate
 * (or has finished) does the scheduler release one, chosen by the next number of `choices`
 * (modulo how many wait; 0 when the list is exhausted). So exactly one operation runs at a time
 * between gates and the interleaving is a function of `choices`, which fast-check generates and
 * shrinks, and not of database latency.
 *
 * fast-check's own `fc.scheduler()` releases whatever is scheduled at the moment it is asked,
 * while the other operation may still be inside a database call; that would make the interleaving
 * depend on timing and counterexamples irreproducible. An operation that blocks on a lock rather
 * than at a gate (a second publish of the dataset waits for the first's lock) would stall this
 * scheduler, so after `stallMs` without any progress it releases a parked operation anyway.
 *
 * An operation may park several calls at once (cleanup with `--concurrency 16`): each waits in its
 * operation's queue and is released in a turn of its own, oldest first. A call that ends without
 * reaching another gate is not seen ending, so the stall timer moves on from it too.
 *
 * @example
 * ```ts
 * const il = new Interleaver([1, 0, 2])
 * const [a, b] = await il.run([{ label: "gc", fn: () => ledger.gc("d") }, { label: "hb", fn: () => ledger.heartbeat("r1") }])
 * console.log(il.trace) // ["hb start", "gc start", "gc list data/r0/"]
 * ```
 */
export class Interleaver {
  readonly trace: string[] = [];
  readonly #choices: number[];
  readonly #stallMs: number;
  /**
   * Each live operation's calls parked at a gate, oldest first. An operation may park several at
   * once (cleanup with `--concurrency 16` lists and deletes in parallel): each waits for a turn of
   * its own, so no call's release is ever dropped.
   */
  readonly #live = new Map<number, { label: string; release: () => void }[]>();
  #progress = 0;
  #timer: NodeJS.Timeout | null = null;

  constructor(choices: readonly number[], options: { stallMs?: number } = {}) {
    this.#choices = [...choices];
    this.#stallMs = options.stallMs ?? 300;
  }

  /** Runs the operations concurrently under this scheduler; settles like Promise.allSettled. */
  run<T>(
    ops: readonly { label: string; data?: unknown; fn: () => Promise<T> }[],
  ): Promise<PromiseSettledResult<T>[]> {
    for (let i = 0; i < ops.length; i++) this.#live.set(i, []);
    const runs = ops.map((o, i) =>
      runAsOp({ op: i, label: o.label, interleaver: this, calls: 0, data: o.data }, async () => {
        try {
          await this.gate(i, `${o.label}: start`);
          return await o.fn();
        } finally {
          // A call the operation left parked (it did not wait for it) runs unscheduled.
          for (const call of this.#live.get(i) ?? []) call.release();
          this.#live.delete(i);
          this.#progress++;
          this.#maybeRelease();
        }
      }),
    );
    return Promise.allSettled(runs).finally(() => {
      if (this.#timer) clearTimeout(this.#timer);
    });
  }

  /** Parks a call of operation `op` until the scheduler picks it. */
  gate(op: number, label: string): Promise<void> {
    const parked = this.#live.get(op);
    if (!parked) return Promise.resolve();
    return new Promise<void>((resolve) => {
      parked.push({ label, release: resolve });
      this.#progress++;
      this.#maybeRelease();
    });
  }

  #maybeRelease(force = false): void {
    const waiting = [...this.#live.entries()].filter(([, calls]) => calls.length > 0);
    if (waiting.length === 0) return;
    if (!force && waiting.length < this.#live.size) {
      // Someone is still running (a database call) or blocked on a lock: wait for it, but not forever.
      this.#armStallTimer();
      return;
    }
    waiting.sort(([a], [b]) => a - b);
    const choice = this.#choices.shift() ?? 0;
    const [, calls] = waiting[choice % waiting.length]!;
    // The chosen operation's oldest parked call goes first.
    const { label, release } = calls.shift()!;
    this.trace.push(force ? `${label} (released while another op was blocked)` : label);
    this.#progress++;
    release();
    // The released call may block on a lock another parked one holds, never reaching a gate; and
    // an operation with more calls parked still counts as waiting while this one runs.
    if (waiting.length > 1 || calls.length > 0) this.#armStallTimer();
  }

  #armStallTimer(): void {
    const seen = this.#progress;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      if (this.#progress === seen) this.#maybeRelease(true);
    }, this.#stallMs);
    this.#timer.unref();
  }
}
