/**
 * The object-store contract: the same cases over the filesystem store (a temp directory) and the
 * S3 store (s3rver behind the fault proxy, which counts requests). Bulk fixtures are written
 * straight to disk on both, so 2,500-key cases take milliseconds to set up.
 */
import { existsSync } from "node:fs";
import { mkdir, readdir, rm, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createFilesystemObjectStore } from "../../src/adapters/objectstore/filesystem-object-store.js";
import { createS3ObjectStore } from "../../src/adapters/objectstore/s3-object-store.js";
import { isSafetyRailError } from "../../src/errors.js";
import { parseDatasetRoot } from "../../src/storage/dataset-url.js";
import { compareKeys, type ObjectStore, ObjectStoreError } from "../../src/storage/object-store.js";
import { type S3FaultProxy, startS3FaultProxy } from "../support/s3-fault-proxy.js";
import { type S3rverHandle, scratchDir, startS3rver } from "../support/s3rver.js";

const BUCKET = "lake";

/** One store under test, on a root of its own. */
interface Subject {
  store: ObjectStore;
  /** Writes objects under the root without going through the store. */
  seed(keys: readonly string[]): Promise<void>;
  /** Root-relative keys that really exist, read without going through the store. */
  existing(): Promise<string[]>;
  /** Objects written just outside the root (a sibling sharing the root as a string prefix). */
  seedSibling(keys: readonly string[]): Promise<void>;
  siblingExisting(): Promise<string[]>;
  /** Requests sent to the backend so far (0 for the filesystem). */
  requests(): number;
  /** DeleteObjects requests sent so far (S3 only). */
  batchDeletes(): number;
}

interface Backend {
  name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  subject(): Promise<Subject>;
}

let counter = 0;
const nextName = () => `t${++counter}`;

async function walkFiles(dir: string, prefix = ""): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  const out: string[] = [];
  for (const e of entries) {
    if (e.isDirectory()) out.push(...(await walkFiles(path.join(dir, e.name), `${prefix}${e.name}/`)));
    else if (e.isFile()) out.push(prefix + e.name);
  }
  return out.sort(compareKeys);
}

async function writeFiles(dir: string, keys: readonly string[]): Promise<void> {
  const dirs = new Set(keys.map((k) => path.dirname(path.join(dir, k))));
  for (const d of dirs) await mkdir(d, { recursive: true });
  await Promise.all(keys.map((k) => writeFile(path.join(dir, k), k)));
}

const filesystem = (() => {
  let base = "";
  return {
    name: "filesystem",
    async start() {
      base = await scratchDir("fs-store");
    },
    async stop() {
      await rm(base, { recursive: true, force: true });
    },
    async subject(): Promise<Subject> {
      const name = nextName();
      const dir = path.join(base, name);
      const siblingDir = path.join(base, `${name}x`);
      return {
        store: createFilesystemObjectStore(`file://${dir}`),
        seed: (keys) => writeFiles(dir, keys),
        existing: () => walkFiles(dir),
        seedSibling: (keys) => writeFiles(siblingDir, keys),
        siblingExisting: () => walkFiles(siblingDir),
        requests: () => 0,
        batchDeletes: () => 0,
      };
    },
  } satisfies Backend;
})();

const s3 = (() => {
  let server: S3rverHandle;
  let proxy: S3FaultProxy;
  const total = () => Object.values(proxy.counts).reduce((a, b) => a + b, 0);
  return {
    name: "s3",
    async start() {
      server = await startS3rver({ buckets: [BUCKET] });
      proxy = await startS3FaultProxy({ target: server.endpoint });
    },
    async stop() {
      await proxy?.stop();
      await server?.stop();
    },
    async subject(): Promise<Subject> {
      const name = nextName();
      const rel = (prefix: string) => async () =>
        (await server.keysOnDisk(BUCKET, prefix)).map((k) => k.slice(prefix.length)).sort(compareKeys);
      return {
        store: createS3ObjectStore(`s3://${BUCKET}/${name}`, { client: proxy.client }),
        seed: (keys) =>
          server.seed(
            BUCKET,
            keys.map((k) => `${name}/${k}`),
            (full) => full.slice(name.length + 1),
          ),
        existing: rel(`${name}/`),
        seedSibling: (keys) =>
          server.seed(
            BUCKET,
            keys.map((k) => `${name}x/${k}`),
          ),
        siblingExisting: rel(`${name}x/`),
        requests: total,
        batchDeletes: () => proxy.counts.DeleteObjects,
      };
    },
  } satisfies Backend;
})();

