import { describe, expect, it } from "vitest";
import { type CleanupWork, cleanConcurrently } from "../../src/ledger/concurrent-cleanup.js";
import { coalescedCheck } from "../../src/maintenance/coalesced-check.js";
import { FenceRefusal, fenceStore } from "../../src/maintenance/fenced-store.js";
import { deleteObject } from "../../src/maintenance/object-deleter.js";
import { DEFAULT_RETRY_POLICY } from "../../src/maintenance/retry-policy.js";
import { ThrottledStore } from "../../src/maintenance/throttled-store.js";
import type { ObjectStore } from "../../src/storage/object-store.js";

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Strict fencing of the concurrent pass: requests queued behind the rate limiter when the lease is
 * revoked must not reach the store. The limiter's clock is frozen and its waits are released by
 * hand, so the order of events is fixed: N deletions ask, N−1 of them wait for their turn, the
 * lease is revoked, the waits end.
 */
describe("strict fencing of the concurrent cleanup engine", () => {
  function world(n: number) {
    const objects = new Set(Array.from({ length: n }, (_, i) => `data/r1/orphan-${i}`));
    let revoked = false;
    const calls: { op: string; key: string; afterRevocation: boolean }[] = [];
    const record = (op: string, key: string) => calls.push({ op, key, afterRevocation: revoked });
    const inner: ObjectStore = {
      rootUrl: "file:///lake/ds",
      list: async (prefix) => {
        record("list", prefix);
        return {
          objects: [...objects]
            .filter((k) => k.startsWith(prefix))
            .map((key) => ({ key, size: 0, lastModified: new Date(0) })),
          nextToken: null,
        };
      },
      deleteMany: async (keys) => {
        record("deleteMany", keys[0] ?? "");
        for (const k of keys) objects.delete(k);
        return { deleted: [...keys], errors: [] };
      },
      get: async (key) => {
        record("get", key);
        return objects.has(key) ? new Uint8Array() : null;
      },
      put: async (key) => {
        record("put", key);
      },
    };
    const sleepers: (() => void)[] = [];
    const store = new ThrottledStore(
      inner,
      // One key per second: every deletion after the first waits for its turn.
      { initialRate: 1, minRate: 1 },
      { now: () => 0, sleep: () => new Promise<void>((resolve) => sleepers.push(resolve)) },
    );
    let checks = 0;
    const assertHeld = coalescedCheck(async () => {
      checks++;
      // A probe is I/O: its answer comes later.
      await tick();
      if (revoked) throw new Error("lease lost: another pass acquired the lease");
    });
    const items: CleanupWork[] = [...objects].map((key) => ({
      runId: "r1",
      url: `file:///lake/ds/${key}`,
      key,
      reason: "orphan",
      planned: false,
      priorTries: 0,
    }));
    const appended: string[] = [];
    const pass = cleanConcurrently(
      items,
      {
        store,
        keyOf: (item) => ({ key: item.key as string }),
        isObject: () => true,
        spare: () => undefined,
        refusals: async (batch) => batch.map(() => null),
        executeMany: async (_runId, commands) => {
          for (const c of commands) appended.push(c.type);
        },
        assertHeld,
        deleteObject,
        policies: { deletion: DEFAULT_RETRY_POLICY, pending: DEFAULT_RETRY_POLICY },
        clock: () => new Date(0),
        sleep: async () => {},
        random: () => 0.5,
      },
      { concurrency: n, batchSize: n },
    );
    return {
      pass,
      calls,
      sleepers,
      objects,
      checks: () => checks,
      revoke: () => {
        revoked = true;
      },
    };
  }

  it("sends none of the deletions queued behind the limiter once the lease is revoked", async () => {
    const n = 8;
    const w = world(n);
    const settled = w.pass.then(
      () => null,
      (e: unknown) => e,
    );
    // Every deletion has asked: the first was sent, the others wait for their turn.
    const sent = () => w.calls.some((c) => c.op === "deleteMany");
    for (let i = 0; i < 1000 && (w.sleepers.length < n - 1 || !sent()); i++) await tick();
    expect(w.sleepers).toHaveLength(n - 1);
    expect(sent()).toBe(true);
    w.revoke();
    for (const wake of w.sleepers.splice(0)) wake();
    const error = await settled;
    expect(w.calls.filter((c) => c.afterRevocation)).toEqual([]);
    expect(String(error)).toContain("lease lost");
    // Only the first deletion (and its verifying read) reached the store; the rest are still there.
    expect(w.calls.filter((c) => c.op === "deleteMany")).toHaveLength(1);
    expect(w.objects.size).toBe(n - 1);
  });

  it("sends every queued deletion when the lease stays held", async () => {
    const n = 8;
    const w = world(n);
    for (let round = 0; round < 1000 && w.objects.size > 0; round++) {
      await tick();
      for (const wake of w.sleepers.splice(0)) wake();
    }
    const results = await w.pass;
    expect(results.every((r) => r?.deleted === true)).toBe(true);
    expect(w.objects.size).toBe(0);
    expect(w.calls.filter((c) => c.op === "deleteMany")).toHaveLength(n);
  });

  it("runs the fence after a listing's wait for its turn, and counts a refused listing as no request", async () => {
    const sleepers: (() => void)[] = [];
    const calls: string[] = [];
    let held = true;
    const store = new ThrottledStore(
      {
        rootUrl: "file:///lake/ds",
        list: async (prefix) => {
          calls.push(prefix);
          return { objects: [], nextToken: null };
        },
        deleteMany: async (keys) => ({ deleted: [...keys], errors: [] }),
        get: async () => null,
        put: async () => {},
      },
      { initialRate: 1, minRate: 1 },
      { now: () => 0, sleep: () => new Promise<void>((resolve) => sleepers.push(resolve)) },
    );
    const fenced = store.withFence(async () => {
      if (!held) throw new Error("lease lost");
    });
    const first = fenced.list("data/a/");
    // Many listings at once: the second waits for its turn on the listing limiter.
    const second = fenced.list("data/b/").catch((e: unknown) => e);
    await first;
    for (let i = 0; i < 100 && sleepers.length === 0; i++) await tick();
    held = false;
    for (const wake of sleepers.splice(0)) wake();
    const refused = await second;
    expect(refused).toBeInstanceOf(FenceRefusal);
    expect(String((refused as FenceRefusal).error)).toContain("lease lost");
    expect(calls).toEqual(["data/a/"]);
    expect(store.traffic().listRequests).toBe(1);
  });

  it("fences a plain store on every kind of request, sending nothing once the check refuses", async () => {
    const calls: string[] = [];
    let held = true;
    const plain: ObjectStore = {
      rootUrl: "file:///lake/ds",
      list: async (prefix) => {
        calls.push(`list ${prefix}`);
        return { objects: [], nextToken: null };
      },
      deleteMany: async (keys) => {
        calls.push(`deleteMany ${keys.join(",")}`);
        return { deleted: [...keys], errors: [] };
      },
      get: async (key) => {
        calls.push(`get ${key}`);
        return null;
      },
      put: async (key) => {
        calls.push(`put ${key}`);
      },
    };
    const fenced = fenceStore(plain, async () => {
      if (!held) throw new Error("lease lost");
    });
    await fenced.list("data/");
    await fenced.deleteMany(["data/x"]);
    await fenced.get("data/x");
    await fenced.put("data/y", "y");
    held = false;
    const refusals = await Promise.all([
      fenced.list("data/").catch((e: unknown) => e),
      fenced.deleteMany(["data/x"]).catch((e: unknown) => e),
      fenced.get("data/x").catch((e: unknown) => e),
      fenced.put("data/y", "y").catch((e: unknown) => e),
    ]);
    for (const r of refusals) expect(r).toBeInstanceOf(FenceRefusal);
    expect(calls).toEqual(["list data/", "deleteMany data/x", "get data/x", "put data/y"]);
  });
});
