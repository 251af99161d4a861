import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openObjectStore } from "../../src/adapters/objectstore/open-object-store.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { BACKEND } from "../support/database.js";
import { failingStore, openTestLedger, testClock } from "../support/ledger.js";

/**
 * `cleanup` must not look done while the pending set is not empty: an item waiting for its next
 * retry is counted, and an operator can have every waiting item tried now.
 */
describe(`cleanup reports what stays pending (${BACKEND})`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  let failure: Error | null = null;
  let deletes = 0;
  const clock = testClock();

  beforeEach(async () => {
    failure = null;
    deletes = 0;
    t = await openTestLedger({
      clock: clock.now,
      sleep: async () => {},
      // No jitter below the full backoff: a failed item is never due at the instant it failed.
      random: () => 1,
      maintenance: {
        deletion: { maxTries: 1, baseDelayMs: 1, maxDelayMs: 1 },
        pending: { maxTries: 5, baseDelayMs: 60_000, maxDelayMs: 3_600_000 },
      },
      objectStore: (root) =>
        failingStore(openObjectStore(root), (op) => {
          if (op !== "deleteMany") return false;
          deletes++;
          if (failure) throw failure;
          return false;
        }),
    });
    ledger = t.ledger;
    await ledger.createDataset({ datasetId: "ds", root: t.root, safetyWindow: "0s" });
  });
  afterEach(() => t.close());

  /** A published run with one loser whose data is on disk; returns the loser's url. */
  async function publishedWithLoser(runId: string): Promise<string> {
    await ledger.startRun({ datasetId: "ds", numShards: 1, runId });
    const urls: string[] = [];
    for (const attempt of [0, 1]) {
      const rel = `data/${runId}/shard=00000/attempt=0${attempt}`;
      mkdirSync(join(t.dir, rel), { recursive: true });
      writeFileSync(join(t.dir, rel, "part-0"), "x");
      urls.push(`${t.root}/${rel}`);
      await ledger.attemptSucceeded({ runId, shard: 0, attempt, url: `${t.root}/${rel}` });
    }
    await ledger.publish(runId);
    return urls[1] as string;
  }

  it("counts an item not yet due as pending, names when it is due, and retries it now when asked", async () => {
    const loser = await publishedWithLoser("r1");
    failure = new Error("connection reset");
    const first = await ledger.cleanup({ datasetId: "ds" });
    expect(first.failed.map((f) => f.url)).toEqual([loser]);
    const [item] = await ledger.pendingCleanup({ datasetId: "ds" });
    expect(item?.state).toBe("failed");
    const due = item?.nextRetryAt?.toISOString();
    expect(due).toBeDefined();
    expect(first).toMatchObject({ pending: 1, nextDueAt: due });

    // Not due yet: nothing is tried, but the pass does not look done.
    failure = null;
    const tried = deletes;
    const waiting = await ledger.cleanup({ datasetId: "ds" });
    expect(deletes).toBe(tried);
    expect(waiting).toEqual({
      deleted: [],
      failed: [],
      planned: [],
      skipped: [],
      leaseLost: [],
      pending: 1,
      nextDueAt: due,
      dryRun: false,
    });
    const all = await ledger.cleanup();
    expect(all).toMatchObject({ pending: 1, nextDueAt: due });

    // A dry run with retryNow lists it; the real one deletes it.
    expect(await ledger.cleanup({ datasetId: "ds", dryRun: true, retryNow: true })).toMatchObject({
      planned: [loser],
      deleted: [],
      pending: 1,
    });
    const forced = await ledger.cleanup({ datasetId: "ds", retryNow: true });
    expect(forced).toMatchObject({ deleted: [loser], failed: [], pending: 0, nextDueAt: null });
    expect(await ledger.pendingCleanup({ datasetId: "ds" })).toEqual([]);
  });

  it("counts exhausted items as pending, with no due time, and retryNow leaves them to retry-failed", async () => {
    const loser = await publishedWithLoser("r2");
    failure = Object.assign(new Error("Access Denied"), { name: "AccessDenied" });
    const first = await ledger.cleanup({ datasetId: "ds" });
    expect(first.failed.map((f) => f.url)).toEqual([loser]);
    expect((await ledger.pendingCleanup({ datasetId: "ds" }))[0]?.state).toBe("exhausted");
    expect(first).toMatchObject({ pending: 1, nextDueAt: null });

    failure = null;
    const tried = deletes;
    expect(await ledger.cleanup({ datasetId: "ds", retryNow: true })).toMatchObject({
      deleted: [],
      failed: [],
      pending: 1,
      nextDueAt: null,
    });
    expect(deletes).toBe(tried);
  });
});