/** 2,500 keys in 500 shard directories, the layout writers produce. */
const bulkKeys = (run: string) =>
  Array.from(
    { length: 2500 },
    (_, i) =>
      `data/${run}/shard=${String(Math.floor(i / 5)).padStart(5, "0")}/attempt=00/part-${i % 5}.parquet`,
  );

const text = (bytes: Uint8Array | null) => (bytes === null ? null : new TextDecoder().decode(bytes));

for (const backend of [filesystem, s3]) {
  describe(`object store contract: ${backend.name}`, () => {
    beforeAll(() => backend.start());
    afterAll(() => backend.stop());

    it("puts and gets strings and bytes, overwrites whole objects, and returns null when absent", async () => {
      const { store } = await backend.subject();
      expect(await store.get("manifests/r1.json")).toBeNull();
      await store.put("manifests/r1.json", '{"runId":"r1"}', { contentType: "application/json" });
      expect(text(await store.get("manifests/r1.json"))).toBe('{"runId":"r1"}');
      await store.put("manifests/r1.json", "second");
      expect(text(await store.get("manifests/r1.json"))).toBe("second");
      const bytes = new Uint8Array([0, 1, 2, 255, 128]);
      await store.put("data/r1/bin", bytes);
      expect([...((await store.get("data/r1/bin")) ?? [])]).toEqual([0, 1, 2, 255, 128]);
      expect(await store.get("data/r1")).toBeNull();
    });

    it("ifAbsent writes a new key and refuses an existing one, leaving it untouched", async () => {
      const { store } = await backend.subject();
      await store.put("_CURRENT", "r1", { ifAbsent: true });
      const refused = await store.put("_CURRENT", "r2", { ifAbsent: true }).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(ObjectStoreError);
      expect(refused).toMatchObject({ storeCode: "PreconditionFailed", transient: false, key: "_CURRENT" });
      expect(text(await store.get("_CURRENT"))).toBe("r1");
    });

    it("lists root-relative keys in order, page by page, over more than 1000 keys", async () => {
      const subject = await backend.subject();
      const keys = bulkKeys("r1");
      await subject.seed(keys);

      const pages: string[][] = [];
      let token: string | null = null;
      do {
        const page = await subject.store.list("data/r1/", { pageSize: 1000, token });
        pages.push(page.objects.map((o) => o.key));
        for (const o of page.objects) {
          expect(o.size).toBe(o.key.length);
          expect(o.lastModified).toBeInstanceOf(Date);
        }
        token = page.nextToken;
      } while (token !== null && pages.length < 10);
      expect(pages.map((p) => p.length)).toEqual([1000, 1000, 500]);
      expect(pages.flat()).toEqual([...keys].sort(compareKeys));

      const first = await subject.store.list("data/r1/", { pageSize: 700 });
      expect(first.objects.map((o) => o.key)).toEqual([...keys].sort(compareKeys).slice(0, 700));
      expect(first.nextToken).not.toBeNull();
    });

    it("lists only what lies under the root and the prefix, with root-relative keys", async () => {
      const subject = await backend.subject();
      await subject.seed(["data/r1/a", "data/r1/b/c", "data/r10/a", "manifests/r1.json", "_CURRENT"]);
      await subject.seedSibling(["data/r1/a", "outside"]);
      const keys = async (prefix: string) => (await subject.store.list(prefix)).objects.map((o) => o.key);
      expect(await keys("")).toEqual([
        "_CURRENT",
        "data/r1/a",
        "data/r1/b/c",
        "data/r10/a",
        "manifests/r1.json",
      ]);
      expect(await keys("data/r1/")).toEqual(["data/r1/a", "data/r1/b/c"]);
      expect(await keys("data/r1")).toEqual(["data/r1/a", "data/r1/b/c", "data/r10/a"]);
      expect(await keys("manifests/r")).toEqual(["manifests/r1.json"]);
    });

    it("lists nothing for an absent prefix and refuses an unsafe one before any request", async () => {
      const subject = await backend.subject();
      expect(await subject.store.list("data/nothing/")).toEqual({ objects: [], nextToken: null });
      const before = subject.requests();
      for (const prefix of ["../", "/data", "data//r1", "data/../"]) {
        await expect(subject.store.list(prefix)).rejects.toSatisfy(isSafetyRailError);
      }
      expect(subject.requests()).toBe(before);
    });

    it("deletes 2,500 keys in batches of at most 1000 and leaves everything else", async () => {
      const subject = await backend.subject();
      const keys = bulkKeys("r2");
      await subject.seed([...keys, "manifests/r2.json", "data/r3/shard=00000/attempt=00/part-0.parquet"]);
      const batchesBefore = subject.batchDeletes();

      const outcome = await subject.store.deleteMany(keys);

      expect(outcome.errors).toEqual([]);
      expect(outcome.deleted).toHaveLength(2500);
      expect(new Set(outcome.deleted)).toEqual(new Set(keys));
      if (backend.name === "s3") expect(subject.batchDeletes() - batchesBefore).toBe(3);
      expect(await subject.existing()).toEqual([
        "data/r3/shard=00000/attempt=00/part-0.parquet",
        "manifests/r2.json",
      ]);
      expect(await subject.store.list("data/r2/")).toEqual({ objects: [], nextToken: null });
    });

    it("counts deleting missing keys as success", async () => {
      const subject = await backend.subject();
      await subject.seed(["data/r1/a"]);
      const outcome = await subject.store.deleteMany(["data/r1/a", "data/r1/gone", "never/was/here"]);
      expect(outcome).toEqual({ deleted: ["data/r1/a", "data/r1/gone", "never/was/here"], errors: [] });
      expect(await subject.store.deleteMany(["data/r1/a"])).toEqual({ deleted: ["data/r1/a"], errors: [] });
      expect(await subject.existing()).toEqual([]);
    });

    it("refuses keys outside the root before any request and deletes nothing", async () => {
      const subject = await backend.subject();
      await subject.seed(["data/r1/a", "_CURRENT"]);
      await subject.seedSibling(["data/r1/a"]);
      const before = subject.requests();
      const escapes = [
        "../t0x/data/r1/a",
        "data/../../x",
        "data/../_CURRENT",
        "data//r1/a",
        "/data/r1/a",
        "data\\..\\_CURRENT",
        "data/./r1/a",
        "",
      ];
      for (const key of escapes) {
        await expect(subject.store.deleteMany(["data/r1/a", key])).rejects.toSatisfy(isSafetyRailError);
        await expect(subject.store.put(key, "x")).rejects.toSatisfy(isSafetyRailError);
        await expect(subject.store.get(key)).rejects.toSatisfy(isSafetyRailError);
      }
      expect(subject.requests()).toBe(before);
      expect(await subject.existing()).toEqual(["_CURRENT", "data/r1/a"]);
      expect(await subject.siblingExisting()).toEqual(["data/r1/a"]);
    });

    it("reports the normalised root URL", async () => {
      const { store } = await backend.subject();
      expect(store.rootUrl).toBe(parseDatasetRoot(store.rootUrl).url);
      expect(store.rootUrl.endsWith("/")).toBe(false);
    });
  });
}

