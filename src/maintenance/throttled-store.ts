import { classifyStoreError, type ObjectStore } from "../storage/object-store.js";
import { AdaptiveRateLimiter, type AdaptiveRateOptions, type RateStats } from "./adaptive-rate-limiter.js";
import { dispatchFenced, type Fence, FenceRefusal, type WaitingStore } from "./fenced-store.js";

/**
 * Request counts of a {@link ThrottledStore}: what a pass reports as its cost and its rate.
 *
 * @example
 * ```ts
 * const s: StoreTraffic = { listRequests: 4000, listMs: 98_000, deleteRequests: 2000, deletedKeys: 100_000, throttled: 14, deleteRate: { rate: 3120, successes: 1980, throttles: 14, decreases: 5 } }
 * ```
 */
export interface StoreTraffic {
  listRequests: number;
  /** Summed duration of the list requests (they overlap when prefixes run concurrently). */
  listMs: number;
  deleteRequests: number;
  deletedKeys: number;
  /** Requests (or keys inside a 200 DeleteObjects) the store answered with SlowDown/503. */
  throttled: number;
  /** The delete limiter (units: keys/s); `rate` is where it settled. */
  deleteRate: RateStats;
}

/**
 * An object store whose deletes go through an {@link AdaptiveRateLimiter} (in keys per second,
 * the unit of S3's per-prefix limit) and whose listings go through another (in requests per
 * second), both owned by one bucket and prefix: the store's root.
 *
 * @example
 * ```ts
 * const throttled = new ThrottledStore(store, { initialRate: 1000 })
 * await deletePrefix(throttled, "data/r1/shard=00000/attempt=01/", { policy })
 * console.log(throttled.traffic().deleteRate.rate)
 * ```
 */
export class ThrottledStore implements WaitingStore {
  readonly rootUrl: string;
  readonly #store: ObjectStore;
  readonly #deletes: AdaptiveRateLimiter;
  readonly #lists: AdaptiveRateLimiter;
  readonly #now: () => number;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #traffic = { listRequests: 0, listMs: 0, deleteRequests: 0, deletedKeys: 0, throttled: 0 };

  constructor(
    store: ObjectStore,
    rate: Partial<AdaptiveRateOptions> = {},
    clock: { now?: () => number; sleep?: (ms: number) => Promise<void> } = {},
  ) {
    this.rootUrl = store.rootUrl;
    this.#store = store;
    this.#now = clock.now ?? (() => performance.now());
    this.#sleep = clock.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.#deletes = new AdaptiveRateLimiter(rate, this.#now());
    // Listings: S3 allows 5,500 GET/LIST per second per prefix, 11/7 of the delete limit.
    const listStart = Math.max(1, ((rate.initialRate ?? 1_000) * 11) / 7 / 50);
    this.#lists = new AdaptiveRateLimiter(
      {
        initialRate: listStart,
        // A storm must not starve the listings that verify deletions: a tenth of the start at least.
        minRate: Math.max(1, listStart / 10),
        maxRate: 1_000_000,
        increasePerSecond: Math.max(1, listStart / 10),
      },
      this.#now(),
    );
  }

  traffic(): StoreTraffic {
    return { ...this.#traffic, deleteRate: this.#deletes.stats() };
  }

  list(prefix: string, options?: Parameters<ObjectStore["list"]>[1]) {
    return this.#list(prefix, options, null);
  }

  deleteMany(keys: readonly string[]) {
    return this.#deleteMany(keys, null);
  }

  /**
   * This store (the same limiters and counts) with `fence` run after each request's wait for its
   * turn and right before the request ({@link dispatchFenced}): the order that keeps fencing
   * strict. A fence run before the wait would let a request checked before a revocation be sent
   * after it, once its turn came.
   */
  withFence(fence: Fence): ObjectStore {
    return {
      rootUrl: this.rootUrl,
      list: (prefix, options) => this.#list(prefix, options, fence),
      deleteMany: (keys) => this.#deleteMany(keys, fence),
      put: (key, body, options) => dispatchFenced(fence, () => this.#store.put(key, body, options)),
      get: (key) => dispatchFenced(fence, () => this.#store.get(key)),
    };
  }

  /** Sends now, or after `fence` (in the reaction to its success). */
  #send<T>(fence: Fence | null, send: () => Promise<T>): Promise<T> {
    return fence === null ? send() : dispatchFenced(fence, send);
  }

  async #list(prefix: string, options: Parameters<ObjectStore["list"]>[1], fence: Fence | null) {
    // The turn first, then the fence, then the request: nothing waits between the last two.
    const { waitMs, ticket } = this.#lists.reserve(1, this.#now());
    if (waitMs > 0) await this.#sleep(waitMs);
    const sent = { at: Number.NaN };
    try {
      const page = await this.#send(fence, () => {
        sent.at = this.#now();
        this.#traffic.listRequests++;
        return this.#store.list(prefix, options);
      });
      this.#lists.succeeded(ticket, this.#now());
      return page;
    } catch (e) {
      if (!(e instanceof FenceRefusal) && isThrottle(e)) {
        this.#traffic.throttled++;
        this.#lists.throttled(ticket, this.#now());
      }
      throw e;
    } finally {
      // Only a request that was sent counts: a refusal of the fence is not a listing.
      if (!Number.isNaN(sent.at)) this.#traffic.listMs += this.#now() - sent.at;
    }
  }

  async #deleteMany(keys: readonly string[], fence: Fence | null) {
    const { waitMs, ticket } = this.#deletes.reserve(keys.length, this.#now());
    if (waitMs > 0) await this.#sleep(waitMs);
    try {
      const outcome = await this.#send(fence, () => {
        this.#traffic.deleteRequests++;
        return this.#store.deleteMany(keys);
      });
      this.#traffic.deletedKeys += outcome.deleted.length;
      const slowed = outcome.errors.filter((e) => isThrottleCode(e.code)).length;
      if (slowed > 0) {
        this.#traffic.throttled += slowed;
        this.#deletes.throttled(ticket, this.#now());
      } else this.#deletes.succeeded(ticket, this.#now());
      return outcome;
    } catch (e) {
      if (!(e instanceof FenceRefusal) && isThrottle(e)) {
        this.#traffic.throttled++;
        this.#deletes.throttled(ticket, this.#now());
      }
      throw e;
    }
  }

  put(key: string, body: string | Uint8Array, options?: Parameters<ObjectStore["put"]>[2]) {
    return this.#store.put(key, body, options);
  }

  get(key: string) {
    return this.#store.get(key);
  }

  async close() {
    await this.#store.close?.();
  }
}

const THROTTLE_CODES = new Set([
  "SlowDown",
  "ServiceUnavailable",
  "Http503",
  "Http429",
  "TooManyRequestsException",
]);

const isThrottleCode = (code: string): boolean => THROTTLE_CODES.has(code) || code.startsWith("Throttl");

/** SlowDown, 503 and the throttling family: the store asks for a lower rate. */
function isThrottle(e: unknown): boolean {
  const status = (e as { status?: unknown })?.status;
  return status === 503 || status === 429 || isThrottleCode(classifyStoreError(e).code);
}
