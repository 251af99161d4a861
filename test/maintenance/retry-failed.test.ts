import { existsSync, mkdirSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openObjectStore } from "../../src/adapters/objectstore/open-object-store.js";
import { IllegalTransitionError } from "../../src/errors.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { BACKEND } from "../support/database.js";
import { delegating, openTestLedger, testClock } from "../support/ledger.js";

const HOUR = 3_600_000;

describe(`retry-failed tells "nothing failed" from "failed and pruned" (${BACKEND})`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  const clock = testClock();
  beforeAll(async () => {
    t = await openTestLedger({ clock: clock.now });
    ledger = t.ledger;
    await ledger.createDataset({
      datasetId: "rf",
      root: `${t.root}/rf`,
      failedRetention: "24h",
      safetyWindow: "0s",
      retention: "30d",
    });
  });
  afterAll(() => t.close());

  async function failedRun(runId: string, failedAttempts: number) {
    await ledger.startRun({ datasetId: "rf", numShards: 2, runId });
    for (let a = 0; a < failedAttempts; a++) {
      await ledger.attemptFailed({
        runId,
        shard: 0,
        attempt: a,
        url: `${t.root}/rf/data/${runId}/shard=0/attempt=${a}`,
        error: "OOM",
      });
    }
    await ledger.attemptSucceeded({
      runId,
      shard: 1,
      attempt: 0,
      url: `${t.root}/rf/data/${runId}/shard=1/attempt=0`,
    });
    await ledger.publish(runId).catch(() => {}); // coverage error: the run fails
  }

  it("counts a run with many failed attempts once, reopens it inside the floor, and keeps its successes", async () => {
    expect(await ledger.retryFailed({ datasetId: "rf" })).toEqual({
      matched: 0,
      retried: 0,
      prunedPastRetention: 0,
    });
    await failedRun("a", 3);
    expect((await ledger.run("a")).run.status).toBe("FAILED");
    expect(await ledger.retryFailed({ datasetId: "rf", runId: "a" })).toEqual({
      matched: 1,
      retried: 1,
      prunedPastRetention: 0,
    });
    const reopened = await ledger.run("a");
    expect(reopened.run.status).toBe("STARTED");
    expect(reopened.attempts.find((x) => x.shard === 1)?.status).toBe("SUCCEEDED");
    // Only the missing shard needs writing now.
    await ledger.attemptSucceeded({
      runId: "a",
      shard: 0,
      attempt: 3,
      url: `${t.root}/rf/data/a/shard=0/attempt=3`,
    });
    expect((await ledger.publish("a")).winners.map((w) => w.attempt)).toEqual([3, 0]);
    expect(await ledger.retryFailed({ datasetId: "rf", runId: "a" })).toEqual({
      matched: 0,
      retried: 0,
      prunedPastRetention: 0,
    });
  });

  it("matches but does not retry past the floor, and reports what was pruned before it was asked", async () => {
    await failedRun("b", 2);
    clock.advance(25 * HOUR);
    expect(await ledger.retryFailed({ datasetId: "rf", runId: "b" })).toEqual({
      matched: 1,
      retried: 0,
      prunedPastRetention: 0,
    });
    for (const p of ["b/shard=0/attempt=0", "b/shard=0/attempt=1", "b/shard=1/attempt=0"]) {
      mkdirSync(join(t.dir, "rf/data", p), { recursive: true });
      writeFileSync(join(t.dir, "rf/data", p, "part"), "x");
    }
    const gc = await ledger.gc("rf");
    expect(gc.actions.map((a) => [a.kind, a.runId])).toContainEqual(["failed_retention", "b"]);
    expect(await ledger.runs("rf").then((r) => r.map((x) => x.runId))).not.toContain("b");
    expect(await ledger.retryFailed({ datasetId: "rf", runId: "b" })).toEqual({
      matched: 0,
      retried: 0,
      prunedPastRetention: 1,
    });
    expect((await ledger.retryFailed({ datasetId: "rf" })).prunedPastRetention).toBe(1);
    expect(await ledger.rollups("rf")).toMatchObject([
      { reason: "failed_retention", prunedRuns: 1, prunedFailedItems: 1 },
    ]);
    // A run that never existed is a wrong --run, not "nothing failed".
    await expect(ledger.retryFailed({ datasetId: "rf", runId: "never" })).rejects.toMatchObject({
      code: "NOT_FOUND",
      details: { kind: "run", id: "never" },
    });
    clock.advance(HOUR);
  });
});

