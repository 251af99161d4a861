import { existsSync, mkdirSync, readdirSync, utimesSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openObjectStore } from "../../src/index.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { BACKEND } from "../support/database.js";
import { delegating, failingStore, openTestLedger, testClock } from "../support/ledger.js";

const HOUR = 3_600_000;

describe(`orphans and the data of pruned runs (${BACKEND})`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  // The filesystem store stamps objects with the real mtime; the ledger's clock starts at real now.
  const clock = testClock(new Date().toISOString());
  beforeAll(async () => {
    t = await openTestLedger({ clock: clock.now });
    ledger = t.ledger;
    await ledger.createDataset({ datasetId: "o", root: `${t.root}/o`, keepRuns: 1, safetyWindow: "1h" });
  });
  afterAll(() => t.close());
  const file = (rel: string) => {
    mkdirSync(dirname(join(t.dir, "o", rel)), { recursive: true });
    writeFileSync(join(t.dir, "o", rel), "x");
  };
  const exists = (rel: string) => existsSync(join(t.dir, "o", rel));

  async function publish(runId: string) {
    await ledger.startRun({ datasetId: "o", numShards: 1, runId });
    for (const a of [0, 1]) {
      file(`data/${runId}/shard=0/attempt=${a}/part-0`);
      await ledger.attemptSucceeded({
        runId,
        shard: 0,
        attempt: a,
        url: `${t.root}/o/data/${runId}/shard=0/attempt=${a}`,
      });
    }
    await ledger.publish(runId);
    await ledger.cleanup({ datasetId: "o" });
  }

  it("collects unreported files under a published run once older than the safety window, never a winner", async () => {
    await publish("r1");
    expect(exists("data/r1/shard=0/attempt=1/part-0")).toBe(false); // the loser went with cleanup
    file("data/r1/shard=0/attempt=7-killed/part-0"); // speculative attempt killed before it reported
    file("data/r1/shard=0/attempt=1/late-part"); // kept writing after its prefix was cleaned
    file("data/r1/shard=0/_tmp.123"); // stray file beside the winner's directory
    const early = await ledger.gc("o");
    expect(early.actions.filter((a) => a.kind === "orphan")).toEqual([]);

    clock.advance(2 * HOUR);
    const dry = await ledger.gc("o", { dryRun: true });
    const orphanUrls = dry.actions
      .filter((a) => a.kind === "orphan")
      .flatMap((a) => a.urls)
      .sort();
    expect(orphanUrls).toEqual(
      [
        "data/r1/shard=0/_tmp.123",
        "data/r1/shard=0/attempt=1/late-part",
        "data/r1/shard=0/attempt=7-killed/part-0",
      ].map((k) => `${t.root}/o/${k}`),
    );
    expect(exists("data/r1/shard=0/_tmp.123")).toBe(true); // dry run deleted nothing
    await ledger.gc("o");
    for (const rel of [
      "data/r1/shard=0/_tmp.123",
      "data/r1/shard=0/attempt=1/late-part",
      "data/r1/shard=0/attempt=7-killed/part-0",
    ]) {
      expect(exists(rel), rel).toBe(false);
    }
    expect(readdirSync(join(t.dir, "o/data/r1/shard=0/attempt=0"))).toEqual(["part-0"]);
    expect(await ledger.pendingCleanup({ datasetId: "o" })).toEqual([]);
  });

  it("takes a pruned run's whole data prefix (unreported files too), never the current run's", async () => {
    clock.advance(HOUR);
    await publish("r2");
    file("data/r1/unreported/part-9");
    clock.advance(2 * HOUR);
    const report = await ledger.gc("o");
    expect(report.actions.map((a) => [a.kind, a.runId])).toContainEqual(["keep_runs", "r1"]);
    expect(existsSync(join(t.dir, "o/data/r1")) ? readdirSync(join(t.dir, "o/data/r1")) : []).toEqual([]);
    expect(exists("manifests/r1.json")).toBe(false);
    expect(readdirSync(join(t.dir, "o/data/r2/shard=0/attempt=0"))).toEqual(["part-0"]);
    expect(exists("manifests/r2.json")).toBe(true);
    expect((await ledger.runs("o")).map((r) => [r.runId, r.current])).toEqual([["r2", true]]);
    expect((await ledger.audit()).match).toBe(true);
  });
});

