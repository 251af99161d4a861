import { createHash } from "node:crypto";

/**
 * A 64-bit advisory-lock key for a purpose within one ledger schema, as a decimal string (bigint
 * in SQL). Hashing keeps keys of different schemas and purposes apart without a registry table.
 *
 * @example
 * ```ts
 * advisoryKey("shardledger", "positions") // "-4215…"
 * ```
 */
export function advisoryKey(schema: string, purpose: string): string {
  const digest = createHash("sha256").update(`shardledger\0${schema}\0${purpose}`).digest();
  return digest.readBigInt64BE(0).toString();
}

/**
 * How `pg_locks` shows a session advisory lock taken with a single bigint key: the high 32 bits
 * as `classid`, the low 32 bits as `objid` (both unsigned, as decimal strings) and `objsubid` 1.
 * Used to ask whether a given backend holds the lock, or which one does.
 *
 * @example
 * ```ts
 * const { classid, objid } = advisoryLockIds(advisoryKey("shardledger", "maintenance:sales"))
 * // SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1
 * ```
 */
export function advisoryLockIds(key: string): { classid: string; objid: string } {
  const k = BigInt.asUintN(64, BigInt(key));
  return { classid: (k >> 32n).toString(), objid: (k & 0xffffffffn).toString() };
}
