/**
 * `ledger.status`: one view per dataset — the current run and since when, runs by status, the
 * pending-cleanup set (due now, waiting, next retry), the failed-retention floor and when its
 * items leave it, the last maintenance pass with its outcome, and the last audit.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openObjectStore } from "../../src/adapters/objectstore/open-object-store.js";
import { withMaintenanceLease } from "../../src/adapters/postgres/maintenance-lease.js";
import { NotFoundError } from "../../src/errors.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { BACKEND } from "../support/database.js";
import { failingStore, openTestLedger, testClock } from "../support/ledger.js";
import { writeAndPublish } from "../support/runs.js";

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

describe(`status on ${BACKEND}`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  let clock: ReturnType<typeof testClock>;
  let deletesFail: boolean;
  let readsFail: boolean;

  beforeEach(async () => {
    clock = testClock();
    deletesFail = false;
    readsFail = false;
    t = await openTestLedger({
      clock: clock.now,
      sleep: async () => {},
      random: () => 1,
      maintenance: {
        deletion: { maxTries: 1, baseDelayMs: 1, maxDelayMs: 1 },
        pending: { maxTries: 5, baseDelayMs: HOUR, maxDelayMs: HOUR },
      },
      objectStore: (root) =>
        failingStore(openObjectStore(root), (op) => {
          if (op === "deleteMany" && deletesFail) throw new Error("connection reset");
          return op === "get" && readsFail;
        }),
    });
    ledger = t.ledger;
    await ledger.createDataset({
      datasetId: "ds",
      root: `${t.root}/ds`,
      failedRetention: "7d",
      safetyWindow: "0s",
    });
  });
  afterEach(() => t.close());

  it("shows an empty dataset as empty, with no maintenance pass and no audit recorded yet", async () => {
    expect(await ledger.status("ds")).toEqual({
      datasetId: "ds",
      root: `${t.root}/ds`,
      policies: {
        keepRuns: 10,
        retentionMs: 30 * DAY,
        failedRetentionMs: 7 * DAY,
        staleAfterMs: HOUR,
        safetyWindowMs: 0,
      },
      safetyWindowHold: null,
      current: null,
      runs: { total: 0, started: 0, publishing: 0, succeeded: 0, failed: 0, pruned: 0 },
      pending: { total: 0, dueNow: 0, waiting: 0, exhausted: 0, nextRetryAt: null },
      floor: { total: 0, nextLeavesAt: null, items: [] },
      lastMaintenance: null,
      lastAudit: null,
    });
  });

  it("gathers the current run, runs by status, pending items, the floor, the last pass and the last audit", async () => {
    await writeAndPublish(ledger, {
      dir: `${t.dir}/ds`,
      root: `${t.root}/ds`,
      datasetId: "ds",
      runId: "r1",
      numShards: 2,
      losers: true,
    });
    const publishedAt = clock.now();
    clock.advance(MIN);
    await ledger.startRun({ datasetId: "ds", numShards: 1, runId: "broken" });
    await ledger.failRun("broken", "writer gave up");
    const failedAt = clock.now();
    clock.advance(MIN);
    await ledger.startRun({ datasetId: "ds", numShards: 1, runId: "running" });

    // A cleanup pass whose deletes fail: the loser waits an hour for its next retry.
    clock.advance(MIN);
    deletesFail = true;
    const passAt = clock.now();
    expect((await ledger.cleanup({ datasetId: "ds" })).failed).toHaveLength(1);
    const [item] = await ledger.pendingCleanup({ datasetId: "ds" });
    expect(item?.nextRetryAt).not.toBeNull();

    const status = await ledger.status("ds");
    expect(status).toMatchObject({
      current: { runId: "r1", manifestUrl: `${t.root}/ds/manifests/r1.json`, since: publishedAt },
      runs: { total: 3, started: 1, publishing: 0, succeeded: 1, failed: 1, pruned: 0 },
      pending: { total: 1, dueNow: 0, waiting: 1, exhausted: 0, nextRetryAt: item?.nextRetryAt },
      floor: {
        total: 1,
        nextLeavesAt: new Date(failedAt.getTime() + 7 * DAY),
        items: [
          {
            kind: "failed_run",
            runId: "broken",
            url: null,
            failedAt,
            protectedUntil: new Date(failedAt.getTime() + 7 * DAY),
          },
        ],
      },
      lastMaintenance: {
        kind: "cleanup",
        startedAt: passAt,
        finishedAt: passAt,
        outcome: "failures",
        deleted: 0,
        failed: 1,
        pruned: 0,
        error: null,
      },
      lastAudit: null,
    });

    // Once its retry time has come, the item counts as due now.
    clock.set((item?.nextRetryAt ?? new Date(Number.NaN)).toISOString());
    expect((await ledger.status("ds")).pending).toEqual({
      total: 1,
      dueNow: 1,
      waiting: 0,
      exhausted: 0,
      nextRetryAt: null,
    });

    // A gc pass that succeeds, then an audit: both are what status shows next.
    deletesFail = false;
    clock.advance(MIN);
    const gcAt = clock.now();
    await ledger.gc("ds");
    const audit = await ledger.audit();
    expect(await ledger.status("ds")).toMatchObject({
      lastMaintenance: { kind: "gc", startedAt: gcAt, outcome: "ok", failed: 0, error: null },
      lastAudit: { at: clock.now(), match: true, events: audit.events, differences: 0 },
    });
  });

  it("reports a dry run as no pass, and a pass that stopped on an error as such", async () => {
    await ledger.gc("ds", { dryRun: true });
    await ledger.cleanup({ datasetId: "ds", dryRun: true });
    expect((await ledger.status("ds")).lastMaintenance).toBeNull();
    await ledger.cleanup({ datasetId: "ds" });
    expect((await ledger.status("ds")).lastMaintenance).toMatchObject({ kind: "cleanup", outcome: "ok" });
    // gc reads _CURRENT before it plans; a store that fails it stops the pass.
    readsFail = true;
    await expect(ledger.gc("ds")).rejects.toThrow(/injected failure: get _CURRENT/);
    expect((await ledger.status("ds")).lastMaintenance).toMatchObject({
      kind: "gc",
      outcome: "error",
      error: "injected failure: get _CURRENT",
    });
  });

  it("names the holder of the last pass, not whoever took the lease after it (archive, rollback)", async () => {
    await ledger.gc("ds");
    const pass = (await ledger.status("ds")).lastMaintenance;
    expect(pass).toMatchObject({ kind: "gc", outcome: "ok" });
    // Another process takes the lease and records no pass (as archive and rollback do).
    await withMaintenanceLease(t.database, "ds", async () => {}, { holder: "archive@elsewhere" });
    expect((await ledger.status("ds")).lastMaintenance).toEqual(pass);
  });

  it("lists every dataset without an id, and refuses an unknown or invalid one", async () => {
    await ledger.createDataset({ datasetId: "another", root: `${t.root}/another` });
    expect((await ledger.status()).map((s) => s.datasetId)).toEqual(["another", "ds"]);
    await expect(ledger.status("nope")).rejects.toBeInstanceOf(NotFoundError);
    await expect(ledger.status("bad id")).rejects.toMatchObject({ code: "VALIDATION", field: "datasetId" });
  });

  it("shows the safety-window hold while it lasts", async () => {
    await ledger.updateDataset("ds", { safetyWindow: "2h" });
    const changedAt = clock.now().getTime();
    await ledger.updateDataset("ds", { safetyWindow: "10m" });
    expect((await ledger.status("ds")).safetyWindowHold).toEqual({
      windowMs: 2 * HOUR,
      until: new Date(changedAt + 2 * HOUR),
    });
    clock.advance(2 * HOUR);
    expect((await ledger.status("ds")).safetyWindowHold).toBeNull();
  });
});
