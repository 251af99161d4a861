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