/*
 * An orphan whose deletion failed waits in the pending set; a killed attempt that was not dead
 * after all may write its file again meanwhile. The retry is a new deletion: it is justified by the
 * object as it is then (older than the safety window), not by the listing that first found it.
 */
describe(`a pending orphan's retry (${BACKEND})`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  const clock = testClock(new Date().toISOString());
  const failing = new Set<string>();
  let failDeletes = false;
  beforeAll(async () => {
    // The faults wrap the real filesystem store. Each file is stamped with a time on the test clock
    // (utimes), so the store's times need no shifting.
    t = await openTestLedger({
      clock: clock.now,
      objectStore: (root) =>
        failingStore(
          openObjectStore(root),
          (op, key) => failDeletes && op === "deleteMany" && failing.has(key),
        ),
    });
    ledger = t.ledger;
    for (const datasetId of ["p1", "p2"]) {
      await ledger.createDataset({ datasetId, root: `${t.root}/${datasetId}`, safetyWindow: "1h" });
    }
  });
  afterAll(() => t.close());
  /** Writes a file of dataset `d`, stamped `at` on the test clock. */
  const file = (d: string, rel: string, at: Date) => {
    const path = join(t.dir, d, rel);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, "x");
    utimesSync(path, at, at);
  };
  const exists = (d: string, rel: string) => existsSync(join(t.dir, d, rel));

  // p1: cleanup's sequential pass; p2: its concurrent engine (the one gc's orphans go through).
  it.each([
    { d: "p1", runId: "r1", concurrency: undefined },
    { d: "p2", runId: "r2", concurrency: 4 },
  ])(
    "re-reads the orphan's age before each retry: a file written again inside the window stays ($d)",
    async ({ d, runId, concurrency }) => {
      const orphan = `data/${runId}/shard=0/attempt=9-killed/part-0`;
      failing.add(orphan);
      const cleanup = () => ledger.cleanup({ datasetId: d, ...(concurrency ? { concurrency } : {}) });
      await ledger.startRun({ datasetId: d, numShards: 1, runId });
      file(d, `data/${runId}/shard=0/attempt=0/part-0`, clock.now());
      await ledger.attemptSucceeded({
        runId,
        shard: 0,
        attempt: 0,
        url: `${t.root}/${d}/data/${runId}/shard=0/attempt=0`,
      });
      await ledger.publish(runId);
      file(d, orphan, clock.now());
      clock.advance(2 * HOUR);

      failDeletes = true;
      await ledger.gc(d);
      failDeletes = false;
      expect(exists(d, orphan)).toBe(true);
      expect((await ledger.pendingCleanup({ datasetId: d })).map((p) => p.url)).toEqual([
        `${t.root}/${d}/${orphan}`,
      ]);

      // The attempt was only partitioned away: it writes its part again, now.
      file(d, orphan, clock.now());
      clock.advance(10 * 60_000);
      await cleanup();
      expect(exists(d, orphan), "a file written 10 minutes ago, inside the 1 h window").toBe(true);
      await ledger.gc(d);
      expect(exists(d, orphan), "gc lists it young, and leaves it").toBe(true);
      const [pending] = await ledger.pendingCleanup({ datasetId: d });
      expect(pending?.lastErrorCode).toBe("InsideSafetyWindow");

      clock.advance(2 * HOUR);
      await cleanup();
      await ledger.gc(d);
      expect(exists(d, orphan)).toBe(false);
      expect(exists(d, `data/${runId}/shard=0/attempt=0/part-0`)).toBe(true);
      expect(await ledger.pendingCleanup({ datasetId: d })).toEqual([]);
      expect((await ledger.audit()).match).toBe(true);
    },
  );
});

