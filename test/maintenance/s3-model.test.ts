import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createS3ObjectStore } from "../../src/adapters/objectstore/s3-object-store.js";
import { isObjectStoreError, type ObjectStore } from "../../src/storage/object-store.js";
import { type S3ModelHandle, startS3Model } from "../support/s3-model.js";

/** The S3 model is an instrument: these check it speaks the protocol the adapter uses, and limits as stated. */
describe("the S3 model (bench and fault-test instrument)", () => {
  let model: S3ModelHandle;
  let store: ObjectStore;
  beforeAll(async () => {
    model = await startS3Model({ buckets: ["lake"], latency: null, deletesPerSecond: 100, burstSeconds: 1 });
    store = createS3ObjectStore("s3://lake/sales", { client: model.client() });
  });
  afterAll(async () => {
    await store.close?.();
    await model.stop();
  });

  it("lists in UTF-8 byte order page by page, deletes in batches, puts and gets", async () => {
    const keys = ["a/1", "a/2", "a/10", "a/é", "a/\u{1F600}", "a/\uFFFD", "a/x y#?%2F", "b/1"];
    model.seed(
      "lake",
      keys.map((k) => `sales/${k}`),
    );
    const seen: string[] = [];
    let token: string | null = null;
    do {
      const page = await store.list("a/", { pageSize: 2, token });
      seen.push(...page.objects.map((o) => o.key));
      token = page.nextToken;
    } while (token !== null);
    expect(seen).toEqual(["a/1", "a/10", "a/2", "a/x y#?%2F", "a/é", "a/\uFFFD", "a/\u{1F600}"]);
    const outcome = await store.deleteMany(seen);
    expect(outcome.errors).toEqual([]);
    expect(outcome.deleted.sort()).toEqual([...seen].sort());
    expect(model.keys("lake", "sales/")).toEqual(["sales/b/1"]);
    await store.put("_CURRENT", "r1", { ifAbsent: true });
    await expect(store.put("_CURRENT", "r2", { ifAbsent: true })).rejects.toMatchObject({
      storeCode: "PreconditionFailed",
    });
    expect(new TextDecoder().decode((await store.get("_CURRENT")) ?? new Uint8Array())).toBe("r1");
    expect(await store.get("nothing")).toBeNull();
  });

  it("answers 503 SlowDown beyond the per-partition delete rate (a DeleteObjects of n keys costs n)", async () => {
    model.resetStats();
    const keys = Array.from({ length: 300 }, (_, i) => `sales/t/${i}`);
    model.seed("lake", keys);
    // 100 tokens (1 s of burst at 100/s): a 300-key batch is admitted (S3 takes 1,000 keys in one
    // request) and leaves the partition 200 in debt, so the next request right after is refused.
    const first = await store.deleteMany(keys.slice(0, 300).map((k) => k.slice("sales/".length)));
    expect(first.deleted).toHaveLength(300);
    model.seed("lake", ["sales/t/again"]);
    const error = await store.deleteMany(["t/again"]).catch((e) => e);
    expect(isObjectStoreError(error)).toBe(true);
    expect(error).toMatchObject({ storeCode: "SlowDown", transient: true });
    expect(model.stats.throttled).toBe(1);
    expect(model.keys("lake", "sales/t/")).toEqual(["sales/t/again"]);
    model.setDeleteRate(Number.POSITIVE_INFINITY);
  });

  it("injects per-key errors inside a 200 DeleteObjects, and resets", async () => {
    model.seed("lake", ["sales/k/1", "sales/k/2"]);
    model.keyErrors.set("sales/k/2", { code: "InternalError", message: "We encountered an internal error" });
    const outcome = await store.deleteMany(["k/1", "k/2"]);
    expect(outcome.deleted).toEqual(["k/1"]);
    expect(outcome.errors).toMatchObject([{ key: "k/2", code: "InternalError", transient: true }]);
    model.keyErrors.clear();
    model.onRequest = (r) => (r.op === "ListObjectsV2" ? "reset" : null);
    const reset = await store.list("k/").catch((e) => e);
    expect(isObjectStoreError(reset)).toBe(true);
    expect(reset.transient).toBe(true);
    model.onRequest = null;
    expect((await store.list("k/")).objects.map((o) => o.key)).toEqual(["k/2"]);
  });
});
