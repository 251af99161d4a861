import { z } from "zod";
import { parseWithSchema } from "../validation.js";
import { DEFAULT_DELETE_RATE } from "./adaptive-rate-limiter.js";

/**
 * How fast a maintenance pass may go: `concurrency` prefixes in flight (1 = the sequential pass,
 * one prefix at a time, no rate limiter; default 16), and the delete rate (keys/s) its adaptive limiter starts
 * at, below S3's 3,500 deletes/s per partitioned prefix; it ramps up from there while requests
 * succeed and backs off on SlowDown.
 *
 * @example
 * ```ts
 * const t: CleanupThroughput = { concurrency: 16, initialRate: 1000 }
 * ```
 */
export interface CleanupThroughput {
  readonly concurrency: number;
  readonly initialRate: number;
}

/**
 * 16 prefixes in flight by default, starting at 1,000 deletes/s. Fencing is as strict at any
 * concurrency as at 1 (every request waits for its turn, then for a check, and is sent on the
 * check's answer: maintenance/fenced-store.ts), so the default is chosen for speed alone: on the
 * S3 model (bench/RESULTS.md "cleanup") 16 in flight meets every target (≥ 20× the naive loop, ≥ 5×
 * the sequential pass, ≥ 0.7× of a binding limit with < 5% throttled) with half the sockets and
 * memory of 32; more than that mostly waits for the limiter.
 */
const DEFAULT_CLEANUP_THROUGHPUT: CleanupThroughput = Object.freeze({
  concurrency: 16,
  initialRate: DEFAULT_DELETE_RATE.initialRate,
});

/** Bounds that turn a typo into an error rather than a pass that floods the store or never ends. */
const MAX_CONCURRENCY = 256;
const MAX_INITIAL_RATE = 1_000_000;

const schema = z.strictObject({
  concurrency: z
    .number({ error: "must be a number" })
    .refine(Number.isInteger, "must be an integer")
    .refine((n) => n >= 1, "must be ≥ 1")
    .refine((n) => n <= MAX_CONCURRENCY, `must be ≤ ${MAX_CONCURRENCY}`)
    .default(DEFAULT_CLEANUP_THROUGHPUT.concurrency),
  initialRate: z
    .number({ error: "must be a number" })
    .refine(Number.isFinite, "must be finite")
    .refine((n) => n > 0, "must be > 0")
    .refine((n) => n <= MAX_INITIAL_RATE, `must be ≤ ${MAX_INITIAL_RATE}`)
    .default(DEFAULT_CLEANUP_THROUGHPUT.initialRate),
});

/**
 * Validates throughput options over the defaults; a bad field throws a ValidationError naming it
 * (`concurrency`, `initialRate`), before anything is read, written or deleted.
 *
 * @example
 * ```ts
 * parseCleanupThroughput({ concurrency: 4 })  // { concurrency: 4, initialRate: 1000 }
 * parseCleanupThroughput({ concurrency: 0 })  // throws ValidationError("concurrency", "must be ≥ 1")
 * ```
 */
export function parseCleanupThroughput(input: Partial<CleanupThroughput> = {}): CleanupThroughput {
  const defined = Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined));
  return Object.freeze(parseWithSchema(schema, defined, "throughput"));
}
