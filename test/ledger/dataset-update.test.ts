/**
 * `ledger.updateDataset`: a DatasetPoliciesChanged event, validated exactly as at create, that never
 * takes back protection already promised (the failed-retention floor keeps each item's
 * `protectedUntil`; a shorter safety window applies fully only once the old window has passed since
 * the change), while keepRuns may shrink and the next gc prunes by it.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isValidationError, NotFoundError, type ValidationError } from "../../src/errors.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger, testClock } from "../support/ledger.js";
import { writeAndPublish } from "../support/runs.js";

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

describe(`dataset policy changes on ${BACKEND}`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  let clock: ReturnType<typeof testClock>;

  beforeEach(async () => {
    clock = testClock();
    t = await openTestLedger({ clock: clock.now });
    ledger = t.ledger;
    await ledger.createDataset({
      datasetId: "ds",
      root: t.root,
      keepRuns: 3,
      retention: "30d",
      failedRetention: "7d",
      staleAfter: "1h",
      safetyWindow: "1h",
    });
  });
  afterEach(() => t.close());

  const datasetEvents = () => ledger.events({ stream: "dataset-ds", limit: 1000 });
  const publish = (runId: string) =>
    writeAndPublish(ledger, { dir: t.dir, root: t.root, datasetId: "ds", runId, numShards: 2 });

  it("appends DatasetPoliciesChanged with the whole new policy set; unchanged values write nothing", async () => {
    const updated = await ledger.updateDataset("ds", { keepRuns: 1, retention: "14d" });
    expect(updated.policies).toEqual({
      keepRuns: 1,
      retentionMs: 14 * DAY,
      failedRetentionMs: 7 * DAY,
      staleAfterMs: HOUR,
      safetyWindowMs: HOUR,
    });
    expect(await ledger.dataset("ds")).toMatchObject({ policies: updated.policies });
    const events = await datasetEvents();
    expect(events.map((e) => e.type)).toEqual(["DatasetRegistered", "DatasetPoliciesChanged"]);
    expect(events[1]?.data).toEqual({ datasetId: "ds", policies: updated.policies });

    // Durations in milliseconds are accepted as at create; the same values again are a no-op.
    await ledger.updateDataset("ds", { keepRuns: 1, retention: 14 * DAY });
    expect(await datasetEvents()).toHaveLength(2);
    expect((await ledger.audit()).match).toBe(true);
  });

  it.each([
    [{ keepRuns: 0 }, "keepRuns"],
    [{ keepRuns: -1 }, "keepRuns"],
    [{ keepRuns: 1.5 }, "keepRuns"],
    [{ retention: "0s" }, "retention"],
    [{ retention: "-1d" }, "retention"],
    [{ retention: "7 days" }, "retention"],
    [{ failedRetention: "0s" }, "failedRetention"],
    [{ failedRetention: -5 }, "failedRetention"],
    [{ staleAfter: "forever" }, "staleAfter"],
    [{ staleAfter: "99999999999d" }, "staleAfter"],
    [{ safetyWindow: "-1s" }, "safetyWindow"],
    [{ root: `file:///elsewhere` }, "root"],
    [{ datasetId: "other" }, "datasetId"],
    [{ bogus: 1 }, "bogus"],
    [{}, "policies"],
  ])("refuses %j naming %s, and writes nothing", async (changes, field) => {
    const before = await ledger.dataset("ds");
    let error: ValidationError | undefined;
    try {
      await ledger.updateDataset("ds", changes as never);
    } catch (e) {
      if (!isValidationError(e)) throw e;
      error = e;
    }
    expect(error?.field).toBe(field);
    expect(await datasetEvents()).toHaveLength(1);
    expect(await ledger.dataset("ds")).toEqual(before);
  });

  it("refuses an invalid dataset id (ValidationError) and an unknown dataset (NotFoundError)", async () => {
    await expect(ledger.updateDataset("no such/id", { keepRuns: 2 })).rejects.toMatchObject({
      code: "VALIDATION",
      field: "datasetId",
    });
    const missing = await ledger.updateDataset("nope", { keepRuns: 2 }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(NotFoundError);
    // Nothing was written: the dataset's stream does not exist.
    await expect(ledger.events({ stream: "dataset-nope" })).rejects.toBeInstanceOf(NotFoundError);
  });

  it("keeps what the failed-retention floor promised on a shrink, extends it on a growth, and gives later failures the new value", async () => {
    await ledger.startRun({ datasetId: "ds", numShards: 1, runId: "early" });
    await ledger.failRun("early", "writer gave up");
    const failedAt = clock.now().getTime();
    const floorOf = async (runId: string) =>
      (await ledger.retentionFloors("ds")).find((f) => f.runId === runId)?.protectedUntil.getTime();
    expect(await floorOf("early")).toBe(failedAt + 7 * DAY);

    clock.advance(MIN);
    await ledger.updateDataset("ds", { failedRetention: "1h" });
    // Promised 7 days when it failed: a shrink does not take that back.
    expect(await floorOf("early")).toBe(failedAt + 7 * DAY);

    await ledger.startRun({ datasetId: "ds", numShards: 1, runId: "late" });
    await ledger.failRun("late", "writer gave up");
    const lateFailedAt = clock.now().getTime();
    expect(await floorOf("late")).toBe(lateFailedAt + HOUR);

    // Two hours on: the early run is still inside its floor (gc keeps it, retry-failed reopens it);
    // the late one has left its one-hour floor (gc collects it once the safety window passed too).
    clock.advance(2 * HOUR);
    const gc = await ledger.gc("ds");
    expect(gc.protected.find((p) => p.runId === "early")?.why).toMatch(/failed-retention floor/);
    expect(gc.actions.map((a) => [a.kind, a.runId])).toEqual([["failed_retention", "late"]]);
    expect(await ledger.retryFailed({ datasetId: "ds", runId: "early" })).toMatchObject({
      matched: 1,
      retried: 1,
    });
    expect((await ledger.run("early")).run.status).toBe("STARTED");

    // A growth reaches every item already in the floor.
    await ledger.failRun("early", "gave up again");
    const refailedAt = clock.now().getTime();
    await ledger.updateDataset("ds", { failedRetention: "14d" });
    expect(await floorOf("early")).toBe(refailedAt + 14 * DAY);
    expect((await ledger.audit()).match).toBe(true);
  });

  it("keeps what the longer safety window promised; runs replaced after the change get the shorter one once the old window has passed since the change", async () => {
    await ledger.updateDataset("ds", { keepRuns: 1 });
    await publish("r1");
    clock.advance(MIN);
    await publish("r2"); // r1 replaced now: promised one hour
    const replacedAt = clock.now().getTime();
    clock.advance(MIN);
    await ledger.updateDataset("ds", { safetyWindow: "0s" });
    const changedAt = clock.now().getTime();
    const view = await ledger.dataset("ds");
    expect(view.policies.safetyWindowMs).toBe(0);
    expect(view.safetyWindowHold).toEqual({ windowMs: HOUR, until: new Date(changedAt + HOUR) });

    // Under a 0s window r1 would go now; it was promised an hour from its replacement.
    clock.advance(30 * MIN);
    const early = await ledger.gc("ds");
    expect(early.actions).toEqual([]);
    expect(early.protected.find((p) => p.runId === "r1")?.why).toMatch(/safety window/);
    clock.set(new Date(replacedAt + HOUR - 1).toISOString());
    expect((await ledger.gc("ds")).actions).toEqual([]);
    clock.set(new Date(replacedAt + HOUR).toISOString());
    expect((await ledger.gc("ds")).actions.map((a) => [a.kind, a.runId])).toEqual([["keep_runs", "r1"]]);

    // r2 is replaced after the change, while the old window still holds: kept until the hold ends,
    // then the new window (0s) rules.
    await publish("r3");
    const held = await ledger.gc("ds");
    expect(held.actions).toEqual([]);
    expect(held.protected.find((p) => p.runId === "r2")?.why).toMatch(/safety window/);
    clock.set(new Date(changedAt + HOUR).toISOString());
    expect((await ledger.gc("ds")).actions.map((a) => [a.kind, a.runId])).toEqual([["keep_runs", "r2"]]);
    expect((await ledger.audit()).match).toBe(true);
  });

  it("a growing safety window needs no hold; a change inside a hold keeps the longest promise", async () => {
    await ledger.updateDataset("ds", { safetyWindow: "2h" });
    expect((await ledger.dataset("ds")).safetyWindowHold ?? null).toBeNull();
    const first = clock.now().getTime();
    await ledger.updateDataset("ds", { safetyWindow: "30m" });
    const hold = { windowMs: 2 * HOUR, until: new Date(first + 2 * HOUR) };
    expect((await ledger.dataset("ds")).safetyWindowHold).toEqual(hold);
    // An hour on, shrinking again or growing below the held window: what was promised before the
    // first change still ends at first + 2h, and what was promised since (30m) ends before that.
    clock.advance(HOUR);
    await ledger.updateDataset("ds", { safetyWindow: "10m" });
    expect((await ledger.dataset("ds")).safetyWindowHold).toEqual(hold);
    await ledger.updateDataset("ds", { safetyWindow: "1h" });
    expect((await ledger.dataset("ds")).safetyWindowHold).toEqual(hold);
    // Growing to the held window or beyond ends the hold: the window itself keeps every promise.
    await ledger.updateDataset("ds", { safetyWindow: "3h" });
    expect((await ledger.dataset("ds")).safetyWindowHold ?? null).toBeNull();
    expect((await ledger.audit()).match).toBe(true);
  });

  it("lets keepRuns shrink: the next gc prunes by the new value, never the current run", async () => {
    await ledger.updateDataset("ds", { safetyWindow: "0s" });
    for (const runId of ["r1", "r2", "r3"]) {
      clock.advance(MIN);
      await publish(runId);
    }
    // Past the hold of the old one-hour window: only keepRuns decides.
    clock.advance(HOUR);
    expect((await ledger.gc("ds")).actions).toEqual([]);
    await ledger.updateDataset("ds", { keepRuns: 1 });
    const gc = await ledger.gc("ds");
    expect(gc.actions.map((a) => [a.kind, a.runId]).sort()).toEqual([
      ["keep_runs", "r1"],
      ["keep_runs", "r2"],
    ]);
    expect((await ledger.runs("ds")).map((r) => [r.runId, r.current])).toEqual([["r3", true]]);
  });

  it("serialises concurrent changes on the dataset stream: each lands on top of the other", async () => {
    await Promise.all([
      ledger.updateDataset("ds", { keepRuns: 5 }),
      ledger.updateDataset("ds", { retention: "60d" }),
      ledger.updateDataset("ds", { staleAfter: "2h" }),
    ]);
    expect((await ledger.dataset("ds")).policies).toMatchObject({
      keepRuns: 5,
      retentionMs: 60 * DAY,
      staleAfterMs: 2 * HOUR,
    });
    expect((await datasetEvents()).map((e) => e.streamVersion)).toEqual([1, 2, 3, 4]);
  });
});
