/**
 * `ledger.rollback`: moves `_CURRENT` back to a retained SUCCEEDED run after checking, in the
 * object store, that its manifest and every winner's data are there; records the move as
 * CurrentPointerMoved with reason `rollback`; refuses everything else with the reason and changes
 * nothing. The run rolled back from is ordinary retained data after its safety window.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openObjectStore } from "../../src/adapters/objectstore/open-object-store.js";
import { IllegalTransitionError, NotFoundError, SafetyRailError } from "../../src/errors.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { BACKEND } from "../support/database.js";
import { failingStore, onTestClock, openTestLedger, testClock } from "../support/ledger.js";
import { writeAndPublish, writeAttempt } from "../support/runs.js";

const MIN = 60_000;
const HOUR = 60 * MIN;

describe(`rollback on ${BACKEND}`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  let clock: ReturnType<typeof testClock>;
  let failPut: ((key: string) => boolean) | null;
  let failDelete: ((key: string) => boolean) | null;
  let otherDir: string;

  beforeEach(async () => {
    clock = testClock();
    failPut = null;
    failDelete = null;
    t = await openTestLedger({
      clock: clock.now,
      objectStore: (root) =>
        onTestClock(
          failingStore(
            openObjectStore(root),
            (op, key) =>
              (op === "put" && (failPut?.(key) ?? false)) ||
              (op === "deleteMany" && (failDelete?.(key) ?? false)),
          ),
          clock.now,
        ),
    });
    ledger = t.ledger;
    await ledger.createDataset({ datasetId: "ds", root: t.root, keepRuns: 3, safetyWindow: "1h" });
    otherDir = mkdtempSync(join(tmpdir(), "shardledger-other-"));
    await ledger.createDataset({ datasetId: "other", root: `file://${otherDir}` });
  });
  afterEach(async () => {
    await t.close();
    rmSync(otherDir, { recursive: true, force: true });
  });

  const publish = async (runId: string) => {
    clock.advance(MIN);
    await writeAndPublish(ledger, { dir: t.dir, root: t.root, datasetId: "ds", runId, numShards: 2 });
  };
  const currentFile = () => readFileSync(join(t.dir, "_CURRENT"), "utf8");
  const pointerEvents = async () =>
    (await ledger.events({ stream: "dataset-ds", limit: 1000 })).filter(
      (e) => e.type === "CurrentPointerMoved",
    );

  it("moves _CURRENT back to a retained succeeded run, records why, and marks the run it left as replaced", async () => {
    await publish("r1");
    await publish("r2");
    clock.advance(MIN);
    const result = await ledger.rollback("ds", "r1");
    const manifestUrl = `${t.root}/manifests/r1.json`;
    expect(result).toEqual({ datasetId: "ds", runId: "r1", previousRunId: "r2", manifestUrl });
    expect(JSON.parse(currentFile())).toEqual({
      format: "shardledger.current/1",
      runId: "r1",
      manifest: "manifests/r1.json",
      manifestUrl,
    });
    expect(await ledger.dataset("ds")).toMatchObject({
      currentRunId: "r1",
      currentManifestUrl: manifestUrl,
      currentMovedAt: clock.now(),
    });
    const runs = new Map((await ledger.runs("ds")).map((r) => [r.runId, r]));
    expect(runs.get("r1")).toMatchObject({ current: true, replacedAt: null });
    expect(runs.get("r2")).toMatchObject({ current: false, replacedAt: clock.now(), status: "SUCCEEDED" });
    expect((await pointerEvents()).map((e) => e.data)).toEqual([
      { datasetId: "ds", runId: "r1", manifestUrl, previousRunId: null, reason: "publish" },
      {
        datasetId: "ds",
        runId: "r2",
        manifestUrl: `${t.root}/manifests/r2.json`,
        previousRunId: "r1",
        reason: "publish",
      },
      { datasetId: "ds", runId: "r1", manifestUrl, previousRunId: "r2", reason: "rollback" },
    ]);
    expect((await pointerEvents()).at(-1)?.schemaVersion).toBe(2);
    expect((await ledger.audit()).match).toBe(true);
  });

  it("is not undone by publish: the run rolled back from cannot be re-published, a new run still moves forward", async () => {
    await publish("r1");
    await publish("r2");
    await ledger.rollback("ds", "r1");
    const again = await ledger.publish("r2").catch((e: unknown) => e);
    expect(again).toBeInstanceOf(IllegalTransitionError);
    expect((again as Error).message).toMatch(/already published/);
    expect(JSON.parse(currentFile()).runId).toBe("r1");
    expect((await ledger.dataset("ds")).currentRunId).toBe("r1");

    await publish("r3");
    expect(JSON.parse(currentFile()).runId).toBe("r3");
    expect((await pointerEvents()).at(-1)?.data).toMatchObject({
      runId: "r3",
      previousRunId: "r1",
      reason: "publish",
    });
  });

  it("rolls forward again to the run it rolled back from", async () => {
    await publish("r1");
    await publish("r2");
    await ledger.rollback("ds", "r1");
    expect(await ledger.rollback("ds", "r2")).toMatchObject({ runId: "r2", previousRunId: "r1" });
    expect(JSON.parse(currentFile()).runId).toBe("r2");
    expect((await ledger.audit()).match).toBe(true);
  });

  describe("refusals change nothing", () => {
    async function refused(datasetId: string, runId: string): Promise<unknown> {
      const before = currentFile();
      const events = (await ledger.events({ stream: "dataset-ds", limit: 1000 })).length;
      const error = await ledger.rollback(datasetId, runId).then(
        () => {
          throw new Error("rollback was not refused");
        },
        (e: unknown) => e,
      );
      expect(currentFile()).toBe(before);
      expect(await ledger.events({ stream: "dataset-ds", limit: 1000 })).toHaveLength(events);
      return error;
    }

    beforeEach(async () => {
      await publish("r1");
      await publish("r2");
    });

    it("an invalid id is a ValidationError naming it", async () => {
      await expect(refused("ds", "bad/id")).resolves.toMatchObject({ code: "VALIDATION", field: "toRunId" });
      await expect(refused("bad dataset", "r1")).resolves.toMatchObject({
        code: "VALIDATION",
        field: "datasetId",
      });
    });

    it("an unknown dataset or run is not found", async () => {
      expect(await refused("nope", "r1")).toBeInstanceOf(NotFoundError);
      const missing = await refused("ds", "nope");
      expect(missing).toBeInstanceOf(NotFoundError);
      expect((missing as Error).message).toMatch(/run nope/);
    });

    it("a run of another dataset is a safety rail", async () => {
      await writeAndPublish(ledger, {
        dir: otherDir,
        root: `file://${otherDir}`,
        datasetId: "other",
        runId: "o1",
        numShards: 1,
      });
      const e = await refused("ds", "o1");
      expect(e).toBeInstanceOf(SafetyRailError);
      expect((e as Error).message).toMatch(/dataset other/);
    });

    it("the current run itself", async () => {
      const e = await refused("ds", "r2");
      expect(e).toBeInstanceOf(IllegalTransitionError);
      expect((e as Error).message).toMatch(/already the current run/);
    });

    it("a FAILED, STARTED or PUBLISHING run", async () => {
      await ledger.startRun({ datasetId: "ds", numShards: 1, runId: "failed" });
      await ledger.failRun("failed", "writer gave up");
      await ledger.startRun({ datasetId: "ds", numShards: 1, runId: "started" });
      await ledger.startRun({ datasetId: "ds", numShards: 1, runId: "publishing" });
      await ledger.attemptSucceeded({
        runId: "publishing",
        shard: 0,
        attempt: 0,
        url: writeAttempt(t.dir, t.root, "publishing", 0, 0),
      });
      // The manifest write fails: the run stays PUBLISHING with its winners selected.
      failPut = (key) => key === "manifests/publishing.json";
      await expect(ledger.publish("publishing")).rejects.toThrow(/injected failure/);
      failPut = null;
      for (const [runId, status] of [
        ["failed", "FAILED"],
        ["started", "STARTED"],
        ["publishing", "PUBLISHING"],
      ] as const) {
        expect((await ledger.run(runId)).run.status).toBe(status);
        const e = await refused("ds", runId);
        expect(e).toBeInstanceOf(IllegalTransitionError);
        expect((e as Error).message).toContain(status);
      }
    });

    it("a PRUNED run", async () => {
      await ledger.updateDataset("ds", { keepRuns: 1 });
      clock.advance(2 * HOUR);
      expect((await ledger.gc("ds")).actions.map((a) => [a.kind, a.runId])).toEqual([["keep_runs", "r1"]]);
      const e = await refused("ds", "r1");
      expect(e).toBeInstanceOf(IllegalTransitionError);
      expect((e as Error).message).toMatch(/pruned/);
    });

    it("a run whose manifest is missing", async () => {
      rmSync(join(t.dir, "manifests/r1.json"));
      const e = await refused("ds", "r1");
      expect(e).toBeInstanceOf(IllegalTransitionError);
      expect((e as Error).message).toMatch(/manifest .*r1\.json is missing/);
    });

    it("a run with a winner's data missing", async () => {
      rmSync(join(t.dir, "data/r1/shard=00001"), { recursive: true });
      const e = await refused("ds", "r1");
      expect(e).toBeInstanceOf(IllegalTransitionError);
      expect((e as Error).message).toMatch(/winner\(s\) of shard\(s\) 1 is missing/);
    });
  });

  it("the run rolled back from keeps its safety window, then is ordinary data: pruned by keepRuns once newer runs push it out", async () => {
    await ledger.updateDataset("ds", { keepRuns: 1 });
    await publish("r1");
    await publish("r2");
    await ledger.rollback("ds", "r1");
    const rolledBackAt = clock.now().getTime();

    // Newer than the current run, but it was current once: not kept as "publish may still move
    // _CURRENT to it" — first by the safety window, then as the newest succeeded run (keepRuns 1).
    clock.advance(MIN);
    const inside = await ledger.gc("ds");
    expect(inside.actions).toEqual([]);
    expect(inside.protected.find((p) => p.runId === "r2")?.why).toMatch(/inside the safety window/);
    clock.set(new Date(rolledBackAt + 2 * HOUR).toISOString());
    const after = await ledger.gc("ds");
    expect(after.actions).toEqual([]);
    expect(after.protected.find((p) => p.runId === "r2")?.why).toMatch(
      /one of the newest keepRuns \(1 of 1 kept\)/,
    );
    expect(after.protected.find((p) => p.runId === "r1")?.why).toMatch(/current run/);

    // A new run: r2 (rolled back from) and r1 (replaced now) both fall outside keepRuns; r1 waits
    // for its own safety window, r2's passed long ago.
    await publish("r3");
    const next = await ledger.gc("ds");
    expect(next.actions.map((a) => [a.kind, a.runId])).toEqual([["keep_runs", "r2"]]);
    expect(next.protected.find((p) => p.runId === "r1")?.why).toMatch(/inside the safety window/);
    clock.advance(HOUR);
    expect((await ledger.gc("ds")).actions.map((a) => [a.kind, a.runId])).toEqual([["keep_runs", "r1"]]);
    expect((await ledger.runs("ds")).map((r) => r.runId)).toEqual(["r3"]);
    expect((await ledger.audit()).match).toBe(true);
  });

  it("gc keeps the run the store's _CURRENT names, even when the log does not know it moved there (a crash between the two)", async () => {
    await ledger.updateDataset("ds", { keepRuns: 1, safetyWindow: "0s" });
    await publish("r1");
    await publish("r2");
    // What a rollback that crashed after writing _CURRENT (and before recording it) leaves behind.
    const pointer = JSON.parse(currentFile()) as Record<string, string>;
    writeFileSync(
      join(t.dir, "_CURRENT"),
      `${JSON.stringify({ ...pointer, runId: "r1", manifest: "manifests/r1.json", manifestUrl: `${t.root}/manifests/r1.json` })}\n`,
    );
    clock.advance(HOUR);
    const gc = await ledger.gc("ds");
    expect(gc.actions).toEqual([]);
    expect(gc.protected.find((p) => p.runId === "r1")?.why).toMatch(/_CURRENT in the object store/);
    // Running the rollback again finishes it.
    expect(await ledger.rollback("ds", "r1")).toMatchObject({ runId: "r1", previousRunId: "r2" });
    expect((await ledger.dataset("ds")).currentRunId).toBe("r1");
  });

  // The prune of r1 was planned (and its manifest's deletion failed) before the rollback's crash:
  // cleanup retries it later, and must judge it on the store's _CURRENT as it is then.
  it.each([1, 16])(
    "cleanup (concurrency %i) never takes a pending prune of the run the store's _CURRENT names, and the rollback can still finish",
    async (concurrency) => {
      await ledger.updateDataset("ds", { keepRuns: 1, safetyWindow: "0s" });
      await publish("r1");
      await publish("r2");
      clock.advance(HOUR);
      failDelete = (key) => key === "manifests/r1.json";
      const gc = await ledger.gc("ds");
      failDelete = null;
      expect(gc.failed.map((f) => f.url)).toEqual([`${t.root}/manifests/r1.json`]);
      expect((await ledger.pendingCleanup({ datasetId: "ds" })).map((p) => [p.runId, p.reason])).toEqual([
        ["r1", "keep_runs"],
      ]);
      // A rollback to r1 that crashed after writing _CURRENT, before recording the move.
      const pointer = JSON.parse(currentFile()) as Record<string, string>;
      writeFileSync(
        join(t.dir, "_CURRENT"),
        `${JSON.stringify({ ...pointer, runId: "r1", manifest: "manifests/r1.json", manifestUrl: `${t.root}/manifests/r1.json` })}\n`,
      );
      clock.advance(2 * HOUR);
      const cleanup = await ledger.cleanup({ datasetId: "ds", retryNow: true, concurrency });
      expect(cleanup.deleted).toEqual([]);
      expect(existsSync(join(t.dir, "manifests/r1.json"))).toBe(true);
      expect(existsSync(join(t.dir, "data/r1"))).toBe(true);
      expect(await ledger.rollback("ds", "r1")).toMatchObject({ runId: "r1", previousRunId: "r2" });
      expect((await ledger.dataset("ds")).currentRunId).toBe("r1");
    },
  );
});
