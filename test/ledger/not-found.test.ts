import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { errorBody, NotFoundError } from "../../src/errors.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger, testClock } from "../support/ledger.js";

const HOUR = 3_600_000;

/** What an operation rejected with (or `null` when it resolved). */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => null,
    (e: unknown) => e,
  );
}

describe(`a run, dataset or stream that does not exist is NOT_FOUND everywhere (${BACKEND})`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  const clock = testClock();

  beforeAll(async () => {
    t = await openTestLedger({ clock: clock.now });
    ledger = t.ledger;
    await ledger.createDataset({ datasetId: "ds", root: `${t.root}/ds`, safetyWindow: "0s" });
    await ledger.createDataset({ datasetId: "other", root: `${t.root}/other`, safetyWindow: "0s" });
    await ledger.startRun({ datasetId: "other", numShards: 1, runId: "theirs" });
  });
  afterAll(() => t.close());

  const runOps: [string, () => Promise<unknown>][] = [
    ["heartbeat", () => ledger.heartbeat("nosuch")],
    ["attemptStarted", () => ledger.attemptStarted({ runId: "nosuch", shard: 0, attempt: 0 })],
    ["attemptSucceeded", () => ledger.attemptSucceeded({ runId: "nosuch", shard: 0, attempt: 0 })],
    ["attemptFailed", () => ledger.attemptFailed({ runId: "nosuch", shard: 0, attempt: 0, error: "x" })],
    ["failRun", () => ledger.failRun("nosuch", "gave up")],
    ["publish", () => ledger.publish("nosuch")],
    ["run", () => ledger.run("nosuch")],
  ];
  for (const [name, op] of runOps) {
    it(`${name} of an unknown run is a NotFoundError { kind: "run", id } and writes nothing`, async () => {
      const e = await rejection(op());
      expect(e, name).toBeInstanceOf(NotFoundError);
      expect(e).toMatchObject({ code: "NOT_FOUND", details: { kind: "run", id: "nosuch" } });
      expect(await rejection(ledger.events({ stream: "run-nosuch" }))).toMatchObject({ code: "NOT_FOUND" });
    });
  }

  const datasetOps: [string, () => Promise<unknown>][] = [
    ["startRun", () => ledger.startRun({ datasetId: "nosuch", numShards: 1 })],
    ["runs", () => ledger.runs("nosuch")],
    ["retentionFloors", () => ledger.retentionFloors("nosuch")],
    ["rollups", () => ledger.rollups("nosuch")],
    ["pendingCleanup", () => ledger.pendingCleanup({ datasetId: "nosuch" })],
    ["cleanup", () => ledger.cleanup({ datasetId: "nosuch" })],
    ["gc", () => ledger.gc("nosuch")],
    ["retryFailed", () => ledger.retryFailed({ datasetId: "nosuch" })],
  ];
  for (const [name, op] of datasetOps) {
    it(`${name} of an unknown dataset is a NotFoundError { kind: "dataset", id }`, async () => {
      const e = await rejection(op());
      expect(e, name).toBeInstanceOf(NotFoundError);
      expect(e).toMatchObject({ code: "NOT_FOUND", details: { kind: "dataset", id: "nosuch" } });
    });
  }

  it("retryFailed --run of a run that never existed, or of another dataset's run, is not found", async () => {
    const never = await rejection(ledger.retryFailed({ datasetId: "ds", runId: "nosuch" }));
    expect(never).toBeInstanceOf(NotFoundError);
    expect(never).toMatchObject({ details: { kind: "run", id: "nosuch" } });
    const elsewhere = await rejection(ledger.retryFailed({ datasetId: "ds", runId: "theirs" }));
    expect(elsewhere).toBeInstanceOf(NotFoundError);
    expect((elsewhere as Error).message).toMatch(/theirs.*dataset other/);
  });

  it("retryFailed --run of a run pruned past the floor still answers prunedPastRetention, not NOT_FOUND", async () => {
    await ledger.createDataset({
      datasetId: "pf",
      root: `${t.root}/pf`,
      failedRetention: "1h",
      safetyWindow: "0s",
    });
    await ledger.startRun({ datasetId: "pf", numShards: 1, runId: "gone" });
    await ledger.failRun("gone", "writer gave up");
    clock.advance(2 * HOUR);
    const gc = await ledger.gc("pf");
    expect(gc.actions.map((a) => [a.kind, a.runId])).toEqual([["failed_retention", "gone"]]);
    expect(await ledger.retryFailed({ datasetId: "pf", runId: "gone" })).toEqual({
      matched: 0,
      retried: 0,
      prunedPastRetention: 1,
    });
    expect((await ledger.rollups("pf")).map((r) => r.reason)).toEqual(["failed_retention"]);
  });

  it("events({ stream }) takes a stream id, a run id, run:<id> or dataset:<id>; an unknown stream is not found", async () => {
    await ledger.startRun({ datasetId: "ds", numShards: 1, runId: "r1" });
    const byStream = await ledger.events({ stream: "run-r1" });
    expect(byStream.map((e) => e.type)).toEqual(["RunStarted"]);
    expect(await ledger.events({ stream: "r1" })).toEqual(byStream);
    expect(await ledger.events({ stream: "run:r1" })).toEqual(byStream);
    const dataset = await ledger.events({ stream: "dataset:ds" });
    expect(dataset.map((e) => [e.streamId, e.type])).toEqual([["dataset-ds", "DatasetRegistered"]]);
    expect(await ledger.events({ stream: "dataset-ds" })).toEqual(dataset);
    for (const stream of ["nosuch", "run:nosuch", "dataset:nosuch", "dataset:r1"]) {
      const e = await rejection(ledger.events({ stream }));
      expect(e, stream).toBeInstanceOf(NotFoundError);
      expect(e).toMatchObject({ details: { kind: "stream", id: stream } });
    }
    // A stream that exists but has nothing from that version on is an empty page, not an error.
    expect(await ledger.events({ stream: "r1", from: 5 })).toEqual([]);
  });

  it("errorBody gives the one JSON error shape: code, message, field and the details", async () => {
    const e = await rejection(ledger.heartbeat("nosuch"));
    expect(errorBody(e)).toEqual({
      error: { code: "NOT_FOUND", message: "run nosuch does not exist", kind: "run", id: "nosuch" },
    });
  });
});