describe("filesystem object store specifics", () => {
  let base = "";
  beforeAll(async () => {
    base = await scratchDir("fs-only");
  });
  afterAll(() => rm(base, { recursive: true, force: true }));

  it("lists in UTF-8 byte order even where directory order differs ('a-b' < 'a/x')", async () => {
    const dir = path.join(base, "order");
    const keys = ["a/x", "a-b", "a0", "b", "a/y/z", "é", "😀", "\uffff"];
    await writeFiles(dir, keys);
    const store = createFilesystemObjectStore(`file://${dir}`);
    const all = (await store.list("")).objects.map((o) => o.key);
    expect(all).toEqual([...keys].sort(compareKeys));
    expect(all.slice(0, 4)).toEqual(["a-b", "a/x", "a/y/z", "a0"]);
    const paged: string[] = [];
    let token: string | null = null;
    do {
      const page = await store.list("", { pageSize: 1, token });
      paged.push(...page.objects.map((o) => o.key));
      token = page.nextToken;
    } while (token !== null);
    expect(paged).toEqual(all);
    expect((await store.list("a/")).objects.map((o) => o.key)).toEqual(["a/x", "a/y/z"]);
    expect((await store.list("a")).objects.map((o) => o.key)).toEqual(["a-b", "a/x", "a/y/z", "a0"]);
  });

  it("removes the directories a delete emptied, up to but not including the root", async () => {
    const dir = path.join(base, "prune");
    await writeFiles(dir, [
      "data/r1/shard=00000/attempt=00/p",
      "data/r1/shard=00001/attempt=00/p",
      "data/r2/q",
    ]);
    const store = createFilesystemObjectStore(`file://${dir}`);
    await store.deleteMany(["data/r1/shard=00000/attempt=00/p", "data/r1/shard=00001/attempt=00/p"]);
    expect(existsSync(path.join(dir, "data/r1"))).toBe(false);
    expect(existsSync(path.join(dir, "data/r2/q"))).toBe(true);
    await store.deleteMany(["data/r2/q"]);
    expect(existsSync(path.join(dir, "data"))).toBe(false);
    expect(existsSync(dir)).toBe(true);
  });

  it("never lists its temporary files and refuses keys that look like them", async () => {
    const dir = path.join(base, "temp");
    await writeFiles(dir, ["data/a", "data/.shardledger-tmp-0123456789abcdef"]);
    const store = createFilesystemObjectStore(`file://${dir}`);
    expect((await store.list("")).objects.map((o) => o.key)).toEqual(["data/a"]);
    await expect(store.put("data/.shardledger-tmp-0123456789abcdef", "x")).rejects.toMatchObject({
      storeCode: "InvalidKey",
    });
  });

  it("refuses to read, write or delete through a symbolic link that leaves the root", async () => {
    const dir = path.join(base, "links");
    const outside = path.join(base, "outside");
    await writeFiles(outside, ["secret", "victim"]);
    await mkdir(dir, { recursive: true });
    await symlink(outside, path.join(dir, "escape"));
    await symlink(path.join(outside, "secret"), path.join(dir, "secret-link"));
    const store = createFilesystemObjectStore(`file://${dir}`);
    await expect(store.get("escape/secret")).rejects.toSatisfy(isSafetyRailError);
    await expect(store.get("secret-link")).rejects.toSatisfy(isSafetyRailError);
    await expect(store.put("escape/new/deeper/x", "x")).rejects.toSatisfy(isSafetyRailError);
    expect(existsSync(path.join(outside, "new"))).toBe(false);
    await expect(store.deleteMany(["escape/victim"])).rejects.toSatisfy(isSafetyRailError);
    expect((await store.list("")).objects).toEqual([]);
    expect(await walkFiles(outside)).toEqual(["secret", "victim"]);
  });

  it("reports a key it cannot delete as a per-key failure beside the keys it deleted", async () => {
    const dir = path.join(base, "per-key");
    await writeFiles(dir, ["data/a", "data/b"]);
    const store = createFilesystemObjectStore(`file://${dir}`);
    const tooLong = `data/${"x".repeat(300)}`;
    const outcome = await store.deleteMany(["data/a", tooLong, "data/b"]);
    expect(outcome.deleted).toEqual(["data/a", "data/b"]);
    expect(outcome.errors).toEqual([
      { key: tooLong, code: "KeyTooLong", message: expect.any(String), transient: false },
    ]);
  });

  it("reports a key that collides with a directory as a permanent failure, not a success", async () => {
    const dir = path.join(base, "collide");
    await writeFiles(dir, ["data/r1/a"]);
    const store = createFilesystemObjectStore(`file://${dir}`);
    await expect(store.put("data/r1", "x")).rejects.toMatchObject({
      storeCode: "KeyConflict",
      transient: false,
    });
    expect(await store.get("data/r1")).toBeNull();
  });
});
