/**
 * deletePrefix against a real S3-protocol server (s3rver) behind the fault proxy, and against the
 * filesystem store. Every scenario seeds siblings that share a string prefix with the target
 * (`attempt=010`, `attempt=01-7`, `attempt=01.crc`), a winner, a manifest and `_CURRENT`, and checks
 * they are all still there afterwards. Backoff waits are recorded, not slept.
 */
import { mkdir, readdir, rm, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createFilesystemObjectStore } from "../../src/adapters/objectstore/filesystem-object-store.js";
import { createS3ObjectStore } from "../../src/adapters/objectstore/s3-object-store.js";
import { isSafetyRailError } from "../../src/errors.js";
import { deletePrefix } from "../../src/maintenance/prefix-deleter.js";
import { backoffCap, type RetryPolicy } from "../../src/maintenance/retry-policy.js";
import type { ObjectStore } from "../../src/storage/object-store.js";
import { useS3WithFaultProxy } from "../support/s3-with-proxy.js";
import { scratchDir } from "../support/s3rver.js";

const BUCKET = "lake";
const TARGET = "data/r1/shard=00000/attempt=01/";
const SIBLINGS = [
  "_CURRENT",
  "data/r1/shard=00000/attempt=0/part-0",
  "data/r1/shard=00000/attempt=00/part-0",
  "data/r1/shard=00000/attempt=01-7/part-0",
  "data/r1/shard=00000/attempt=01.crc",
  "data/r1/shard=00000/attempt=010/part-0",
  "data/r1/shard=00000/attempt=010/sub/part-1",
  "manifests/r1.json",
].sort();
const POLICY: RetryPolicy = { maxTries: 4, baseDelayMs: 100, maxDelayMs: 300 };
/** With random() = 0.5, the waits after tries 1, 2, 3 are half of 100, 200, 300. */
const HALF_DELAYS = [50, 100, 150];

const targetKeys = (n: number, dir = "") =>
  Array.from({ length: n }, (_, i) => `${TARGET}${dir}part-${String(i).padStart(5, "0")}`);

function recorder() {
  const delays: number[] = [];
  return { delays, sleep: async (ms: number) => void delays.push(ms), random: () => 0.5 };
}

