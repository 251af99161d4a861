/**
 * A real S3-protocol server for tests: s3rver 3.7 on 127.0.0.1, a random port, a fresh temporary
 * directory (see {@link scratchDir}). s3rver signs ListObjectsV2 continuation tokens with DES, which Node 20's OpenSSL 3
 * only offers under `--openssl-legacy-provider` (vitest.config.ts passes it to the test workers;
 * a script outside vitest must pass it to node itself).
 *
 * s3rver does not check SigV4 signatures or payload checksums, and it ignores `If-None-Match` on
 * PUT (it overwrites), so conditional writes are only as good as the store's HEAD-before-PUT.
 */
import { createHash } from "node:crypto";
import { access, constants, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { S3Client } from "@aws-sdk/client-s3";

// The SDK warns once per process that it will need Node 22 from 2027; that is noise in test output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";

interface S3rverOptions {
  address: string;
  port: number;
  silent: boolean;
  directory: string;
  configureBuckets: { name: string }[];
}
interface S3rverInstance {
  run(): Promise<{ address: string; port: number }>;
  close(): Promise<void>;
}
const require = createRequire(import.meta.url);
// s3rver ships no type declarations; this is the little of it the tests use.
const S3rver = require("s3rver") as new (options: S3rverOptions) => S3rverInstance;

interface FilesystemStorePrototype {
  deleteObject(bucket: string, key: string): Promise<void>;
  __shardledgerPatched?: true;
}
const storePrototype = (require("s3rver/lib/stores/filesystem") as { prototype: FilesystemStorePrototype })
  .prototype;
if (!storePrototype.__shardledgerPatched) {
  // s3rver's DeleteObjects deletes all keys concurrently, and each deletion then removes the
  // directories it emptied (readdirSync + rmdir). Two deletions in one directory race: the loser
  // gets ENOENT/ENOTEMPTY *after* its object is gone, and the whole batch turns into a 500
  // InternalError. Real S3 has no directories; swallowing that cleanup race is faithful to it.
  const deleteObject = storePrototype.deleteObject;
  storePrototype.deleteObject = async function (this: unknown, bucket: string, key: string) {
    try {
      await deleteObject.call(this, bucket, key);
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      if (code !== "ENOENT" && code !== "ENOTEMPTY") throw e;
    }
  };
  storePrototype.__shardledgerPatched = true;
}

/**
 * The credentials s3rver knows (its built-in dummy account). Not frozen: the SDK tags the
 * credentials object it is given, so pass a copy.
 *
 * @example
 * ```ts
 * new S3Client({ endpoint, forcePathStyle: true, region: "us-east-1", credentials: { ...S3RVER_CREDENTIALS } })
 * ```
 */
export const S3RVER_CREDENTIALS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" } as const;

/** s3rver's on-disk suffix for an object's file, checksum and metadata. */
const OBJECT_SUFFIX = "._S3rver_object";

/**
 * A running s3rver. `seed` writes objects straight into s3rver's on-disk layout (thousands per
 * second, where HTTP PUTs manage ~200/s); `keysOnDisk` reads them back the same way, so a test can
 * check what really exists without going through the S3 API it is testing.
 *
 * On disk, key `a/b/c` of bucket `lake` is `<directory>/lake/a/b/c._S3rver_object`, with its MD5
 * (hex) in `c._S3rver_object.md5` and its stored headers in `c._S3rver_metadata.json`.
 *
 * @example
 * ```ts
 * await s3.seed("lake", keys, (key) => `body of ${key}`)
 * expect(await s3.keysOnDisk("lake", "events/data/r1/")).toEqual([])
 * ```
 */
export interface S3rverHandle {
  /** `http://127.0.0.1:<port>` */
  readonly endpoint: string;
  readonly port: number;
  /** s3rver's data directory: `<directory>/<bucket>/…`. */
  readonly directory: string;
  /** A path-style client with s3rver's credentials, region us-east-1, no SDK retries. */
  readonly client: S3Client;
  /**
   * Writes objects without going through HTTP. The body is the given one (or the one the function
   * returns for the key), else the key itself.
   */
  seed(
    bucket: string,
    keys: readonly string[],
    body?: string | Uint8Array | ((key: string) => string | Uint8Array),
  ): Promise<void>;
  /** Every key stored in the bucket under `prefix`, sorted, read from disk. */
  keysOnDisk(bucket: string, prefix?: string): Promise<string[]>;
  /** Stops the server, destroys the client, removes the directory. */
  stop(): Promise<void>;
}

let scratchBase: Promise<string> | undefined;

/**
 * A fresh temporary directory for bulk fixtures: under SHARDLEDGER_TEST_TMPDIR when set, else
 * /dev/shm when it is writable (tmpfs: creating thousands of small files there is ~15× faster
 * than on a disk-backed /tmp), else the OS temp directory. The caller removes it.
 *
 * @example
 * ```ts
 * const dir = await scratchDir("fs-store")
 * await rm(dir, { recursive: true, force: true })
 * ```
 */
export function scratchDir(label: string): Promise<string> {
  scratchBase ??= (async () => {
    if (process.env.SHARDLEDGER_TEST_TMPDIR) return process.env.SHARDLEDGER_TEST_TMPDIR;
    try {
      await access("/dev/shm", constants.W_OK);
      return "/dev/shm";
    } catch {
      return tmpdir();
    }
  })();
  return scratchBase.then((base) => mkdtemp(path.join(base, `shardledger-${label}-`)));
}

/**
 * A path-style S3 client for a local endpoint (s3rver or a proxy in front of it).
 *
 * @example
 * ```ts
 * const client = createTestS3Client("http://127.0.0.1:4568")
 * ```
 */
export function createTestS3Client(endpoint: string, options: { requestTimeoutMs?: number } = {}): S3Client {
  return new S3Client({
    endpoint,
    forcePathStyle: true,
    region: "us-east-1",
    credentials: { ...S3RVER_CREDENTIALS },
    maxAttempts: 1,
    requestHandler: { requestTimeout: options.requestTimeoutMs ?? 10_000, throwOnRequestTimeout: true },
  });
}

/**
 * Starts s3rver with the given buckets.
 *
 * @example
 * ```ts
 * const s3 = await startS3rver({ buckets: ["lake"] })
 * await s3.seed("lake", ["events/data/r1/shard=00000/attempt=00/part-0"])
 * const store = createS3ObjectStore("s3://lake/events", { client: s3.client })
 * await s3.stop()
 * ```
 */
export async function startS3rver(options: { buckets: readonly string[] }): Promise<S3rverHandle> {
  const directory = await scratchDir("s3rver");
  const server = new S3rver({
    address: "127.0.0.1",
    port: 0,
    silent: true,
    directory,
    configureBuckets: options.buckets.map((name) => ({ name })),
  });
  const { port } = await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  const client = createTestS3Client(endpoint);

  const createdDirs = new Set<string>();
  const seedOne = async (bucket: string, key: string, body: string | Uint8Array) => {
    const parts = key.split("/");
    if (parts.some((p) => p === "" || p === "." || p === "..")) throw new Error(`seed: unsafe key ${key}`);
    const last = parts.pop()!;
    const dir = path.join(directory, bucket, ...parts);
    if (!createdDirs.has(dir)) {
      await mkdir(dir, { recursive: true });
      createdDirs.add(dir);
    }
    const objectPath = path.join(dir, `${last}${OBJECT_SUFFIX}`);
    const md5 = createHash("md5").update(body).digest("hex");
    await Promise.all([
      writeFile(objectPath, body),
      writeFile(`${objectPath}.md5`, md5),
      writeFile(
        path.join(dir, `${last}._S3rver_metadata.json`),
        JSON.stringify({ "content-type": "application/octet-stream" }),
      ),
    ]);
  };

  return {
    endpoint,
    port,
    directory,
    client,
    async seed(bucket, keys, body) {
      const queue = [...keys];
      const worker = async () => {
        for (let key = queue.shift(); key !== undefined; key = queue.shift()) {
          await seedOne(bucket, key, typeof body === "function" ? body(key) : (body ?? key));
        }
      };
      await Promise.all(Array.from({ length: 32 }, worker));
    },
    async keysOnDisk(bucket, prefix = "") {
      const keys: string[] = [];
      const walk = async (dir: string, keyPrefix: string): Promise<void> => {
        const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
        for (const e of entries) {
          if (e.isDirectory()) await walk(path.join(dir, e.name), `${keyPrefix}${e.name}/`);
          else if (e.name.endsWith(OBJECT_SUFFIX))
            keys.push(keyPrefix + e.name.slice(0, -OBJECT_SUFFIX.length));
        }
      };
      await walk(path.join(directory, bucket), "");
      return keys.filter((k) => k.startsWith(prefix)).sort();
    },
    async stop() {
      client.destroy();
      await server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}
