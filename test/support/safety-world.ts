/**
 * Where a safety history lives: a base location in a real object store (a directory on the
 * filesystem, or a prefix of an s3rver bucket) that holds the history's dataset roots and sentinel
 * objects. The test writes objects itself, as a writer would, with the modification time the test
 * clock says, and reads the store back directly (files on disk), never through the ledger.
 */
import { mkdir, readdir, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { DeleteObjectCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import { type ObjectStore, openObjectStore } from "../../src/index.js";
import type { S3rverHandle } from "./s3rver.js";

/**
 * One history's corner of a store. Base keys are relative to the history's base (`dsA/data/…`).
 *
 * @example
 * ```ts
 * const b = fsBackend("/dev/shm/x", "h1")
 * await b.write("sentinel/keep", "x", Date.now())
 * ```
 */
export interface StoreBackend {
  readonly kind: "fs" | "s3";
  /** The URL of a base key (a dataset root, or an object). */
  url(baseKey: string): string;
  /** Writes an object like a writer would, stamped `mtimeMs`; returns the time the store records. */
  write(baseKey: string, body: string, mtimeMs: number): Promise<number>;
  /** Every object under the base, listed now; bodies are read on demand. */
  snapshot(): Promise<StoreSnapshot>;
  read(baseKey: string): Promise<string | null>;
  /** The real store of a dataset root (the ledger's, before any fault wrapper). */
  store(rootUrl: string): ObjectStore;
  /** Deletes one object directly (only the oracle's self-test does, to show it is noticed). */
  remove(baseKey: string): Promise<void>;
  /** Removes the history's objects. */
  dispose(): Promise<void>;
}

/**
 * What exists under a history's base at one moment (the keys), with each object's body read the
 * first time it is asked for (most checks need existence only; reading every body each step
 * would cost more than the ledger's own work).
 *
 * @example
 * ```ts
 * const snap = await backend.snapshot()
 * if (snap.has("dsA/_CURRENT")) console.log(await snap.body("dsA/_CURRENT"))
 * ```
 */
export interface StoreSnapshot {
  readonly keys: ReadonlySet<string>;
  has(baseKey: string): boolean;
  /** The body, or null when the object is not in the snapshot (or went since). */
  body(baseKey: string): Promise<string | null>;
}

function snapshotOf(keys: string[], read: (baseKey: string) => Promise<string | null>): StoreSnapshot {
  const set = new Set(keys);
  const bodies = new Map<string, Promise<string | null>>();
  return {
    keys: set,
    has: (k) => set.has(k),
    body(k) {
      if (!set.has(k)) return Promise.resolve(null);
      let b = bodies.get(k);
      if (!b) {
        b = read(k);
        bodies.set(k, b);
      }
      return b;
    },
  };
}

const FS_TEMP = /^\.shardledger-tmp-/;

async function walk(dir: string, prefix: string, out: string[], suffix?: string): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    if (e.isDirectory()) await walk(path.join(dir, e.name), `${prefix}${e.name}/`, out, suffix);
    else if (suffix === undefined ? !FS_TEMP.test(e.name) : e.name.endsWith(suffix))
      out.push(prefix + (suffix === undefined ? e.name : e.name.slice(0, -suffix.length)));
  }
}

const readOrNull = (file: string): Promise<string | null> =>
  readFile(file, "utf8").catch((e: unknown) => {
    if ((e as { code?: string }).code === "ENOENT" || (e as { code?: string }).code === "ENOTDIR")
      return null;
    throw e;
  });

/**
 * A history on the local filesystem under `<scratch>/<id>`.
 *
 * @example
 * ```ts
 * const b = fsBackend(await scratchDir("safety"), "h1")
 * b.url("dsA") // "file:///dev/shm/shardledger-safety-…/h1/dsA"
 * ```
 */
export function fsBackend(scratch: string, id: string): StoreBackend {
  const base = path.join(scratch, id);
  const file = (baseKey: string) => path.join(base, ...baseKey.split("/"));
  return {
    kind: "fs",
    url: (baseKey) => `file://${base}/${baseKey}`,
    async write(baseKey, body, mtimeMs) {
      await mkdir(path.dirname(file(baseKey)), { recursive: true });
      await writeFile(file(baseKey), body);
      await utimes(file(baseKey), mtimeMs / 1000, mtimeMs / 1000);
      return mtimeMs;
    },
    async snapshot() {
      const keys: string[] = [];
      await walk(base, "", keys);
      return snapshotOf(keys, (k) => readOrNull(file(k)));
    },
    read: (baseKey) => readOrNull(file(baseKey)),
    remove: (baseKey) => rm(file(baseKey), { force: true }),
    store: (rootUrl) => openObjectStore(rootUrl),
    dispose: () => rm(base, { recursive: true, force: true }),
  };
}

const S3_SUFFIX = "._S3rver_object";

/** Waits (at most 5 s) until `file` exists and holds `bytes` bytes. */
async function writtenWhole(file: string, bytes: number): Promise<void> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const size = await stat(file).then(
      (s) => s.size,
      () => -1,
    );
    if (size === bytes) return;
    if (Date.now() > deadline)
      throw new Error(`s3rver did not finish writing ${file} (${size} of ${bytes} bytes)`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/**
 * A history under `s3://<bucket>/<id>` on s3rver: objects are PUT through the S3 API and read back
 * from s3rver's files. s3rver reports the file's mtime (to the second) as LastModified, so a write
 * is stamped with the next whole second: never older than the clock says.
 *
 * @example
 * ```ts
 * const b = s3Backend(s3, "lake", "h7")
 * b.url("dsA") // "s3://lake/h7/dsA"
 * ```
 */
export function s3Backend(s3: S3rverHandle, bucket: string, id: string): StoreBackend {
  const dir = path.join(s3.directory, bucket, id);
  const file = (baseKey: string) => path.join(dir, ...baseKey.split("/")) + S3_SUFFIX;
  return {
    kind: "s3",
    url: (baseKey) => `s3://${bucket}/${id}/${baseKey}`,
    async write(baseKey, body, mtimeMs) {
      await s3.client.send(new PutObjectCommand({ Bucket: bucket, Key: `${id}/${baseKey}`, Body: body }));
      // s3rver answers a PUT before its file is written (it ends an fs write stream without waiting
      // for it): under load the file was not there yet (ENOENT), or its write would land after our
      // stamp. Stamp it once it holds the whole body.
      await writtenWhole(file(baseKey), Buffer.byteLength(body));
      const stamp = Math.ceil(mtimeMs / 1000);
      await utimes(file(baseKey), stamp, stamp);
      return stamp * 1000;
    },
    async snapshot() {
      const keys: string[] = [];
      await walk(dir, "", keys, S3_SUFFIX);
      return snapshotOf(keys, (k) => readOrNull(file(k)));
    },
    read: (baseKey) => readOrNull(file(baseKey)),
    async remove(baseKey) {
      await s3.client.send(new DeleteObjectCommand({ Bucket: bucket, Key: `${id}/${baseKey}` }));
    },
    store: (rootUrl) => openObjectStore(rootUrl, { s3: { client: s3.client } }),
    dispose: () => rm(dir, { recursive: true, force: true }),
  };
}