describe("on S3 (s3rver behind the fault proxy)", () => {
  const env = useS3WithFaultProxy([BUCKET]);
  let n = 0;

  /** A fresh root with the siblings and `keys` stored under it; counters start at zero. */
  async function fixture(keys: readonly string[]) {
    const base = `t${++n}`;
    await env.s3.seed(
      BUCKET,
      [...SIBLINGS, ...keys].map((k) => `${base}/${k}`),
    );
    env.proxy.resetCounts();
    const store: ObjectStore = createS3ObjectStore(`s3://${BUCKET}/${base}`, { client: env.proxy.client });
    const onDisk = async () =>
      (await env.s3.keysOnDisk(BUCKET, `${base}/`)).map((k) => k.slice(base.length + 1));
    return {
      store,
      full: (k: string) => `${base}/${k}`,
      onDisk,
      left: async () => (await onDisk()).filter((k) => k.startsWith(TARGET)),
      async expectSiblingsIntact() {
        expect((await onDisk()).filter((k) => !k.startsWith(TARGET))).toEqual(SIBLINGS);
      },
    };
  }

  it("deletes everything under the prefix and verifies it empty", async () => {
    const keys = [...targetKeys(3), `${TARGET}nested/deeper/part-x`, `${TARGET}_SUCCESS`];
    const fx = await fixture(keys);
    const rec = recorder();
    const result = await deletePrefix(fx.store, TARGET, { policy: POLICY, ...rec });
    expect(result).toEqual({
      status: "deleted",
      deletedObjects: 5,
      tries: 1,
      error: null,
      remainingKeys: [],
    });
    expect(rec.delays).toEqual([]);
    expect(env.proxy.counts.DeleteObjects).toBe(1);
    // One listing to find the keys, one to verify the prefix empty.
    expect(env.proxy.counts.ListObjectsV2).toBe(2);
    expect(await fx.left()).toEqual([]);
    await fx.expectSiblingsIntact();
  });

  it("never sends what `spare` keeps: deletes the rest, fails InsideSafetyWindow (transient) at once, without retrying", async () => {
    const keys = targetKeys(4);
    const young = new Set([keys[1], keys[3]]);
    const fx = await fixture(keys);
    const rec = recorder();
    const sent: string[] = [];
    const store: ObjectStore = {
      rootUrl: fx.store.rootUrl,
      list: (prefix, options) => fx.store.list(prefix, options),
      put: (key, body, options) => fx.store.put(key, body, options),
      get: (key) => fx.store.get(key),
      deleteMany: (batch) => {
        sent.push(...batch);
        return fx.store.deleteMany(batch);
      },
    };
    const result = await deletePrefix(store, TARGET, {
      policy: POLICY,
      ...rec,
      spare: (o) => young.has(o.key),
    });
    expect(result).toMatchObject({
      status: "failed",
      deletedObjects: 2,
      tries: 1,
      error: { code: "InsideSafetyWindow", transient: true },
      remainingKeys: [keys[1], keys[3]],
    });
    expect(sent.sort()).toEqual([keys[0], keys[2]]);
    expect(rec.delays).toEqual([]);
    expect(await fx.left()).toEqual([keys[1], keys[3]]);
    await fx.expectSiblingsIntact();
  });

  it("counts an already-empty prefix as deleted, with nothing deleted and no delete sent", async () => {
    const fx = await fixture([]);
    const result = await deletePrefix(fx.store, TARGET, { policy: POLICY, ...recorder() });
    expect(result).toEqual({
      status: "deleted",
      deletedObjects: 0,
      tries: 1,
      error: null,
      remainingKeys: [],
    });
    expect(env.proxy.counts.DeleteObjects).toBe(0);
    expect(env.proxy.counts.ListObjectsV2).toBe(1);
    await fx.expectSiblingsIntact();
  });

  it("retries 503 SlowDown on the deletes with capped, fully jittered backoff, then succeeds", async () => {
    const fx = await fixture(targetKeys(4));
    env.proxy.slowDown(2, { kind: "DeleteObjects" });
    const rec = recorder();
    const result = await deletePrefix(fx.store, TARGET, { policy: POLICY, ...rec });
    expect(result).toMatchObject({ status: "deleted", deletedObjects: 4, tries: 3, error: null });
    expect(rec.delays).toEqual(HALF_DELAYS.slice(0, 2));
    expect(env.proxy.counts.DeleteObjects).toBe(3);
    expect(await fx.left()).toEqual([]);
    await fx.expectSiblingsIntact();
  });

  it("retries SlowDown on any request (listings too) up to maxTries, the waits capped at maxDelayMs", async () => {
    const fx = await fixture(targetKeys(2));
    env.proxy.slowDown(3);
    const rec = recorder();
    const result = await deletePrefix(fx.store, TARGET, { policy: POLICY, ...rec });
    expect(result).toMatchObject({ status: "deleted", deletedObjects: 2, tries: 4 });
    expect(rec.delays).toEqual(HALF_DELAYS);
    expect(await fx.left()).toEqual([]);
    await fx.expectSiblingsIntact();
  });

  it("keeps every real jittered wait within [0, min(maxDelay, base·2^(tries-1))]", async () => {
    const fx = await fixture(targetKeys(2));
    env.proxy.slowDown(3, { kind: "DeleteObjects" });
    const delays: number[] = [];
    const result = await deletePrefix(fx.store, TARGET, {
      policy: POLICY,
      sleep: async (ms) => void delays.push(ms),
    });
    expect(result.status).toBe("deleted");
    expect(delays).toHaveLength(3);
    delays.forEach((d, i) => {
      expect(Number.isInteger(d)).toBe(true);
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThanOrEqual(backoffCap(POLICY, i + 1));
    });
    await fx.expectSiblingsIntact();
  });

  it("gives up on a transient error after maxTries and reports it as transient", async () => {
    const fx = await fixture(targetKeys(2));
    env.proxy.slowDown(10, { kind: "DeleteObjects" });
    const rec = recorder();
    const result = await deletePrefix(fx.store, TARGET, { policy: POLICY, ...rec });
    expect(result).toMatchObject({
      status: "failed",
      deletedObjects: 0,
      tries: 4,
      error: { code: "SlowDown", transient: true },
    });
    expect(result.remainingKeys).toEqual(targetKeys(2));
    expect(rec.delays).toEqual(HALF_DELAYS);
    expect(env.proxy.counts.DeleteObjects).toBe(4);
    expect(await fx.left()).toEqual(targetKeys(2));
    await fx.expectSiblingsIntact();
  });

  it("retries a connection reset before the request reached the server", async () => {
    const fx = await fixture(targetKeys(3));
    env.proxy.reset(1, { kind: "DeleteObjects" });
    const rec = recorder();
    const result = await deletePrefix(fx.store, TARGET, { policy: POLICY, ...rec });
    expect(result).toMatchObject({ status: "deleted", deletedObjects: 3, tries: 2 });
    expect(rec.delays).toEqual([50]);
    expect(await fx.left()).toEqual([]);
    await fx.expectSiblingsIntact();
  });

  it("retries a reset after the server deleted: the next listing finds the prefix empty", async () => {
    const fx = await fixture(targetKeys(3));
    env.proxy.reset(1, { kind: "DeleteObjects" }, { afterForward: true });
    const result = await deletePrefix(fx.store, TARGET, { policy: POLICY, ...recorder() });
    // Deleted, but never confirmed to us: only what the store confirms is counted.
    expect(result).toMatchObject({ status: "deleted", deletedObjects: 0, tries: 2 });
    expect(await fx.left()).toEqual([]);
    await fx.expectSiblingsIntact();
  });

  it("does not retry AccessDenied: one delete request, reported with its code, objects still there", async () => {
    const fx = await fixture(targetKeys(3));
    env.proxy.deny(5, { kind: "DeleteObjects" });
    const rec = recorder();
    const result = await deletePrefix(fx.store, TARGET, { policy: POLICY, ...rec });
    expect(result).toMatchObject({
      status: "failed",
      deletedObjects: 0,
      tries: 1,
      error: { code: "AccessDenied", transient: false },
    });
    expect(result.remainingKeys).toEqual(targetKeys(3));
    expect(env.proxy.counts.DeleteObjects).toBe(1);
    expect(rec.delays).toEqual([]);
    expect(await fx.left()).toEqual(targetKeys(3));
    await fx.expectSiblingsIntact();
  });

  it.each([
    { status: 404, code: "NoSuchBucket" },
    { status: 403, code: "InvalidAccessKeyId" },
  ])("does not retry $code on the listing, and sends no delete", async (error) => {
    const fx = await fixture(targetKeys(2));
    env.proxy.fail(5, error, { kind: "ListObjectsV2" });
    const rec = recorder();
    const result = await deletePrefix(fx.store, TARGET, { policy: POLICY, ...rec });
    expect(result).toMatchObject({
      status: "failed",
      tries: 1,
      error: { code: error.code, transient: false },
    });
    expect(env.proxy.counts.ListObjectsV2).toBe(1);
    expect(env.proxy.counts.DeleteObjects).toBe(0);
    expect(rec.delays).toEqual([]);
    expect(await fx.left()).toEqual(targetKeys(2));
  });

  it("treats a per-key transient error inside a 200 response as a failure, and the key stays", async () => {
    const keys = targetKeys(5);
    const stuck = keys[2]!;
    const fx = await fixture(keys);
    env.proxy.failDeleteKeys([fx.full(stuck)], { code: "InternalError" });
    const rec = recorder();
    const result = await deletePrefix(fx.store, TARGET, { policy: POLICY, ...rec });
    expect(result).toMatchObject({
      status: "failed",
      deletedObjects: 4,
      tries: 4,
      error: { code: "InternalError", transient: true },
      remainingKeys: [stuck],
    });
    expect(result.error?.message).toContain(stuck);
    expect(rec.delays).toEqual(HALF_DELAYS);
    expect(await fx.left()).toEqual([stuck]);
    await fx.expectSiblingsIntact();
  });

  it("deletes a key on a later round once its per-key error has passed", async () => {
    const keys = targetKeys(5);
    const fx = await fixture(keys);
    env.proxy.failDeleteKeys([fx.full(keys[0]!), fx.full(keys[4]!)], { code: "SlowDown", times: 1 });
    const result = await deletePrefix(fx.store, TARGET, { policy: POLICY, ...recorder() });
    expect(result).toMatchObject({ status: "deleted", deletedObjects: 5, tries: 2 });
    expect(env.proxy.counts.DeleteObjects).toBe(2);
    expect(await fx.left()).toEqual([]);
    await fx.expectSiblingsIntact();
  });

  it("stops at a per-key permanent error without retrying", async () => {
    const keys = targetKeys(4);
    const fx = await fixture(keys);
    env.proxy.failDeleteKeys([fx.full(keys[1]!)], { code: "AccessDenied" });
    const rec = recorder();
    const result = await deletePrefix(fx.store, TARGET, { policy: POLICY, ...rec });
    expect(result).toMatchObject({
      status: "failed",
      deletedObjects: 3,
      tries: 1,
      error: { code: "AccessDenied", transient: false },
      remainingKeys: [keys[1]],
    });
    expect(env.proxy.counts.DeleteObjects).toBe(1);
    expect(rec.delays).toEqual([]);
    expect(await fx.left()).toEqual([keys[1]]);
    await fx.expectSiblingsIntact();
  });

  it("verifies the prefix empty: objects that keep appearing cost rounds, then fail as NotEmpty", async () => {
    const fx = await fixture(targetKeys(2));
    let writes = 2;
    /** A writer still writing: every delete is followed by one more object under the prefix. */
    const writing = (inner: ObjectStore): ObjectStore => ({
      rootUrl: inner.rootUrl,
      list: (prefix, options) => inner.list(prefix, options),
      get: (key) => inner.get(key),
      put: (key, body, options) => inner.put(key, body, options),
      async deleteMany(keys) {
        const outcome = await inner.deleteMany(keys);
        if (writes-- > 0) await inner.put(`${TARGET}late-${writes}`, "late");
        return outcome;
      },
    });
    const rec = recorder();
    const settled = await deletePrefix(writing(fx.store), TARGET, { policy: POLICY, ...rec });
    expect(settled).toMatchObject({ status: "deleted", deletedObjects: 4, tries: 3 });
    expect(rec.delays).toEqual(HALF_DELAYS.slice(0, 2));

    await fx.store.put(`${TARGET}again`, "again");
    writes = 100;
    const busy = await deletePrefix(writing(fx.store), TARGET, { policy: POLICY, ...recorder() });
    expect(busy).toMatchObject({ status: "failed", tries: 4, error: { code: "NotEmpty", transient: true } });
    expect(busy.remainingKeys).toEqual([`${TARGET}late-96`]);
    expect(await fx.left()).toEqual([`${TARGET}late-96`]);
    await fx.expectSiblingsIntact();
  });

  it("deletes more than 1000 keys in batches of at most 1000", async () => {
    const keys = [...targetKeys(1200, "a/"), ...targetKeys(850, "b/")];
    const fx = await fixture(keys);
    const batches: number[] = [];
    const result = await deletePrefix(fx.store, TARGET, {
      policy: POLICY,
      ...recorder(),
      onBatch: (deleted) => batches.push(deleted.length),
    });
    expect(result).toEqual({
      status: "deleted",
      deletedObjects: 2050,
      tries: 1,
      error: null,
      remainingKeys: [],
    });
    expect(batches).toEqual([1000, 1000, 50]);
    expect(env.proxy.counts.DeleteObjects).toBe(3);
    expect(await fx.left()).toEqual([]);
    await fx.expectSiblingsIntact();
  });

  it("reports a network cut mid-pass as transient, and a later call after restore finishes the job", async () => {
    const keys = targetKeys(1050);
    const fx = await fixture(keys);
    const rec = recorder();
    let batches = 0;
    const first = await deletePrefix(fx.store, TARGET, {
      policy: POLICY,
      ...rec,
      onBatch: () => {
        batches += 1;
        if (batches === 1) env.proxy.cut();
      },
    });
    expect(first).toMatchObject({ status: "failed", deletedObjects: 1000, tries: 4 });
    expect(first.error?.transient).toBe(true);
    expect(rec.delays).toEqual(HALF_DELAYS);
    expect(await fx.left()).toEqual(keys.slice(1000));
    env.proxy.restore();

    const second = await deletePrefix(fx.store, TARGET, { policy: POLICY, ...recorder() });
    expect(second).toEqual({
      status: "deleted",
      deletedObjects: 50,
      tries: 1,
      error: null,
      remainingKeys: [],
    });
    expect(await fx.left()).toEqual([]);
    await fx.expectSiblingsIntact();
  });

  it("stops between batches when aborted, reporting Aborted as transient", async () => {
    const fx = await fixture(targetKeys(1050));
    const controller = new AbortController();
    const result = await deletePrefix(fx.store, TARGET, {
      policy: POLICY,
      ...recorder(),
      signal: controller.signal,
      onBatch: () => controller.abort(),
    });
    expect(result).toMatchObject({
      status: "failed",
      deletedObjects: 1000,
      tries: 1,
      error: { code: "Aborted", transient: true },
    });
    expect(env.proxy.counts.DeleteObjects).toBe(1);
    expect(await fx.left()).toHaveLength(50);
    await fx.expectSiblingsIntact();
  });

  it("sends nothing when aborted before it starts", async () => {
    const fx = await fixture(targetKeys(2));
    const result = await deletePrefix(fx.store, TARGET, { policy: POLICY, signal: AbortSignal.abort() });
    expect(result).toMatchObject({ status: "failed", tries: 0, error: { code: "Aborted" } });
    expect(env.proxy.seen).toEqual([]);
  });

  it("reports listed keys that are not safe as UnsafeKey and never sends them", async () => {
    // Backslashes: keys a Windows-style consumer would read as separators. (`%2e%2e`, `#`, `?`
    // are legal keys of their own — a listed key is never decoded.)
    const weird = [`${TARGET}a\\b`, `${TARGET}x\\..\\y`];
    const fx = await fixture([...targetKeys(2), ...weird]);
    const rec = recorder();
    const result = await deletePrefix(fx.store, TARGET, { policy: POLICY, ...rec });
    expect(result).toMatchObject({
      status: "failed",
      tries: 1,
      error: { code: "UnsafeKey", transient: false },
    });
    expect(result.remainingKeys.sort()).toEqual([...weird].sort());
    expect(env.proxy.counts.DeleteObjects).toBe(0);
    expect(rec.delays).toEqual([]);
    expect((await fx.left()).sort()).toEqual([...targetKeys(2), ...weird].sort());
    await fx.expectSiblingsIntact();
  });

  it.each([
    "",
    "data/r1/shard=00000/attempt=01",
    "../",
    "data/../_CURRENT/",
    "data//r1/",
    "/data/",
    "data/../",
  ])("refuses the prefix %j with a SafetyRailError before any request", async (prefix) => {
    const fx = await fixture(targetKeys(1));
    const error = await deletePrefix(fx.store, prefix, { policy: POLICY }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(isSafetyRailError(error)).toBe(true);
    expect(env.proxy.seen).toEqual([]);
  });

  it("refuses an invalid policy before any request", async () => {
    const fx = await fixture(targetKeys(1));
    await expect(
      deletePrefix(fx.store, TARGET, { policy: { maxTries: 0, baseDelayMs: 100, maxDelayMs: 300 } }),
    ).rejects.toThrow(/maxTries/);
    expect(env.proxy.seen).toEqual([]);
  });
});

describe("on the filesystem store", () => {
  let dir: string;
  let n = 0;
  beforeAll(async () => {
    dir = await scratchDir("prefix-deleter");
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function fixture(keys: readonly string[]) {
    const rootDir = path.join(dir, `t${++n}`);
    await Promise.all(
      [...SIBLINGS, ...keys].map(async (k) => {
        const file = path.join(rootDir, ...k.split("/"));
        await mkdir(path.dirname(file), { recursive: true });
        await writeFile(file, k);
      }),
    );
    const walk = async (d: string, prefix: string): Promise<string[]> => {
      const entries = await readdir(d, { withFileTypes: true }).catch(() => []);
      const out: string[] = [];
      for (const e of entries) {
        if (e.isDirectory()) out.push(...(await walk(path.join(d, e.name), `${prefix}${e.name}/`)));
        else if (e.isFile()) out.push(prefix + e.name);
      }
      return out;
    };
    const onDisk = async () => (await walk(rootDir, "")).sort();
    return {
      rootDir,
      store: createFilesystemObjectStore(`file://${rootDir}`),
      left: async () => (await onDisk()).filter((k) => k.startsWith(TARGET)),
      async expectSiblingsIntact() {
        expect((await onDisk()).filter((k) => !k.startsWith(TARGET))).toEqual(SIBLINGS);
      },
    };
  }

  it("deletes everything under the prefix, siblings untouched", async () => {
    const fx = await fixture([...targetKeys(3), `${TARGET}nested/deeper/part-x`]);
    const rec = recorder();
    const result = await deletePrefix(fx.store, TARGET, { policy: POLICY, ...rec });
    expect(result).toEqual({
      status: "deleted",
      deletedObjects: 4,
      tries: 1,
      error: null,
      remainingKeys: [],
    });
    expect(rec.delays).toEqual([]);
    expect(await fx.left()).toEqual([]);
    await fx.expectSiblingsIntact();
  });

  it("counts a missing or empty prefix as deleted with 0 objects", async () => {
    const fx = await fixture([]);
    expect(await deletePrefix(fx.store, TARGET, { policy: POLICY })).toEqual({
      status: "deleted",
      deletedObjects: 0,
      tries: 1,
      error: null,
      remainingKeys: [],
    });
    await mkdir(path.join(fx.rootDir, ...TARGET.split("/")), { recursive: true });
    expect((await deletePrefix(fx.store, TARGET, { policy: POLICY })).status).toBe("deleted");
    await fx.expectSiblingsIntact();
  });

  it("deletes more than 1000 keys in batches of at most 1000", async () => {
    const fx = await fixture(targetKeys(1234));
    const batches: number[] = [];
    const result = await deletePrefix(fx.store, TARGET, {
      policy: POLICY,
      onBatch: (keys) => batches.push(keys.length),
    });
    expect(result).toMatchObject({ status: "deleted", deletedObjects: 1234, tries: 1 });
    expect(batches).toEqual([1000, 234]);
    expect(await fx.left()).toEqual([]);
    await fx.expectSiblingsIntact();
  });

  it("reports an unsafe file name as UnsafeKey and deletes nothing of its page", async () => {
    const fx = await fixture([...targetKeys(2), `${TARGET}we\\ird`]);
    const result = await deletePrefix(fx.store, TARGET, { policy: POLICY, ...recorder() });
    expect(result).toMatchObject({
      status: "failed",
      deletedObjects: 0,
      error: { code: "UnsafeKey", transient: false },
      remainingKeys: [`${TARGET}we\\ird`],
    });
    expect(await fx.left()).toHaveLength(3);
    await fx.expectSiblingsIntact();
  });

  it("never follows a symbolic link out of the root: a permanent failure, the outside untouched", async () => {
    const fx = await fixture([]);
    const outside = path.join(dir, `outside-${n}`);
    await mkdir(outside, { recursive: true });
    await writeFile(path.join(outside, "precious"), "keep me");
    await symlink(outside, path.join(fx.rootDir, ...TARGET.split("/").filter(Boolean)));
    const rec = recorder();
    const result = await deletePrefix(fx.store, TARGET, { policy: POLICY, ...rec });
    expect(result).toMatchObject({
      status: "failed",
      tries: 1,
      error: { code: "SAFETY_RAIL", transient: false },
    });
    expect(rec.delays).toEqual([]);
    expect(await readdir(outside)).toEqual(["precious"]);
    await fx.expectSiblingsIntact();
  });

  it("rethrows what onBatch throws instead of taking it for a store failure", async () => {
    const fx = await fixture(targetKeys(2));
    const boom = new Error("progress bar broke");
    const rec = recorder();
    await expect(
      deletePrefix(fx.store, TARGET, {
        policy: POLICY,
        ...rec,
        onBatch: () => {
          throw boom;
        },
      }),
    ).rejects.toBe(boom);
    expect(rec.delays).toEqual([]);
    await fx.expectSiblingsIntact();
  });

  it("stops between batches when aborted", async () => {
    const fx = await fixture(targetKeys(1100));
    const controller = new AbortController();
    const result = await deletePrefix(fx.store, TARGET, {
      policy: POLICY,
      signal: controller.signal,
      onBatch: () => controller.abort(),
    });
    expect(result).toMatchObject({ status: "failed", deletedObjects: 1000, error: { code: "Aborted" } });
    expect(await fx.left()).toHaveLength(100);
    await fx.expectSiblingsIntact();
  });

  it("sends nothing more once beforeRequest throws (a lost lease), and rethrows it", async () => {
    const fx = await fixture(targetKeys(1100));
    let calls = 0;
    const lost = new Error("lease lost");
    const error = await deletePrefix(fx.store, TARGET, {
      policy: POLICY,
      // list, delete the first page, list the second page: then the lease is gone.
      beforeRequest: async () => {
        if (++calls > 3) throw lost;
      },
    }).catch((e: unknown) => e);
    expect(error).toBe(lost);
    expect(await fx.left()).toHaveLength(100);
    await fx.expectSiblingsIntact();
  });

  it("with includeExactKey also deletes the object named by the prefix itself, never its siblings", async () => {
    const exact = TARGET.slice(0, -1);
    const fx = await fixture([]);
    await writeFile(path.join(fx.rootDir, ...exact.split("/")), "one object");
    const result = await deletePrefix(fx.store, TARGET, { policy: POLICY, includeExactKey: true });
    expect(result).toMatchObject({ status: "deleted", deletedObjects: 1 });
    await expect(readdir(path.dirname(path.join(fx.rootDir, ...exact.split("/"))))).resolves.not.toContain(
      path.basename(exact),
    );
    await fx.expectSiblingsIntact();
  });
});
