import { isShardledgerError, SafetyRailError } from "../errors.js";
import { assertSafeKey, assertSafePrefix } from "../storage/dataset-url.js";
import {
  classifyStoreError,
  type DeleteOutcome,
  isObjectStoreError,
  type ObjectInfo,
  type ObjectStore,
} from "../storage/object-store.js";
import { dispatchFenced, FenceRefusal } from "./fenced-store.js";
import { backoffDelay, isExhausted, parseRetryPolicy, type RetryPolicy } from "./retry-policy.js";

/**
 * Why a prefix could not be verified empty: the store's error code (`SlowDown`, `AccessDenied`,
 * `ECONNRESET`, …) or one of shardledger's own: `UnsafeKey` (the listing returned a key that is
 * not a safe key under the prefix; it is never sent), `NotEmpty` (objects kept appearing),
 * `Aborted` (the signal fired).
 *
 * @example
 * ```ts
 * const e: PrefixCleanupError = { code: "SlowDown", message: "Please reduce your request rate.", transient: true }
 * ```
 */
interface PrefixCleanupError {
  code: string;
  message: string;
  transient: boolean;
}

/**
 * What {@link deletePrefix} achieved. `deleted` only when a final listing showed the prefix
 * empty; then `error` is null and `remainingKeys` empty.
 *
 * @example
 * ```ts
 * const r: PrefixCleanupResult = { status: "failed", deletedObjects: 998, tries: 5, error: { code: "InternalError", message: "…", transient: true }, remainingKeys: ["data/r1/shard=00000/attempt=01/part-7"] }
 * ```
 */
export interface PrefixCleanupResult {
  status: "deleted" | "failed";
  /** Objects the store confirmed deleted, over all tries. */
  deletedObjects: number;
  /** Deletion rounds started: each lists what is left and deletes it (0 only when aborted before the first). */
  tries: number;
  error: PrefixCleanupError | null;
  /** The first few keys that may be left (not exhaustive), root-relative; empty when deleted. */
  remainingKeys: string[];
}

/**
 * Options of {@link deletePrefix}.
 *
 * @example
 * ```ts
 * const options: DeletePrefixOptions = { policy: DEFAULT_RETRY_POLICY, onBatch: (keys) => bar.tick(keys.length) }
 * ```
 */
export interface DeletePrefixOptions {
  /** Tries and backoff (validated: a bad policy throws ValidationError). */
  policy: RetryPolicy;
  /** Waits between tries; default a timer that the signal cuts short. Tests record instead of waiting. */
  sleep?: (ms: number) => Promise<void>;
  /** Jitter source in [0, 1); default Math.random. */
  random?: () => number;
  /** Stops between batches (and during a backoff): the result is failed with code `Aborted`. */
  signal?: AbortSignal;
  /** Called with the keys of each batch the store confirmed deleted (what it throws, deletePrefix throws). */
  onBatch?: (deletedKeys: readonly string[]) => void;
  /**
   * Run before every request to the store, which is sent in the reaction to its success
   * ({@link dispatchFenced}: nothing awaits in between); what it throws, deletePrefix throws at
   * once, with nothing more sent. A store that is itself fenced (`fenceStore`) needs none: its
   * refusals ({@link FenceRefusal}) are thrown the same way. Maintenance checks its fencing lease
   * here, so a pass that lost its lease stops before its next request.
   */
  beforeRequest?: () => Promise<void>;
  /**
   * Also delete the object whose key is the prefix without its trailing `/` (an attempt url may
   * name one object rather than a directory). Listed by that shorter prefix and filtered, so a
   * sibling such as `…/attempt=010` is never sent.
   */
  includeExactKey?: boolean;
  /**
   * Batch deletes kept in flight while the listing goes on to the next page (default 1: list,
   * delete, list the next page). A large prefix (a run's whole area: 100 pages of 1,000 keys)
   * pipelines its listing with its deletes this way; S3 pages by key, so deleting what was listed
   * does not disturb the pages after it. Every delete of a round has ended when the round ends.
   */
  pipeline?: number;
  /**
   * Objects never to send, judged as they are listed: the data that gc collects (a stale, failed
   * or pruned run's area) spares what was written less than the safety window ago (SPEC: unreported
   * or stale data is collected only once its last write is older than it). Spared objects end the
   * call after the round that found them, failed with code `InsideSafetyWindow` (transient: a later
   * pass deletes them once they are old enough); never retried within this call.
   */
  spare?: (object: ObjectInfo) => boolean;
}

