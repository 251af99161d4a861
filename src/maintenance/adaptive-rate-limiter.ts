import { z } from "zod";
import { ValidationError } from "../errors.js";
import { parseWithSchema } from "../validation.js";

/**
 * How an {@link AdaptiveRateLimiter} moves its rate, in units per second (keys deleted, or
 * requests). AIMD, as TCP does it: a slow start that doubles the rate every second of successes
 * until the first throttle, then an additive increase of `increasePerSecond` per second of
 * successes, and a multiplicative decrease (`rate · decreaseFactor`) on a SlowDown/503.
 *
 * @example
 * ```ts
 * const options: AdaptiveRateOptions = { initialRate: 1000, minRate: 10, maxRate: 100_000, increasePerSecond: 100, decreaseFactor: 0.7 }
 * ```
 */
export interface AdaptiveRateOptions {
  /** Where the rate starts: below the store's documented limit (S3: 3,500 deletes/s per prefix). */
  readonly initialRate: number;
  /** The rate never drops below this, however many throttles. */
  readonly minRate: number;
  /** Nor rises above this. */
  readonly maxRate: number;
  /** Additive increase after the slow start: units/s gained per second of successes. */
  readonly increasePerSecond: number;
  /** Multiplicative decrease on a throttle, in (0, 1). */
  readonly decreaseFactor: number;
}

/**
 * Defaults for S3 deletes counted in keys: start at 1,000 keys/s (below S3's 3,500 per partitioned
 * prefix), gain 100 keys/s per second once throttled, back off to 70% on each SlowDown.
 *
 * @example
 * ```ts
 * const limiter = new AdaptiveRateLimiter(DEFAULT_DELETE_RATE, Date.now())
 * ```
 */
export const DEFAULT_DELETE_RATE: AdaptiveRateOptions = Object.freeze({
  initialRate: 1_000,
  minRate: 10,
  maxRate: 1_000_000,
  increasePerSecond: 100,
  decreaseFactor: 0.7,
});

const positive = z
  .number({ error: "must be a number" })
  .refine(Number.isFinite, "must be finite")
  .refine((n) => n > 0, "must be > 0");

const optionsSchema = z.strictObject({
  initialRate: positive,
  minRate: positive,
  maxRate: positive,
  increasePerSecond: positive,
  decreaseFactor: positive.refine((n) => n < 1, "must be < 1"),
});

/**
 * Validates limiter options over {@link DEFAULT_DELETE_RATE}; a bad field throws a
 * ValidationError naming it, and `minRate ≤ initialRate ≤ maxRate` must hold.
 *
 * @example
 * ```ts
 * parseAdaptiveRateOptions({ initialRate: 500 }) // the defaults with initialRate 500
 * parseAdaptiveRateOptions({ decreaseFactor: 1 }) // throws ValidationError("decreaseFactor", …)
 * ```
 */
export function parseAdaptiveRateOptions(input: Partial<AdaptiveRateOptions> = {}): AdaptiveRateOptions {
  const merged = parseWithSchema(optionsSchema, { ...DEFAULT_DELETE_RATE, ...input }, "rate");
  if (merged.initialRate < merged.minRate || merged.initialRate > merged.maxRate) {
    throw new ValidationError(
      "initialRate",
      `must lie within minRate (${merged.minRate}) … maxRate (${merged.maxRate}), got ${merged.initialRate}`,
    );
  }
  return Object.freeze(merged);
}

/**
 * A reservation: when it was made and whether the limiter was the bottleneck then (only a
 * request that the rate held back is evidence that a higher rate would be used).
 */
export interface RateTicket {
  readonly reservedAt: number;
  readonly cost: number;
  readonly rateBound: boolean;
}

/**
 * What the limiter did, for a pass's report.
 *
 * @example
 * ```ts
 * const s: RateStats = { rate: 3120, successes: 1980, throttles: 12, decreases: 4 }
 * ```
 */
export interface RateStats {
  /** The rate now, units/s: what the pass settled at. */
  rate: number;
  successes: number;
  throttles: number;
  /** Throttles that lowered the rate (the others answered requests sent before the last decrease). */
  decreases: number;
}

/**
 * A client-side adaptive rate limiter (AIMD over a token timeline) for one bucket and prefix. Pure:
 * every method takes the time (ms) from the caller, so tests drive it with a fake clock.
 *
 * `reserve(cost, now)` books `cost` units on the timeline and says how long to wait before
 * sending; the caller reports the answer with `succeeded` or `throttled`. Several throttles of
 * requests in flight together count as one congestion event: only a request reserved after the
 * last decrease can lower the rate again.
 *
 * @example
 * ```ts
 * const limiter = new AdaptiveRateLimiter(DEFAULT_DELETE_RATE, Date.now())
 * const { waitMs, ticket } = limiter.reserve(keys.length, Date.now())
 * await sleep(waitMs)
 * try { await send(); limiter.succeeded(ticket, Date.now()) }
 * catch (e) { if (isSlowDown(e)) limiter.throttled(ticket, Date.now()); throw e }
 * ```
 */
export class AdaptiveRateLimiter {
  readonly #options: AdaptiveRateOptions;
  #rate: number;
  #nextFree: number;
  #slowStart = true;
  #lastDecreaseAt = Number.NEGATIVE_INFINITY;
  #successes = 0;
  #throttles = 0;
  #decreases = 0;

  constructor(options: Partial<AdaptiveRateOptions>, now: number) {
    this.#options = parseAdaptiveRateOptions(options);
    this.#rate = this.#options.initialRate;
    // Nothing booked yet: the first request finds the sender idle, not held back.
    this.#nextFree = Number.NEGATIVE_INFINITY;
    void now;
  }

  get rate(): number {
    return this.#rate;
  }

  /** Books `cost` units (≥ 0) at the current rate; `waitMs` is how long to wait before sending. */
  reserve(cost: number, now: number): { waitMs: number; ticket: RateTicket } {
    const units = Math.max(0, cost);
    const span = (units * 1000) / this.#rate;
    // Busy: the timeline was still booked at `now` (within one span), so the rate is what holds
    // the sender back. An idle sender must not ramp a rate it never uses.
    const rateBound = this.#nextFree + span >= now;
    const start = Math.max(now, this.#nextFree);
    this.#nextFree = start + span;
    return { waitMs: start - now, ticket: { reservedAt: now, cost: units, rateBound } };
  }

  /** The request of `ticket` succeeded: increase (slow start: ×2 per second; then additive). */
  succeeded(ticket: RateTicket, _now: number): void {
    this.#successes++;
    if (!ticket.rateBound || ticket.cost === 0) return;
    const fraction = ticket.cost / this.#rate;
    const gain = this.#slowStart ? ticket.cost : this.#options.increasePerSecond * fraction;
    this.#rate = Math.min(this.#options.maxRate, this.#rate + gain);
  }

  /** The store answered SlowDown/503 to the request of `ticket`: decrease, once per congestion event. */
  throttled(ticket: RateTicket, now: number): void {
    this.#throttles++;
    this.#slowStart = false;
    if (ticket.reservedAt < this.#lastDecreaseAt) return;
    this.#lastDecreaseAt = now;
    this.#decreases++;
    this.#rate = Math.max(this.#options.minRate, this.#rate * this.#options.decreaseFactor);
    // What was booked at the old rate is rebooked at the new one, from now.
    if (this.#nextFree > now) this.#nextFree = now + (this.#nextFree - now) / this.#options.decreaseFactor;
  }

  stats(): RateStats {
    return {
      rate: this.#rate,
      successes: this.#successes,
      throttles: this.#throttles,
      decreases: this.#decreases,
    };
  }
}
