import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ContradictingReportError, IllegalTransitionError } from "../../src/errors.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger, testClock } from "../support/ledger.js";

const shardUrl = (root: string, runId: string, shard: number, attempt: number) =>
  `${root}/data/${runId}/shard=${String(shard).padStart(5, "0")}/attempt=${String(attempt).padStart(2, "0")}`;

describe(`run and attempt rules on ${BACKEND}`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  const clock = testClock();

  beforeEach(async () => {
    t = await openTestLedger({ clock: clock.now });
    ledger = t.ledger;
    await ledger.createDataset({ datasetId: "ds", root: t.root, safetyWindow: "0s" });
    await ledger.createDataset({ datasetId: "other", root: `${t.root}-other`, safetyWindow: "0s" });
  });
  afterEach(() => t.close());

  const streamLength = async (runId: string) => (await ledger.events({ stream: `run-${runId}` })).length;

  async function refusedStart(input: { datasetId: string; numShards: number; runId: string }) {
    const before = await streamLength(input.runId);
    const error = await ledger.startRun(input).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error, JSON.stringify(input)).toBeInstanceOf(IllegalTransitionError);
    expect(await streamLength(input.runId), "nothing written").toBe(before);
    return error as IllegalTransitionError;
  }

  it("run start with an existing run id is a retry only while that run is STARTED, with the same dataset and shards", async () => {
    const first = await ledger.startRun({ datasetId: "ds", numShards: 1, runId: "r1" });
    expect(first).toEqual({ runId: "r1", datasetId: "ds", numShards: 1, status: "STARTED" });
    const events = await streamLength("r1");
    expect(await ledger.startRun({ datasetId: "ds", numShards: 1, runId: "r1" })).toEqual(first);
    expect(await streamLength("r1")).toBe(events);

    expect((await refusedStart({ datasetId: "ds", numShards: 2, runId: "r1" })).message).toMatch(/STARTED/);
    await refusedStart({ datasetId: "other", numShards: 1, runId: "r1" });

    await ledger.attemptSucceeded({ runId: "r1", shard: 0, attempt: 0, url: shardUrl(t.root, "r1", 0, 0) });
    await ledger.publish("r1");
    const succeeded = await refusedStart({ datasetId: "ds", numShards: 1, runId: "r1" });
    expect(succeeded.message).toMatch(/r1.*SUCCEEDED/);
    expect(succeeded.details).toMatchObject({ command: "start", state: "SUCCEEDED" });
    // The published run is untouched: a rerun's reports cannot make its attempts losers.
    expect((await ledger.run("r1")).run.status).toBe("SUCCEEDED");

    await ledger.startRun({ datasetId: "ds", numShards: 2, runId: "r2" });
    await ledger.failRun("r2", "writer gave up");
    expect((await refusedStart({ datasetId: "ds", numShards: 2, runId: "r2" })).message).toMatch(
      /r2.*FAILED/,
    );
  });

  it("refuses a report whose url the record would drop (recorded without one, nothing to store it in), writing nothing", async () => {
    // Found by the group-commit race property: `started` without a url, then `started` with url A,
    // was answered "recorded at A" while nothing stored A — and a later `succeeded` at url B was
    // accepted, leaving A's data unrecorded while its writer believed otherwise.
    await ledger.startRun({ datasetId: "ds", numShards: 2, runId: "r9" });
    const a = (shard: number) => shardUrl(t.root, "r9", shard, 0);
    await ledger.attemptStarted({ runId: "r9", shard: 0, attempt: 0 });
    await ledger.attemptSucceeded({ runId: "r9", shard: 1, attempt: 0 });
    for (const [report, shard] of [
      ["attemptStarted", 0],
      ["attemptStarted", 1],
      ["attemptSucceeded", 1],
    ] as const) {
      const before = await streamLength("r9");
      const error = await ledger[report]({ runId: "r9", shard, attempt: 0, url: a(shard) }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(error, `${report} ${shard}`).toBeInstanceOf(ContradictingReportError);
      expect((error as ContradictingReportError).details).toMatchObject({
        recordedUrl: null,
        reportedUrl: a(shard),
      });
      expect(await streamLength("r9"), "nothing written").toBe(before);
    }
    // The outcome that completes the record still takes its url.
    const done = await ledger.attemptSucceeded({ runId: "r9", shard: 0, attempt: 0, url: a(0) });
    expect(done).toMatchObject({ status: "SUCCEEDED", url: a(0) });
  });

  it("refuses a report of a recorded attempt with another url as contradicting, writing nothing", async () => {
    await ledger.startRun({ datasetId: "ds", numShards: 4, runId: "r3" });
    const a = (shard: number) => shardUrl(t.root, "r3", shard, 0);
    const b = (shard: number) => shardUrl(t.root, "r3", shard, 1);

    async function contradicts(
      report: "attemptStarted" | "attemptSucceeded" | "attemptFailed",
      shard: number,
      url: string,
    ) {
      const before = await streamLength("r3");
      const input = { runId: "r3", shard, attempt: 0, url };
      const reported =
        report === "attemptFailed"
          ? ledger.attemptFailed({ ...input, error: "lost" })
          : ledger[report](input);
      const error = await reported.then(
        () => null,
        (e: unknown) => e,
      );
      expect(error, `${report} ${url}`).toBeInstanceOf(ContradictingReportError);
      expect((error as ContradictingReportError).message).toContain(url);
      expect((error as ContradictingReportError).details).toMatchObject({
        identity: `r3/${shard}/0/-`,
        recordedUrl: a(shard),
        reportedUrl: url,
      });
      expect(await streamLength("r3"), "nothing written").toBe(before);
    }

    // Shard 0: the same outcome twice, with different urls.
    await ledger.attemptSucceeded({ runId: "r3", shard: 0, attempt: 0, url: a(0) });
    await contradicts("attemptSucceeded", 0, b(0));
    await contradicts("attemptStarted", 0, b(0));
    // Shard 1: started at one url, succeeded at another.
    await ledger.attemptStarted({ runId: "r3", shard: 1, attempt: 0, url: a(1) });
    await contradicts("attemptSucceeded", 1, b(1));
    // Shard 2: failed twice at different urls.
    await ledger.attemptFailed({ runId: "r3", shard: 2, attempt: 0, url: a(2), error: "OOM" });
    await contradicts("attemptFailed", 2, b(2));

    // No contradiction: a url repeated, or given on only one side.
    expect(await ledger.attemptSucceeded({ runId: "r3", shard: 0, attempt: 0 })).toMatchObject({
      url: a(0),
      status: "SUCCEEDED",
    });
    expect(await ledger.attemptSucceeded({ runId: "r3", shard: 0, attempt: 0, url: a(0) })).toMatchObject({
      url: a(0),
    });
    expect(await ledger.attemptSucceeded({ runId: "r3", shard: 1, attempt: 0, url: a(1) })).toMatchObject({
      url: a(1),
      status: "SUCCEEDED",
    });
    await ledger.attemptStarted({ runId: "r3", shard: 3, attempt: 0 });
    expect(await ledger.attemptSucceeded({ runId: "r3", shard: 3, attempt: 0, url: a(3) })).toMatchObject({
      url: a(3),
      status: "SUCCEEDED",
    });
    const shown = await ledger.run("r3");
    expect(shown.attempts.map((x) => [x.shard, x.url, x.status])).toEqual([
      [0, a(0), "SUCCEEDED"],
      [1, a(1), "SUCCEEDED"],
      [2, a(2), "FAILED"],
      [3, a(3), "SUCCEEDED"],
    ]);
  });
});
