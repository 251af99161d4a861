import { createHash, type Hash } from "node:crypto";

/**
 * The namespace of every event id shardledger derives deterministically. A fixed random UUID, so
 * ids never collide with v5 UUIDs another system derives from the same names.
 *
 * @example
 * ```ts
 * deterministicEventId(SHARDLEDGER_EVENT_NAMESPACE, "r1/3/0/-/SUCCEEDED")
 * ```
 */
export const SHARDLEDGER_EVENT_NAMESPACE = "3f0b7c52-8e1d-4a6f-9b2c-5d7e4a1c9f30";

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** SHA-1 states primed with each namespace's bytes; a publish derives one id per shard. */
const primed = new Map<string, Hash>();

function namespaceHash(namespace: string): Hash {
  let hash = primed.get(namespace);
  if (!hash) {
    if (!UUID_RE.test(namespace))
      throw new Error(`namespace must be a UUID (got ${JSON.stringify(namespace)})`);
    hash = createHash("sha1").update(Buffer.from(namespace.replaceAll("-", ""), "hex"));
    if (primed.size < 64) primed.set(namespace, hash);
  }
  return hash;
}

/**
 * An RFC 4122 version-5 UUID (SHA-1 of the namespace bytes followed by the UTF-8 name). The same
 * namespace and name always give the same id, so a report retried by a writer carries the same
 * idempotency key and the event log stores it once.
 *
 * @example
 * ```ts
 * deterministicEventId("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "www.example.com")
 * // "2ed6657d-e927-568b-95e1-2665a8aea6a2"
 * ```
 */
export function deterministicEventId(namespace: string, name: string): string {
  const bytes = namespaceHash(namespace).copy().update(name, "utf8").digest().subarray(0, 16);
  bytes[6] = ((bytes[6] as number) & 0x0f) | 0x50;
  bytes[8] = ((bytes[8] as number) & 0x3f) | 0x80;
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
