import { DEFAULT_RETRY_POLICY, type RetryPolicy } from "./retry-policy.js";

/**
 * How maintenance retries. `deletion` bounds the retries inside one pass (short backoff);
 * `pending` spaces the passes of an item that keeps failing and decides when it is exhausted
 * (its `tries` count deletion rounds over all passes).
 *
 * @example
 * ```ts
 * const maintenance: Partial<MaintenancePolicies> = { pending: { maxTries: 50, baseDelayMs: 60_000, maxDelayMs: 6 * 3_600_000 } }
 * const ledger = await openLedger({ database: "pglite:memory", maintenance })
 * ```
 */
export interface MaintenancePolicies {
  deletion: RetryPolicy;
  pending: RetryPolicy;
}

/**
 * Defaults: 5 rounds per pass from 200 ms; between passes from 30 s up to 1 h; exhausted after 20 rounds.
 *
 * @example
 * ```ts
 * const ledger = await openLedger({
 *   database: "pglite:memory",
 *   maintenance: { deletion: { ...DEFAULT_MAINTENANCE_POLICIES.deletion, maxTries: 3 } },
 * })
 * ```
 */
export const DEFAULT_MAINTENANCE_POLICIES: MaintenancePolicies = Object.freeze({
  deletion: DEFAULT_RETRY_POLICY,
  pending: Object.freeze({ maxTries: 20, baseDelayMs: 30_000, maxDelayMs: 3_600_000 }),
});
