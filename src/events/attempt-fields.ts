import { ID_PATTERN } from "./id-rule.js";

/*
 * The attempt fields' rules as plain code, for the shape nearly every report has: what zod would
 * answer for it, or `undefined` for "ask zod". zod stays the authority — anything unusual (a
 * bigint or an 19-digit taskAttemptId, a key present with `undefined`, an unknown key, any invalid
 * value) goes to the schema, which also names the field of an error. A batch of 1,000 reports
 * parsed every report twice with zod (the library's input, then the event's data): 4.6 µs and
 * 1.9 µs of the HTTP batch path's ~65 µs per report on the 2026-12-01 host. That each answer here
 * is exactly zod's (same value, same keys) is a property test (test/property/attempt-fields.test.ts).
 */

/** A plain object (what JSON.parse makes, or a literal), walked by its own enumerable keys. */
export function isPlainRecord(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Whether every key of `record` is one of `allowed` (zod's strict objects refuse the others). */
export function onlyKeys(record: Record<string, unknown>, allowed: ReadonlySet<string>): boolean {
  for (const key in record) if (!allowed.has(key)) return false;
  return true;
}

/** `idSchema`'s rule. */
export function isId(value: unknown): value is string {
  return typeof value === "string" && ID_PATTERN.test(value) && !value.includes("..");
}

/** `shardSchema`'s rule. */
export function isShard(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= 10_000_000;
}

/** `attemptNumberSchema`'s rule. */
export function isAttemptNumber(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= 1_000_000;
}

/** `urlSchema`'s rule. */
export function isUrlText(value: unknown): value is string {
  return typeof value === "string" && value.length >= 1 && value.length <= 4096;
}

/**
 * A taskAttemptId's canonical decimal string, for the spellings that need no BigInt: a decimal
 * string of at most 18 digits without a leading zero (below 2^63 whatever the digits), or a
 * non-negative safe integer. `undefined` for anything else (zod decides: it may still accept it).
 */
export function simpleTaskAttemptId(value: unknown): string | undefined {
  if (typeof value === "string") return /^(?:0|[1-9]\d{0,17})$/.test(value) ? value : undefined;
  if (typeof value === "number") return Number.isSafeInteger(value) && value >= 0 ? String(value) : undefined;
  return undefined;
}

const REF_KEYS: ReadonlySet<string> = new Set(["runId", "shard", "attempt", "taskAttemptId", "url"]);
const FAILED_KEYS: ReadonlySet<string> = new Set([...REF_KEYS, "error"]);

/** The data of an AttemptStarted/AttemptSucceeded/AttemptFailed event (`withError`: the failed one). */
export interface AttemptData {
  runId: string;
  shard: number;
  attempt: number;
  taskAttemptId: string | null;
  url: string | null;
  error?: string;
}

/**
 * What the catalogue's schema of an attempt event's data answers for `data`, or `undefined`:
 * all five fields present (`taskAttemptId` and `url` may be null), `error` too when `withError`.
 */
export function acceptAttemptData(data: unknown, withError: boolean): AttemptData | undefined {
  if (!isPlainRecord(data) || !onlyKeys(data, withError ? FAILED_KEYS : REF_KEYS)) return undefined;
  const { runId, shard, attempt, taskAttemptId, url } = data;
  if (!isId(runId) || !isShard(shard) || !isAttemptNumber(attempt)) return undefined;
  const id = taskAttemptId === null ? null : simpleTaskAttemptId(taskAttemptId);
  if (id === undefined || (url !== null && !isUrlText(url))) return undefined;
  const accepted: AttemptData = { runId, shard, attempt, taskAttemptId: id, url: url as string | null };
  if (withError) {
    const { error } = data;
    if (typeof error !== "string" || error.length > 8192) return undefined;
    accepted.error = error;
  }
  return accepted;
}