/*
 * The safety window is read when each object is judged, not when the pass began: an operator who
 * raises it while gc runs (writers turned out slower than thought) protects what is younger than
 * the new window from that moment on.
 */
describe(`a safety window raised during a pass (${BACKEND})`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  const clock = testClock(new Date().toISOString());
  let onOrphanListing: (() => Promise<void>) | null = null;
  let onManifestDelete: (() => Promise<void>) | null = null;
  beforeAll(async () => {
    t = await openTestLedger({
      clock: clock.now,
      objectStore: (root) => {
        const store = openObjectStore(root);
        return {
          ...delegating(store),
          list: async (prefix, options) => {
            const page = await store.list(prefix, options);
            const hook = onOrphanListing;
            // gc lists the run's area for orphans; the operator's change lands right after.
            if (hook && prefix === "data/r1/") {
              onOrphanListing = null;
              await hook();
            }
            return page;
          },
          deleteMany: async (keys) => {
            const outcome = await store.deleteMany(keys);
            const hook = onManifestDelete;
            // gc of a failed run deletes its manifest first; the operator's change lands then.
            if (hook && keys.includes("manifests/r2.json")) {
              onManifestDelete = null;
              await hook();
            }
            return outcome;
          },
        };
      },
    });
    ledger = t.ledger;
    await ledger.createDataset({
      datasetId: "w",
      root: `${t.root}/w`,
      safetyWindow: "1h",
      failedRetention: "1h",
    });
  });
  afterAll(() => t.close());
  const file = (rel: string, at: Date) => {
    const path = join(t.dir, "w", rel);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, "x");
    utimesSync(path, at, at);
  };

  it("spares an orphan younger than the window the operator set after gc listed it", async () => {
    await ledger.startRun({ datasetId: "w", numShards: 1, runId: "r1" });
    file("data/r1/shard=0/attempt=0/part-0", clock.now());
    await ledger.attemptSucceeded({
      runId: "r1",
      shard: 0,
      attempt: 0,
      url: `${t.root}/w/data/r1/shard=0/attempt=0`,
    });
    await ledger.publish("r1");
    // The run's last report is older than either window; the file is 2 h old: older than the
    // window gc began with, younger than the one it ends with.
    clock.advance(30 * HOUR);
    file("data/r1/shard=0/attempt=9-slow/part-0", new Date(clock.now().getTime() - 2 * HOUR));
    const other = await t.reopen();
    onOrphanListing = async () => {
      await other.updateDataset("w", { safetyWindow: "24h" });
    };
    const gc = await ledger.gc("w");
    expect(onOrphanListing).toBeNull(); // the change did land mid-pass
    expect(existsSync(join(t.dir, "w/data/r1/shard=0/attempt=9-slow/part-0")), JSON.stringify(gc)).toBe(true);
  });

  it("spares a failed run's object younger than the window the operator set after its prune began", async () => {
    await ledger.updateDataset("w", { safetyWindow: "1h" });
    await ledger.startRun({ datasetId: "w", numShards: 1, runId: "r2" });
    file("data/r2/shard=0/attempt=0/part-0", clock.now());
    await ledger.failRun("r2", "the job died");
    clock.advance(30 * HOUR);
    file("data/r2/shard=0/attempt=1-late/part-0", new Date(clock.now().getTime() - 2 * HOUR));
    const other = await t.reopen();
    onManifestDelete = async () => {
      await other.updateDataset("w", { safetyWindow: "24h" });
    };
    const gc = await ledger.gc("w");
    expect(onManifestDelete).toBeNull();
    expect(existsSync(join(t.dir, "w/data/r2/shard=0/attempt=0/part-0")), JSON.stringify(gc)).toBe(false);
    expect(existsSync(join(t.dir, "w/data/r2/shard=0/attempt=1-late/part-0")), JSON.stringify(gc)).toBe(true);
  });
});