/*
 * A failed run whose prune has begun (its manifest and part of its data are gone, the rest failed
 * to go) may come back inside its floor when the policy is raised. Reopened, its next publish
 * would have pointed _CURRENT at winners whose data the prune had deleted.
 */
describe(`retry-failed and a prune that has begun (${BACKEND})`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  const clock = testClock();
  let failShard: string | null = null;
  beforeAll(async () => {
    t = await openTestLedger({
      clock: clock.now,
      // The filesystem store, with one shard's keys failing per key (a SlowDown inside a batch).
      // Files are stamped on the test clock (utimes), so the store's times need no shifting.
      objectStore: (root) => {
        const store = openObjectStore(root);
        return {
          ...delegating(store),
          async deleteMany(keys) {
            const failing = failShard;
            const bad = failing ? keys.filter((k) => k.includes(failing)) : [];
            const outcome = await store.deleteMany(keys.filter((k) => !bad.includes(k)));
            const errors = bad.map((key) => ({
              key,
              code: "SlowDown",
              message: "injected",
              transient: true,
            }));
            return { deleted: outcome.deleted, errors: [...outcome.errors, ...errors] };
          },
        };
      },
    });
    ledger = t.ledger;
    await ledger.createDataset({
      datasetId: "p",
      root: `${t.root}/p`,
      failedRetention: "1h",
      safetyWindow: "1h",
    });
  });
  afterAll(() => t.close());
  const part = (shard: number) => join(t.dir, "p", `data/r1/shard=${shard}/attempt=0/part-0`);

  it("refuses to reopen the run and says why: it stays FAILED, its prune goes on once past the floor", async () => {
    await ledger.startRun({ datasetId: "p", numShards: 2, runId: "r1" });
    for (const shard of [0, 1]) {
      mkdirSync(join(t.dir, "p", `data/r1/shard=${shard}/attempt=0`), { recursive: true });
      writeFileSync(part(shard), "x");
      utimesSync(part(shard), clock.now(), clock.now());
      await ledger.attemptSucceeded({
        runId: "r1",
        shard,
        attempt: 0,
        url: `${t.root}/p/data/r1/shard=${shard}/attempt=0`,
      });
    }
    await ledger.failRun("r1", "the driver died before publish");
    clock.advance(3 * HOUR);
    failShard = "shard=1/";
    await ledger.gc("p");
    failShard = null;
    expect(existsSync(part(0))).toBe(false);
    expect(existsSync(part(1))).toBe(true);
    expect((await ledger.run("r1")).run.status).toBe("FAILED");

    // The operator wants more time to retry failed runs: r1 is inside the new floor.
    await ledger.updateDataset("p", { failedRetention: "7d" });
    const refused = await ledger.retryFailed({ datasetId: "p", runId: "r1" }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(IllegalTransitionError);
    expect((refused as Error).message).toMatch(/prune .*has begun/);
    // Without --run, the same run is matched, not retried, and nothing throws.
    expect(await ledger.retryFailed({ datasetId: "p" })).toMatchObject({ matched: 1, retried: 0 });
    expect((await ledger.run("r1")).run.status).toBe("FAILED");
    await expect(ledger.publish("r1")).rejects.toThrow();
    expect(existsSync(join(t.dir, "p", "_CURRENT"))).toBe(false);
    expect((await ledger.audit()).match).toBe(true);
  });
});