const REMAINING_SHOWN = 10;
const PAGE_SIZE = 1000;

type RoundOutcome =
  | { kind: "empty" }
  | { kind: "clean" }
  | { kind: "failed"; error: PrefixCleanupError; remainingKeys: string[]; final?: true };

class Aborted extends Error {}

/**
 * What ends deletePrefix rather than a round: an abort, a caller's callback that threw, or a
 * fence that refused (its error is thrown as is, like the callback's); null for a store failure.
 */
function stopping(e: unknown): Aborted | CallbackFailed | null {
  if (e instanceof Aborted || e instanceof CallbackFailed) return e;
  if (e instanceof FenceRefusal) return new CallbackFailed(e.error);
  return null;
}
/** Carries an error of the caller's `onBatch` past the store-error handling, to be rethrown as is. */
class CallbackFailed extends Error {
  constructor(readonly error: unknown) {
    super("onBatch threw");
  }
}

/**
 * Deletes every object under a root-relative `prefix` (ending with `/`) and verifies it is gone.
 * Each round lists the whole prefix page by page and deletes each page in one batch (≤ 1000 keys:
 * one DeleteObjects request on S3); per-key errors in a batch's outcome count as failures. A round
 * with transient failures (throttling, 5xx, resets, timeouts: whole-request or per-key) is
 * followed, after a capped fully jittered backoff, by another round, up to `policy.maxTries`
 * rounds; a permanent failure (AccessDenied, NoSuchBucket, InvalidAccessKeyId, …) stops at once.
 * The prefix counts as deleted only when a listing shows it empty, so an already-empty prefix is
 * success with `deletedObjects: 0`. Store failures are reported in the result, never thrown.
 *
 * Throws only for a refused input, before any request: a SafetyRailError for a prefix that is
 * empty, lacks its trailing `/` or fails `assertSafePrefix`; a ValidationError for a bad policy.
 *
 * @example
 * ```ts
 * const result = await deletePrefix(store, "data/r1/shard=00003/attempt=01/", { policy: DEFAULT_RETRY_POLICY })
 * if (result.status === "failed") recordCleanupFailed(result.error, result.tries)
 * ```
 */
