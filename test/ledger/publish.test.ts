import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openObjectStore } from "../../src/adapters/objectstore/open-object-store.js";
import {
  ContradictingReportError,
  IllegalTransitionError,
  isSafetyRailError,
  isShardCoverageError,
  isValidationError,
  type ShardCoverageError,
} from "../../src/errors.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { BACKEND } from "../support/database.js";
import { failingStore, openTestLedger, testClock } from "../support/ledger.js";

const shardUrl = (root: string, runId: string, shard: number, attempt: number, tid?: string) =>
  `${root}/data/${runId}/shard=${String(shard).padStart(5, "0")}/attempt=${String(attempt).padStart(2, "0")}${tid ? `-${tid}` : ""}`;

describe(`ledger publish protocol on ${BACKEND}`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  let failOn: ((op: string, key: string) => boolean) | null = null;
  const clock = testClock();

  beforeEach(async () => {
    failOn = null;
    t = await openTestLedger({
      clock: clock.now,
      objectStore: (root) => failingStore(openObjectStore(root), (op, key) => failOn?.(op, key) ?? false),
    });
    ledger = t.ledger;
    await ledger.createDataset({ datasetId: "ds", root: t.root, safetyWindow: "0s" });
  });
  afterEach(() => t.close());

  it("selects winners deterministically, writes the manifest, then _CURRENT last, and classifies every attempt", async () => {
    const { runId } = await ledger.startRun({ datasetId: "ds", numShards: 3, runId: "r1" });
    // Shard 0: a retry and a speculative duplicate that both succeed; the smallest tuple wins.
    await ledger.attemptStarted({
      runId,
      shard: 0,
      attempt: 0,
      taskAttemptId: "12",
      url: shardUrl(t.root, runId, 0, 0, "12"),
    });
    await ledger.attemptFailed({
      runId,
      shard: 0,
      attempt: 0,
      taskAttemptId: "12",
      url: shardUrl(t.root, runId, 0, 0, "12"),
      error: "OOM",
    });
    await ledger.attemptSucceeded({
      runId,
      shard: 0,
      attempt: 1,
      taskAttemptId: "31",
      url: shardUrl(t.root, runId, 0, 1, "31"),
    });
    await ledger.attemptSucceeded({
      runId,
      shard: 0,
      attempt: 1,
      taskAttemptId: 9223372036854775806n,
      url: shardUrl(t.root, runId, 0, 1, "x"),
    });
    await ledger.attemptSucceeded({ runId, shard: 1, attempt: 0, url: shardUrl(t.root, runId, 1, 0) });
    await ledger.attemptSucceeded({
      runId,
      shard: 2,
      attempt: 0,
      taskAttemptId: 5,
      url: shardUrl(t.root, runId, 2, 0, "5"),
    });
    // A writer's retry of the same report is recorded once.
    await ledger.attemptSucceeded({
      runId,
      shard: 2,
      attempt: 0,
      taskAttemptId: "5",
      url: shardUrl(t.root, runId, 2, 0, "5"),
    });

    const result = await ledger.publish(runId);
    expect(result.status).toBe("SUCCEEDED");
    expect(result.winners).toEqual([
      { shard: 0, attempt: 1, taskAttemptId: "31", url: shardUrl(t.root, runId, 0, 1, "31") },
      { shard: 1, attempt: 0, taskAttemptId: null, url: shardUrl(t.root, runId, 1, 0) },
      { shard: 2, attempt: 0, taskAttemptId: "5", url: shardUrl(t.root, runId, 2, 0, "5") },
    ]);
    expect(result.manifestUrl).toBe(`${t.root}/manifests/r1.json`);
    const manifest = JSON.parse(readFileSync(join(t.dir, "manifests/r1.json"), "utf8"));
    expect(manifest).toMatchObject({ runId: "r1", datasetId: "ds", numShards: 3, winners: result.winners });
    const pointer = JSON.parse(readFileSync(join(t.dir, "_CURRENT"), "utf8"));
    expect(pointer).toMatchObject({ runId: "r1", manifest: "manifests/r1.json" });

    // A late attempt after publish is a loser at once.
    const late = await ledger.attemptSucceeded({
      runId,
      shard: 1,
      attempt: 1,
      url: shardUrl(t.root, runId, 1, 1),
    });
    expect(late.status).toBe("LOSER");

    const shown = await ledger.run(runId);
    expect(shown.run).toMatchObject({ status: "SUCCEEDED", current: true });
    const statuses = shown.attempts.map((a) => `${a.shard}/${a.attempt}/${a.taskAttemptId}:${a.status}`);
    expect(statuses).toEqual([
      "0/0/12:LOSER",
      "0/1/31:WINNER",
      "0/1/9223372036854775806:LOSER",
      "1/0/null:WINNER",
      "1/1/null:LOSER",
      "2/0/5:WINNER",
    ]);
    expect(
      shown.attempts.filter(
        (a) => a.status === "STARTED" || a.status === "SUCCEEDED" || a.status === "FAILED",
      ),
    ).toEqual([]);
    expect((await ledger.runs("ds")).map((r) => [r.runId, r.current])).toEqual([["r1", true]]);
    expect((await ledger.dataset("ds")).currentRunId).toBe("r1");

    await expect(ledger.publish(runId)).rejects.toBeInstanceOf(IllegalTransitionError);
    expect((await ledger.audit()).match).toBe(true);
  });

  it("fails the run with a ShardCoverageError naming every missing shard, and publishes nothing", async () => {
    const { runId } = await ledger.startRun({ datasetId: "ds", numShards: 5, runId: "r2" });
    await ledger.attemptSucceeded({ runId, shard: 1, attempt: 0, url: shardUrl(t.root, runId, 1, 0) });
    await ledger.attemptFailed({
      runId,
      shard: 3,
      attempt: 0,
      url: shardUrl(t.root, runId, 3, 0),
      error: "x",
    });
    const error = await ledger.publish(runId).catch((e) => e);
    expect(isShardCoverageError(error)).toBe(true);
    expect((error as ShardCoverageError).missingShards).toEqual([0, 2, 3, 4]);
    expect(existsSync(join(t.dir, "manifests/r2.json"))).toBe(false);
    expect(existsSync(join(t.dir, "_CURRENT"))).toBe(false);
    const shown = await ledger.run(runId);
    expect(shown.run).toMatchObject({
      status: "FAILED",
      failureCause: "coverage",
      missingShards: [0, 2, 3, 4],
    });
    await expect(ledger.publish(runId)).rejects.toBeInstanceOf(IllegalTransitionError);
  });

  it("resumes a publish that crashed between the manifest and the pointer, never pointing at a run that is not SUCCEEDED", async () => {
    const first = await ledger.startRun({ datasetId: "ds", numShards: 1, runId: "a" });
    await ledger.attemptSucceeded({
      runId: first.runId,
      shard: 0,
      attempt: 0,
      url: shardUrl(t.root, "a", 0, 0),
    });
    await ledger.publish("a");
    clock.advance(60_000);
    await ledger.startRun({ datasetId: "ds", numShards: 1, runId: "b" });
    // The writer's data: a resumed publish checks that the winners it points readers to are there.
    const winnerDir = join(t.dir, new URL(shardUrl(t.root, "b", 0, 0)).pathname.slice(t.dir.length));
    mkdirSync(winnerDir, { recursive: true });
    writeFileSync(join(winnerDir, "part-0"), "b");
    await ledger.attemptSucceeded({ runId: "b", shard: 0, attempt: 0, url: shardUrl(t.root, "b", 0, 0) });

    failOn = (op, key) => op === "put" && key === "manifests/b.json";
    await expect(ledger.publish("b")).rejects.toThrow("injected failure");
    expect((await ledger.run("b")).run).toMatchObject({
      status: "PUBLISHING",
      publishProgress: "winners_selected",
    });
    expect(JSON.parse(readFileSync(join(t.dir, "_CURRENT"), "utf8")).runId).toBe("a");

    failOn = (op, key) => op === "put" && key === "_CURRENT";
    await expect(ledger.publish("b")).rejects.toThrow("injected failure");
    expect(existsSync(join(t.dir, "manifests/b.json"))).toBe(true);
    expect((await ledger.run("b")).run).toMatchObject({ status: "SUCCEEDED", current: false });
    expect(JSON.parse(readFileSync(join(t.dir, "_CURRENT"), "utf8")).runId).toBe("a");

    failOn = null;
    const resumed = await ledger.publish("b");
    expect(resumed.manifestUrl).toBe(`${t.root}/manifests/b.json`);
    expect(JSON.parse(readFileSync(join(t.dir, "_CURRENT"), "utf8")).runId).toBe("b");
    expect((await ledger.runs("ds")).map((r) => [r.runId, r.current])).toEqual([
      ["b", true],
      ["a", false],
    ]);
    expect((await ledger.run("a")).run.replacedAt).not.toBeNull();
    await expect(ledger.publish("b")).rejects.toBeInstanceOf(IllegalTransitionError);
    expect((await ledger.audit()).match).toBe(true);
  });

  it("refuses bad input naming the field, urls outside the root, and contradicting reports — writing nothing", async () => {
    const { runId } = await ledger.startRun({ datasetId: "ds", numShards: 2, runId: "r3" });
    const before = (await ledger.events({ stream: "run-r3" })).length;
    for (const [input, field] of [
      [{ runId, shard: -1, attempt: 0 }, "shard"],
      [{ runId, shard: 0, attempt: 0, taskAttemptId: "9223372036854775808" }, "taskAttemptId"],
      [{ runId: "bad/id", shard: 0, attempt: 0 }, "runId"],
      [{ runId, shard: 0, attempt: 0, extra: true }, "extra"],
    ] as const) {
      const error = await ledger.attemptSucceeded(input as never).catch((e) => e);
      expect(isValidationError(error), String(error)).toBe(true);
      expect((error as { field: string }).field).toBe(field);
    }
    expect(
      isValidationError(await ledger.attemptSucceeded({ runId, shard: 2, attempt: 0 }).catch((e) => e)),
    ).toBe(true);
    for (const url of [
      `${t.root}/../elsewhere/x`,
      `${t.root}2/data/x`,
      "file:///etc/passwd",
      `${t.root}/data/%2e%2e/x`,
    ]) {
      const error = await ledger.attemptSucceeded({ runId, shard: 0, attempt: 0, url }).catch((e) => e);
      expect(isSafetyRailError(error), `${url}: ${String(error)}`).toBe(true);
    }
    await ledger.attemptSucceeded({ runId, shard: 0, attempt: 0, url: shardUrl(t.root, runId, 0, 0) });
    await expect(
      ledger.attemptFailed({ runId, shard: 0, attempt: 0, url: shardUrl(t.root, runId, 0, 0), error: "no" }),
    ).rejects.toBeInstanceOf(ContradictingReportError);
    expect((await ledger.events({ stream: "run-r3" })).length).toBe(before + 1);
    await expect(ledger.startRun({ datasetId: "nope", numShards: 1 })).rejects.toMatchObject({
      code: "NOT_FOUND",
    });
    await expect(ledger.startRun({ datasetId: "ds", numShards: 0 })).rejects.toMatchObject({
      field: "numShards",
    });
  });
});
