import type { ObjectStore } from "../storage/object-store.js";

/**
 * A fencing check: resolves while the pass still holds its lease, throws once it does not (a
 * maintenance pass passes `lease.assertHeld`, usually through `coalescedCheck`).
 */
export type Fence = () => Promise<void>;

/**
 * What a {@link Fence} threw, as a store call of a fenced store throws it: callers tell a pass
 * that must stop from a failed request (which they would classify and retry) by this class, and
 * rethrow `error`.
 */
export class FenceRefusal extends Error {
  constructor(readonly error: unknown) {
    super(
      `the fencing check refused the request: ${error instanceof Error ? error.message : String(error)}`,
      {
        cause: error,
      },
    );
    this.name = "FenceRefusal";
  }
}

/**
 * Sends `send()` only once `fence` resolves, and in the very reaction to that resolution.
 *
 * Why this is strict. A lease revocation reaches this process as an I/O completion (a database
 * reply, a callback of another connection). JavaScript runs a reaction to completion and drains
 * the microtasks it queues before the next I/O callback runs, and `send` is called synchronously
 * inside the reaction to the check's success: nothing that can await a timer, a rate limiter, a
 * pool slot or any I/O stands between the check answering "held" and the request being handed to
 * the store client. So a request is never issued after the pass has observed a revocation, and
 * every request is covered by a check that started after it asked (when `fence` is a
 * `coalescedCheck`). What waits — the limiter's token, a pool slot, a listing — must therefore
 * come BEFORE the fence, never between it and the request: see `ThrottledStore.withFence`.
 *
 * The limit: the check reads the lease at one instant on the server; a revocation that commits
 * after that read and before the request reaches the store cannot be seen by any client-side
 * check (an object store takes no fencing token). That window is one check's round trip, and the
 * request is one the lease authorised when its check read it.
 *
 * A rejection of `fence` is thrown as a {@link FenceRefusal}; what `send` throws passes as is.
 *
 * @example
 * ```ts
 * const fence: Fence = async () => {}
 * const store = { deleteMany: async (keys: readonly string[]) => ({ deleted: [...keys], errors: [] }) }
 * await dispatchFenced(fence, () => store.deleteMany(["data/r1/shard=00000/attempt=01/part-0"]))
 * ```
 */
export function dispatchFenced<T>(fence: Fence, send: () => Promise<T>): Promise<T> {
  let checked: Promise<void>;
  try {
    checked = fence();
  } catch (e) {
    return Promise.reject(new FenceRefusal(e));
  }
  return checked.then(send, (e: unknown) => {
    throw new FenceRefusal(e);
  });
}

/**
 * An object store that waits for its own turn before it sends (a rate limiter): told the fence,
 * it runs it after the wait, right before each request.
 */
export interface WaitingStore extends ObjectStore {
  withFence(fence: Fence): ObjectStore;
}

function isWaitingStore(store: ObjectStore): store is WaitingStore {
  return typeof (store as Partial<WaitingStore>).withFence === "function";
}

/**
 * The store every maintenance request goes through: each request (list, get, put, deleteMany)
 * is sent by {@link dispatchFenced}, so the fence is the last thing before it. A
 * {@link WaitingStore} (the rate-limited store) puts the fence after its own wait.
 *
 * @example
 * ```ts
 * const fenced = fenceStore(store, coalescedCheck(() => lease.assertHeld()))
 * await deletePrefix(fenced, "data/r1/shard=00000/attempt=01/", { policy })
 * ```
 */
export function fenceStore(store: ObjectStore, fence: Fence): ObjectStore {
  if (isWaitingStore(store)) return store.withFence(fence);
  return {
    rootUrl: store.rootUrl,
    list: (prefix, options) => dispatchFenced(fence, () => store.list(prefix, options)),
    deleteMany: (keys) => dispatchFenced(fence, () => store.deleteMany(keys)),
    put: (key, body, options) => dispatchFenced(fence, () => store.put(key, body, options)),
    get: (key) => dispatchFenced(fence, () => store.get(key)),
  };
}

/**
 * `request` with a fence's refusal thrown as the fence's own error (a `LeaseLostError`), for a
 * caller that classifies no store failure itself.
 *
 * @example
 * ```ts
 * const page = await fenceRefusalAsError(fenced.list("data/r1/"))
 * ```
 */
export function fenceRefusalAsError<T>(request: Promise<T>): Promise<T> {
  return request.catch((e: unknown) => {
    throw e instanceof FenceRefusal ? e.error : e;
  });
}

/**
 * The check to pass to `deleteObject` / `beforeRequest` when the store is already a
 * {@link fenceStore}: the store runs the fence itself, so nothing more is checked.
 */
export const FENCED_BY_STORE: Fence = () => Promise.resolve();