export async function deletePrefix(
  store: ObjectStore,
  prefix: string,
  options: DeletePrefixOptions,
): Promise<PrefixCleanupResult> {
  assertDeletablePrefix(prefix);
  const policy = parseRetryPolicy(options.policy);
  const { signal, onBatch } = options;
  const exactKey = options.includeExactKey ? prefix.slice(0, -1) : null;
  const listPrefix = exactKey ?? prefix;
  const ours = (key: string) => key === exactKey || key.startsWith(prefix);
  const { beforeRequest } = options;
  /** Sends a request, after the caller's check when there is one (a refusal is a FenceRefusal). */
  const request = <T>(send: () => Promise<T>): Promise<T> =>
    beforeRequest ? dispatchFenced(beforeRequest, send) : send();
  const random = options.random ?? Math.random;
  const sleep = options.sleep ?? ((ms: number) => abortableSleep(ms, signal));

  let deletedObjects = 0;
  let tries = 0;
  const result = (
    status: PrefixCleanupResult["status"],
    error: PrefixCleanupError | null,
    remainingKeys: string[],
  ): PrefixCleanupResult => ({
    status,
    deletedObjects,
    tries,
    error,
    remainingKeys: remainingKeys.slice(0, REMAINING_SHOWN),
  });
  const checkAbort = () => {
    if (signal?.aborted) throw new Aborted();
  };

  /** Lists the prefix from the start; returns up to a page of what is there. */
  const listFirstPage = async (): Promise<string[]> => {
    const keys: string[] = [];
    let token: string | null = null;
    do {
      checkAbort();
      const page = await request(() => store.list(listPrefix, { pageSize: PAGE_SIZE, token }));
      for (const o of page.objects) if (ours(o.key)) keys.push(o.key);
      token = page.nextToken;
    } while (keys.length === 0 && token !== null);
    return keys;
  };

  const depth = Math.max(1, Math.floor(options.pipeline ?? 1));
  type Settled = { batch: string[]; outcome: DeleteOutcome } | { batch: string[]; thrown: unknown };
  const settle = (batch: string[], p: Promise<DeleteOutcome>): Promise<Settled> =>
    p.then(
      (outcome) => ({ batch, outcome }),
      (thrown: unknown) => ({ batch, thrown }),
    );

  const round = async (): Promise<RoundOutcome> => {
    let token: string | null = null;
    let listed = 0;
    const spared: string[] = [];
    let transient: { error: PrefixCleanupError; remainingKeys: string[] } | null = null;
    const inFlight: Promise<Settled>[] = [];
    /** Takes in one delete's result: null to go on, or the failure that ends the round. */
    const absorb = (settled: Settled): RoundOutcome | null => {
      if ("thrown" in settled) {
        const stop = stopping(settled.thrown);
        if (stop !== null) throw stop;
        return { kind: "failed", error: requestError(settled.thrown), remainingKeys: settled.batch };
      }
      const { outcome } = settled;
      deletedObjects += outcome.deleted.length;
      if (outcome.deleted.length > 0 && onBatch) {
        try {
          onBatch(outcome.deleted);
        } catch (e) {
          throw new CallbackFailed(e);
        }
      }
      const permanent = outcome.errors.filter((e) => !e.transient);
      const firstPermanent = permanent[0];
      if (firstPermanent !== undefined) {
        return {
          kind: "failed",
          error: perKeyError(firstPermanent, permanent.length),
          remainingKeys: permanent.map((e) => e.key),
        };
      }
      const firstTransient = outcome.errors[0];
      if (firstTransient !== undefined) {
        transient ??= { error: perKeyError(firstTransient, outcome.errors.length), remainingKeys: [] };
        for (const e of outcome.errors) transient.remainingKeys.push(e.key);
      }
      return null;
    };
    /** Ends the round with `failure` once every delete still in flight has ended (and counted). */
    const drain = async (failure: RoundOutcome): Promise<RoundOutcome> => {
      const rest = await Promise.all(inFlight.splice(0));
      let callbackError: unknown = null;
      for (const settled of rest) {
        try {
          absorb(settled);
        } catch (e) {
          callbackError ??= e;
        }
      }
      if (callbackError !== null) throw callbackError;
      return failure;
    };
    do {
      checkAbort();
      let batch: string[] = [];
      try {
        const page = await request(() => store.list(listPrefix, { pageSize: PAGE_SIZE, token }));
        token = page.nextToken;
        // Siblings that merely share the shorter listing prefix are not ours and are never sent;
        // a key outside the listing prefix altogether stays in, for the check below to refuse.
        batch = [];
        for (const o of page.objects) {
          if (!(ours(o.key) || !o.key.startsWith(listPrefix))) continue;
          if (options.spare && ours(o.key) && options.spare(o)) spared.push(o.key);
          else batch.push(o.key);
        }
        listed += batch.length;
        const unsafe = batch.flatMap((key) => {
          const reason = ours(key) ? unsafeListedKey(key) : "it does not lie under the prefix";
          return reason === null ? [] : [{ key, reason }];
        });
        const first = unsafe[0];
        if (first !== undefined) {
          // Nothing of this page is sent: a store that lists what it should not is not trusted
          // with a delete of its neighbours either.
          return {
            kind: "failed",
            error: {
              code: "UnsafeKey",
              message: `the listing of ${prefix} returned ${unsafe.length} unsafe key(s), e.g. ${JSON.stringify(first.key)}: ${first.reason}; never sent`,
              transient: false,
            },
            remainingKeys: unsafe.map((u) => u.key),
          };
        }
        if (batch.length === 0) continue;
        checkAbort();
        // Checked and sent in one reaction (a refusal comes back as the batch's settled error).
        inFlight.push(
          settle(
            batch,
            request(() => store.deleteMany(batch)),
          ),
        );
        if (inFlight.length >= depth) {
          const failure = absorb(await (inFlight.shift() as Promise<Settled>));
          if (failure !== null) return await drain(failure);
        }
      } catch (e) {
        const stop = stopping(e);
        if (stop !== null) {
          await Promise.allSettled(inFlight);
          throw stop;
        }
        const error = requestError(e);
        // A failed request ends the round: the next one lists again from the start.
        return await drain({ kind: "failed", error, remainingKeys: batch });
      }
    } while (token !== null);
    while (inFlight.length > 0) {
      const failure = absorb(await (inFlight.shift() as Promise<Settled>));
      if (failure !== null) return await drain(failure);
    }
    // Assigned inside absorb(): the compiler cannot see it, so the type is restated.
    const transientFailure = transient as { error: PrefixCleanupError; remainingKeys: string[] } | null;
    if (transientFailure !== null) return { kind: "failed", ...transientFailure };
    if (spared.length > 0) {
      return {
        kind: "failed",
        final: true,
        error: {
          code: "InsideSafetyWindow",
          message: `${spared.length} object(s) under ${prefix} were written less than the safety window ago and were kept; they are deleted once older`,
          transient: true,
        },
        remainingKeys: spared,
      };
    }
    return listed === 0 ? { kind: "empty" } : { kind: "clean" };
  };

  try {
    for (;;) {
      checkAbort();
      tries += 1;
      const outcome = await round();
      let failure: { error: PrefixCleanupError; remainingKeys: string[] };
      if (outcome.kind === "empty") return result("deleted", null, []);
      if (outcome.kind === "clean") {
        // Verified by a listing of its own: a writer still writing, or a store that confirmed a
        // delete it did not make, shows up here and costs another round.
        try {
          const left = await listFirstPage();
          if (left.length === 0) return result("deleted", null, []);
          failure = {
            error: {
              code: "NotEmpty",
              message: `${prefix} still held objects after a round without errors (something is still writing there)`,
              transient: true,
            },
            remainingKeys: left,
          };
        } catch (e) {
          const stop = stopping(e);
          if (stop !== null) throw stop;
          failure = { error: requestError(e), remainingKeys: [] };
        }
      } else {
        failure = outcome;
      }
      if (!failure.error.transient || isExhausted(policy, tries) || ("final" in failure && failure.final)) {
        return result("failed", failure.error, failure.remainingKeys);
      }
      await sleep(backoffDelay(policy, tries, random));
    }
  } catch (e) {
    if (e instanceof CallbackFailed) throw e.error;
    if (!(e instanceof Aborted)) throw e;
    return result(
      "failed",
      { code: "Aborted", message: `deleting ${prefix} was aborted before it finished`, transient: true },
      [],
    );
  }
}

function assertDeletablePrefix(prefix: string): void {
  if (typeof prefix !== "string" || prefix === "" || !prefix.endsWith("/")) {
    throw new SafetyRailError(
      `prefix ${JSON.stringify(prefix)} cannot be deleted: it must be a non-empty root-relative prefix ending with "/"`,
      { prefix, rule: "deletable prefix" },
    );
  }
  assertSafePrefix(prefix);
}

function unsafeListedKey(key: string): string | null {
  try {
    assertSafeKey(key);
    return null;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

function perKeyError(
  first: { key: string; code: string; message: string; transient: boolean },
  count: number,
): PrefixCleanupError {
  const more = count > 1 ? ` (and ${count - 1} more key(s))` : "";
  return { code: first.code, message: `${first.key}: ${first.message}${more}`, transient: first.transient };
}

function requestError(e: unknown): PrefixCleanupError {
  // A rule refusal from the store (a symbolic link out of the root, …) will refuse again; a failed
  // request is classified by the store's own code (an ObjectStoreError is a ShardledgerError too).
  if (isShardledgerError(e) && !isObjectStoreError(e))
    return { code: e.code, message: e.message, transient: false };
  return classifyStoreError(e);
}

function abortableSleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
