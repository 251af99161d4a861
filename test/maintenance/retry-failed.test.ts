import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger, testClock } from "../support/ledger.js";

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
