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
});
