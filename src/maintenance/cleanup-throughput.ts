import { z } from "zod";
import { parseWithSchema } from "../validation.js";
import { DEFAULT_DELETE_RATE } from "./adaptive-rate-limiter.js";

/**
 * How fast a maintenance pass may go: `concurrency` prefixes in flight (1 = the sequential pass,
 * one prefix at a time, no rate limiter), and the delete rate (keys/s) its adaptive limiter starts
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
 * One prefix at a time by default, starting at 1,000 deletes/s. The concurrent pass is opt-in
 * (`concurrency` > 1): the safety oracle found that a pass fenced off while requests are in flight
 * can still send a few store requests that were checked before the revocation (rule R7); until
 * that is closed, the default is the pass that keeps R7 exactly.
 */
const DEFAULT_CLEANUP_THROUGHPUT: CleanupThroughput = Object.freeze({
  concurrency: 1,
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
