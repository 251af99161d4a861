/**
 * The safety window when a policy change shortened it. Data replaced, failed or written before the
 * change was promised the old, longer window; the shorter one must not take that back. One pair
 * per dataset, `{ windowMs, until }`, says it exactly enough: until `until`, every run and object is
 * kept for at least `windowMs`; from then on the policy's window alone rules. It is a fold of the
 * log (the datasets projection computes it from DatasetPoliciesChanged), so replay and audit
 * reproduce it.
 */

/**
 * A longer safety window still in force after the policy shrank: kept for at least `windowMs`
 * until `until`.
 *
 * @example
 * ```ts
 * const hold: SafetyWindowHold = { windowMs: 3_600_000, until: new Date("2026-01-01T01:02:00Z") }
 * ```
 */
export interface SafetyWindowHold {
  windowMs: number;
  until: Date;
}

/**
 * The safety window in force at `now`: the policy's, or the held one while the hold lasts,
 * whichever is longer. An invalid hold time never ends the hold (NaN compares false).
 *
 * @example
 * ```ts
 * effectiveSafetyWindowMs({ policies: { safetyWindowMs: 0 }, safetyWindowHold: hold }, new Date()) // 3600000 while held
 * ```
 */
export function effectiveSafetyWindowMs(
  dataset: { policies: { safetyWindowMs: number }; safetyWindowHold?: SafetyWindowHold | null },
  now: Date | number,
): number {
  const policy = dataset.policies.safetyWindowMs;
  const hold = dataset.safetyWindowHold ?? null;
  const t = typeof now === "number" ? now : now.getTime();
  if (hold === null || t >= hold.until.getTime()) return policy;
  return Math.max(policy, hold.windowMs);
}

/**
 * Whether an object last written at `lastModified` is still inside a safety window of `windowMs`
 * at `now`: then nothing collects it (a writer may still be finishing it). An object stamped after
 * `now` (a store clock ahead of the ledger's) counts as inside.
 *
 * @example
 * ```ts
 * writtenInsideWindow(new Date("2026-01-01T00:00:00Z"), 10_000, new Date("2026-01-01T00:00:05Z")) // true
 * ```
 */
export function writtenInsideWindow(lastModified: Date, windowMs: number, now: Date | number): boolean {
  return lastModified.getTime() + windowMs > (typeof now === "number" ? now : now.getTime());
}

/**
 * The hold after the safety window changes from `previous` to `nextWindowMs` at `at`. A change to
 * a window at least as long as the one in force needs none. A shorter one holds the window in
 * force (`windowMs`) until every promise made under it has ended: the old hold's end, or `at` plus
 * the old policy window, whichever is later. Conservative on purpose — a run replaced after the
 * change is also kept for the held window until the hold ends — and one pair however many changes
 * come, so a dataset's row stays small.
 *
 * @example
 * ```ts
 * nextSafetyWindowHold({ policies: { safetyWindowMs: 3_600_000 } }, 0, at) // { windowMs: 3600000, until: at + 1h }
 * ```
 */
export function nextSafetyWindowHold(
  previous: { policies: { safetyWindowMs: number }; safetyWindowHold?: SafetyWindowHold | null },
  nextWindowMs: number,
  at: Date,
): SafetyWindowHold | null {
  const inForce = effectiveSafetyWindowMs(previous, at);
  if (nextWindowMs >= inForce) return null;
  const hold = previous.safetyWindowHold ?? null;
  const byPolicy = at.getTime() + previous.policies.safetyWindowMs;
  const byHold = hold !== null && at.getTime() < hold.until.getTime() ? hold.until.getTime() : byPolicy;
  return { windowMs: inForce, until: new Date(Math.max(byPolicy, byHold)) };
}
