import { z } from "zod";
import { ValidationError } from "../errors.js";
import { parseWithSchema } from "../validation.js";

/**
 * How often and how patiently a cleanup is retried: at most `maxTries` tries, waiting a capped,
 * fully jittered exponential backoff between them. Durations in milliseconds.
 *
 * @example
 * ```ts
 * const policy: RetryPolicy = { maxTries: 5, baseDelayMs: 200, maxDelayMs: 30_000 }
 * ```
 */
export interface RetryPolicy {
  /** Tries in all, the first one included (1 = never retry). */
  readonly maxTries: number;
  /** The backoff cap before the second try; it doubles with every further try. */
  readonly baseDelayMs: number;
  /** No wait is ever longer than this. */
  readonly maxDelayMs: number;
}

/** Bounds that turn a typo into an error instead of a pass that never ends. */
const MAX_TRIES = 100;
const MAX_DELAY_MS = 24 * 3_600_000;

/**
 * The default policy: 5 tries, backoff from 200 ms, never more than 30 s between tries.
 *
 * @example
 * ```ts
 * await deletePrefix(store, "data/r1/shard=00003/attempt=01/", { policy: DEFAULT_RETRY_POLICY })
 * ```
 */
export const DEFAULT_RETRY_POLICY: RetryPolicy = Object.freeze({
  maxTries: 5,
  baseDelayMs: 200,
  maxDelayMs: 30_000,
});

const positiveInt = (max: number) =>
  z
    .number({ error: "must be a number" })
    .refine(Number.isInteger, "must be an integer")
    .refine((n) => n >= 1, "must be ≥ 1")
    .refine((n) => n <= max, `must be ≤ ${max}`);

const retryPolicySchema = z.strictObject({
  maxTries: positiveInt(MAX_TRIES).default(DEFAULT_RETRY_POLICY.maxTries),
  baseDelayMs: positiveInt(MAX_DELAY_MS).default(DEFAULT_RETRY_POLICY.baseDelayMs),
  maxDelayMs: positiveInt(MAX_DELAY_MS).default(DEFAULT_RETRY_POLICY.maxDelayMs),
});

/**
 * Validates a retry policy, filling in the defaults of {@link DEFAULT_RETRY_POLICY} for missing
 * fields. Every field is a positive integer (`maxTries` ≤ 100, delays ≤ 24 h) and
 * `maxDelayMs ≥ baseDelayMs`; anything else throws a {@link ValidationError} naming the field.
 * The result is frozen.
 *
 * @example
 * ```ts
 * parseRetryPolicy({ maxTries: 3 })          // { maxTries: 3, baseDelayMs: 200, maxDelayMs: 30000 }
 * parseRetryPolicy({ baseDelayMs: 0 })       // throws ValidationError("baseDelayMs", …)
 * parseRetryPolicy({ baseDelayMs: 5_000, maxDelayMs: 1_000 }) // throws ValidationError("maxDelayMs", …)
 * ```
 */
export function parseRetryPolicy(input: unknown = {}): RetryPolicy {
  const policy = parseWithSchema(retryPolicySchema, input ?? {}, "retryPolicy");
  if (policy.maxDelayMs < policy.baseDelayMs) {
    throw new ValidationError(
      "maxDelayMs",
      `must be ≥ baseDelayMs (${policy.baseDelayMs}), got ${policy.maxDelayMs}`,
    );
  }
  return Object.freeze(policy);
}

function assertTries(tries: number): void {
  if (!Number.isInteger(tries) || tries < 1) {
    throw new ValidationError(
      "tries",
      `must be an integer ≥ 1 (the tries made so far), got ${String(tries)}`,
    );
  }
}

/**
 * The backoff cap after `tries` tries: `min(maxDelayMs, baseDelayMs · 2^(tries-1))`.
 *
 * @example
 * ```ts
 * backoffCap({ maxTries: 5, baseDelayMs: 200, maxDelayMs: 30_000 }, 3) // 800
 * ```
 */
export function backoffCap(policy: RetryPolicy, tries: number): number {
  assertTries(tries);
  // 2^1023 is the last finite power; past it the product is Infinity and min() still caps it.
  return Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(tries - 1, 1023));
}

/**
 * How long to wait after `tries` failed tries before the next one, with FULL jitter: a uniform
 * whole number of milliseconds in `[0, backoffCap(policy, tries)]`. Full jitter spreads the
 * retries of many prefixes that failed together (one throttled bucket) instead of sending them
 * back in lock-step. `random` must return a number in `[0, 1)`; it is clamped to `[0, 1]`.
 *
 * @example
 * ```ts
 * backoffDelay(DEFAULT_RETRY_POLICY, 1)             // somewhere in 0…200
 * backoffDelay(DEFAULT_RETRY_POLICY, 4, () => 0.5)  // 800 (half of the 1600 cap)
 * backoffDelay(DEFAULT_RETRY_POLICY, 30, () => 0.5) // 15000 (half of the 30 s cap)
 * ```
 */
export function backoffDelay(policy: RetryPolicy, tries: number, random: () => number = Math.random): number {
  const cap = backoffCap(policy, tries);
  const r = random();
  const unit = Number.isNaN(r) ? 1 : Math.min(1, Math.max(0, r));
  return Math.floor(unit * cap);
}

/**
 * Whether `tries` tries used up the policy: no further try is allowed.
 *
 * @example
 * ```ts
 * isExhausted({ maxTries: 5, baseDelayMs: 200, maxDelayMs: 30_000 }, 5) // true
 * ```
 */
export function isExhausted(policy: RetryPolicy, tries: number): boolean {
  return tries >= policy.maxTries;
}

/**
 * When a pending-cleanup item that failed `tries` times may be tried again by a later pass:
 * `now` plus {@link backoffDelay} (full jitter, capped by `maxDelayMs`), or `null` when the
 * item is exhausted and waits for an operator (`retry-failed`) instead.
 *
 * @example
 * ```ts
 * nextRetryAt(DEFAULT_RETRY_POLICY, 2, new Date("2026-01-01T00:00:00Z"), () => 0.5)
 * // → 2026-01-01T00:00:00.200Z
 * nextRetryAt(DEFAULT_RETRY_POLICY, 5, new Date()) // null: exhausted
 * ```
 */
export function nextRetryAt(
  policy: RetryPolicy,
  tries: number,
  now: Date,
  random: () => number = Math.random,
): Date | null {
  assertTries(tries);
  if (isExhausted(policy, tries)) return null;
  return new Date(now.getTime() + backoffDelay(policy, tries, random));
}
