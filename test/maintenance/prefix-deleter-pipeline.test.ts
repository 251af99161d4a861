import { describe, expect, it } from "vitest";
import { deletePrefix } from "../../src/maintenance/prefix-deleter.js";
import { compareKeys, type ObjectStore } from "../../src/storage/object-store.js";

const tick = () => new Promise((resolve) => setImmediate(resolve));

/** An in-memory store with asynchronous calls that records how many deletes overlap. */
function memoryStore(keys: readonly string[], deniedKey: string | null = null) {
  const objects = new Set(keys);
  const seen = { inFlight: 0, peak: 0, listsDuringDeletes: 0, deleteRequests: 0 };
  const store: ObjectStore = {
    rootUrl: "s3://lake/sales",
    async list(prefix, options = {}) {
      await tick();
      if (seen.inFlight > 0) seen.listsDuringDeletes++;
      const after = options.token ?? "";
      const sorted = [...objects].filter((k) => k.startsWith(prefix) && k > after).sort(compareKeys);
      const page = sorted.slice(0, options.pageSize ?? 1000);
      return {
        objects: page.map((key) => ({ key, size: 1, lastModified: new Date(0) })),
        nextToken: sorted.length > page.length ? (page.at(-1) ?? null) : null,
      };
    },
    async deleteMany(batch) {
      seen.deleteRequests++;
      seen.inFlight++;
      seen.peak = Math.max(seen.peak, seen.inFlight);
      for (let i = 0; i < 3; i++) await tick();
      seen.inFlight--;
      const deleted: string[] = [];
      const errors = [];
      for (const key of batch) {
        if (key === deniedKey)
          errors.push({ key, code: "AccessDenied", message: "Access Denied", transient: false });
        else {
          objects.delete(key);
          deleted.push(key);
        }
      }
      return { deleted, errors };
    },
    put: async () => {},
    get: async () => null,
  };
  return { store, objects, seen };
}

const keys = Array.from({ length: 5_500 }, (_, i) => `data/r1/part-${String(i).padStart(5, "0")}`);
const policy = { maxTries: 3, baseDelayMs: 1, maxDelayMs: 1 };

describe("deletePrefix with its listing pipelined with its deletes", () => {
  it("deletes a large prefix with up to `pipeline` deletes in flight while it lists on, then verifies", async () => {
    const { store, objects, seen } = memoryStore([...keys, "data/r10/keep"]);
    const result = await deletePrefix(store, "data/r1/", { policy, pipeline: 4, sleep: async () => {} });
    expect(result).toMatchObject({ status: "deleted", deletedObjects: keys.length, tries: 1 });
    expect([...objects]).toEqual(["data/r10/keep"]);
    expect(seen.peak).toBeGreaterThan(1);
    expect(seen.peak).toBeLessThanOrEqual(4);
    expect(seen.listsDuringDeletes).toBeGreaterThan(0);
    expect(seen.deleteRequests).toBe(6);
  });

  it("keeps one delete at a time without it (the default)", async () => {
    const { store, seen } = memoryStore(keys);
    await deletePrefix(store, "data/r1/", { policy, sleep: async () => {} });
    expect(seen.peak).toBe(1);
    expect(seen.listsDuringDeletes).toBe(0);
  });

  it("on a permanent per-key error, ends the round only after every delete in flight ended, and never retries", async () => {
    const denied = keys[1_500] as string;
    const { store, seen } = memoryStore(keys, denied);
    const result = await deletePrefix(store, "data/r1/", { policy, pipeline: 3, sleep: async () => {} });
    expect(result.status).toBe("failed");
    expect(result.error).toMatchObject({ code: "AccessDenied", transient: false });
    expect(result.remainingKeys).toEqual([denied]);
    expect(result.tries).toBe(1);
    // Nothing is still being deleted once deletePrefix returned.
    expect(seen.inFlight).toBe(0);
  });
});
