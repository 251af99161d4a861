import { formatDuration } from "../datasets/duration.js";
import type { SafetyWindowHold } from "../datasets/safety-window.js";
import type { DatasetView } from "../projections/views.js";
import type { DatasetStatus } from "./open-ledger.js";

/**
 * The JSON shapes of a dataset and of its status, as the CLI's `--json` prints them and the HTTP
 * API answers them (one definition for both): the library's views with each policy duration also
 * as text under the flag's name (`retention: "30d"` beside `retentionMs`).
 */

/**
 * The dataset as `dataset create --json` and `datasets --json` print it: the library's
 * DatasetView, with each policy duration also as text under the flag's name (`retention: "30d"`
 * beside `retentionMs: 2592000000`), so the output reads like the command that made it.
 *
 * @example `io.stdout.write(toJsonDocument(datasetJson(view)))`
 */
export interface DatasetJson extends Omit<DatasetView, "policies" | "safetyWindowHold"> {
  policies: DatasetView["policies"] & {
    retention: string;
    failedRetention: string;
    staleAfter: string;
    safetyWindow: string;
  };
  /** The longer safety window still in force after a change shortened it (`dataset update`), or null. */
  safetyWindowHold: HoldJson | null;
}

/**
 * A safety-window hold with its window as text too.
 *
 * @example `const hold: HoldJson = { window: "1h", windowMs: 3600000, until: new Date() }`
 */
interface HoldJson {
  window: string;
  windowMs: number;
  until: Date;
}

/** @example `holdJson({ windowMs: 3_600_000, until }) // { window: "1h", windowMs: 3600000, until }` */
function holdJson(hold: SafetyWindowHold | null | undefined): HoldJson | null {
  return hold ? { window: policyDuration(hold.windowMs), windowMs: hold.windowMs, until: hold.until } : null;
}

/**
 * @example
 * ```ts
 * datasetJson(await ledger.dataset("events")).policies.retention // "30d"
 * ```
 */
export function datasetJson(view: DatasetView): DatasetJson {
  const p = view.policies;
  return {
    ...view,
    safetyWindowHold: holdJson(view.safetyWindowHold),
    policies: policiesJson(p),
  };
}

/** The policies with each duration as text beside its milliseconds (one shape for both views). */
function policiesJson<P extends DatasetView["policies"]>(p: P) {
  return {
    keepRuns: p.keepRuns,
    retention: policyDuration(p.retentionMs),
    failedRetention: policyDuration(p.failedRetentionMs),
    staleAfter: policyDuration(p.staleAfterMs),
    safetyWindow: policyDuration(p.safetyWindowMs),
    retentionMs: p.retentionMs,
    failedRetentionMs: p.failedRetentionMs,
    staleAfterMs: p.staleAfterMs,
    safetyWindowMs: p.safetyWindowMs,
  };
}

/**
 * A policy duration as text in the units the flags are documented with (`30s`, `15m`, `12h`,
 * `7d`): whole days stay days, so `--retention 14d` reads back as `14d` (not `2w`).
 *
 * @example `policyDuration(14 * 86_400_000) // "14d"`
 */
function policyDuration(ms: number): string {
  const day = 86_400_000;
  return ms > 0 && ms % day === 0 ? `${ms / day}d` : formatDuration(ms);
}

/**
 * A dataset's status as `status --json` prints it: the library's {@link DatasetStatus} with each
 * policy duration also as text (`retention: "30d"` beside `retentionMs`), as `dataset create` does.
 *
 * @example `const s: StatusJson = statusJson(await ledger.status("events"))`
 */
export interface StatusJson extends Omit<DatasetStatus, "policies" | "safetyWindowHold"> {
  policies: DatasetStatus["policies"] & {
    retention: string;
    failedRetention: string;
    staleAfter: string;
    safetyWindow: string;
  };
  safetyWindowHold: HoldJson | null;
}

/** @example `statusJson(await ledger.status("events")).policies.retention // "30d"` */
export function statusJson(s: DatasetStatus): StatusJson {
  const p = s.policies;
  return {
    ...s,
    policies: policiesJson(p),
    safetyWindowHold: holdJson(s.safetyWindowHold),
  };
}
