import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BUSY_PLATFORM,
  type EventCounts,
  mixMeans,
  PUBLISH_BENCH_MIX,
  prng,
  type RunShape,
  retainedBound,
  runEvents,
  sampleAttempts,
  simulate,
  total,
} from "../../bench/capacity-sim.js";
import { isShardCoverageError } from "../../src/errors.js";
import { WINNERS_PER_EVENT } from "../../src/events/catalogue.js";
import { datasetStream, runStream } from "../../src/events/streams.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { decideRun } from "../../src/machines/run-commands.js";
import { foldRun } from "../../src/machines/run-state.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger, testClock } from "../support/ledger.js";

const HOUR = 3_600_000;

type Outcome = "SUCCEEDED" | "FAILED" | "RUNNING";

/** How one run of the history goes: per shard, its attempts' outcomes in report order. */
interface PlannedRun {
  runId: string;
  shards: Outcome[][];
  startedReports: boolean;
  heartbeats: number;
  end: "publish" | "abort";
}

const countByType = (types: readonly string[]): EventCounts => {
  const out: EventCounts = {};
  for (const t of types) out[t] = (out[t] ?? 0) + 1;
  return out;
};

function shapeOf(run: PlannedRun, outcome: RunShape["outcome"], pruned: boolean): RunShape {
  const all = run.shards.flat();
  return {
    shards: run.shards.length,
    succeeded: all.filter((o) => o === "SUCCEEDED").length,
    failed: all.filter((o) => o === "FAILED").length,
    running: all.filter((o) => o === "RUNNING").length,
    startedReports: run.startedReports,
    heartbeats: run.heartbeats,
    outcome,
    loserCleanup: outcome === "published",
    pruned,
    archived: false,
  };
}

describe(`capacity model: events per run match a real ledger (${BACKEND})`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  const clock = testClock();
  let taskAttemptId = 1000;

  beforeAll(async () => {
    t = await openTestLedger({ clock: clock.now });
    ledger = t.ledger;
    await ledger.createDataset({
      datasetId: "cap",
      root: `${t.root}/cap`,
      keepRuns: 1,
      failedRetention: "1h",
      safetyWindow: "0s",
    });
  });
  afterAll(() => t.close());

  /** Writes one attempt's data (a distinct prefix per task attempt, as Spark writers lay it out). */
  function attemptUrl(runId: string, shard: number, attempt: number, task: number): string {
    const rel = `data/${runId}/shard=${shard}/attempt=${attempt}-${task}`;
    mkdirSync(join(t.dir, "cap", rel), { recursive: true });
    writeFileSync(join(t.dir, "cap", rel, "part-0"), `${runId}/${shard}/${attempt}`);
    return `${t.root}/cap/${rel}`;
  }

  async function play(run: PlannedRun): Promise<"published" | "coverage_failed" | "aborted"> {
    const { runId } = run;
    await ledger.startRun({ datasetId: "cap", numShards: run.shards.length, runId });
    for (let h = 0; h < run.heartbeats; h++) await ledger.heartbeat(runId);
    for (const [shard, outcomes] of run.shards.entries()) {
      for (const [attempt, outcome] of outcomes.entries()) {
        const task = taskAttemptId++;
        const ref = {
          runId,
          shard,
          attempt,
          taskAttemptId: task,
          url: attemptUrl(runId, shard, attempt, task),
        };
        if (outcome === "RUNNING" || run.startedReports) await ledger.attemptStarted(ref);
        if (outcome === "SUCCEEDED") await ledger.attemptSucceeded(ref);
        if (outcome === "FAILED") await ledger.attemptFailed({ ...ref, error: "executor lost" });
      }
    }
    if (run.end === "abort") {
      await ledger.failRun(runId, "writer aborted");
      return "aborted";
    }
    try {
      await ledger.publish(runId);
      return "published";
    } catch (e) {
      if (!isShardCoverageError(e)) throw e;
      return "coverage_failed";
    }
  }

  it("counts every event of a history (reports, retries, speculation, publish, cleanup, failure, prune) by type and stream", async () => {
    const runs: PlannedRun[] = [
      {
        // With AttemptStarted before every outcome; a retry, a speculative duplicate, a duplicate
        // still running at publish and a failed duplicate.
        runId: "r1",
        shards: [
          ["FAILED", "SUCCEEDED"],
          ["SUCCEEDED", "SUCCEEDED"],
          ["SUCCEEDED", "RUNNING", "FAILED"],
        ],
        startedReports: true,
        heartbeats: 2,
        end: "publish",
      },
      {
        runId: "r2",
        shards: [["SUCCEEDED"], ["FAILED", "FAILED", "SUCCEEDED"]],
        startedReports: false,
        heartbeats: 0,
        end: "publish",
      },
      {
        // Shard 1 never succeeds: publish fails the run on coverage.
        runId: "r3",
        shards: [["SUCCEEDED"], ["FAILED", "RUNNING"]],
        startedReports: false,
        heartbeats: 1,
        end: "publish",
      },
      { runId: "r4", shards: [["SUCCEEDED"]], startedReports: true, heartbeats: 0, end: "abort" },
    ];
    const outcomes = new Map<string, RunShape["outcome"]>();
    for (const run of runs) {
      outcomes.set(run.runId, await play(run));
      clock.advance(60_000);
    }
    expect([...outcomes.values()]).toEqual(["published", "published", "coverage_failed", "aborted"]);
    // Loser cleanup of the published runs.
    const cleaned = await ledger.cleanup({ datasetId: "cap" });
    expect(cleaned.failed).toEqual([]);

    // Before any prune: every run's stream as the model says.
    for (const run of runs) {
      const events = await ledger.events({ stream: runStream(run.runId), limit: 10_000 });
      const expected = runEvents(shapeOf(run, outcomes.get(run.runId) as RunShape["outcome"], false));
      expect(countByType(events.map((e) => e.type)), run.runId).toEqual(expected.run);
    }

    // gc past the failed floor: r1 goes (keepRuns 1, r2 is current), r3 and r4 go (failed past 1h).
    clock.advance(2 * HOUR);
    const report = await ledger.gc("cap");
    expect(report.failed).toEqual([]);
    expect(report.actions.map((a) => a.runId).sort()).toEqual(["r1", "r3", "r4"]);

    const pruned = new Set(["r1", "r3", "r4"]);
    let datasetExpected: EventCounts = { DatasetRegistered: 1 };
    let all = 0;
    for (const run of runs) {
      const events = await ledger.events({ stream: runStream(run.runId), limit: 10_000 });
      const expected = runEvents(
        shapeOf(run, outcomes.get(run.runId) as RunShape["outcome"], pruned.has(run.runId)),
      );
      expect(countByType(events.map((e) => e.type)), run.runId).toEqual(expected.run);
      all += events.length;
      for (const [type, n] of Object.entries(expected.dataset)) {
        datasetExpected = { ...datasetExpected, [type]: (datasetExpected[type] ?? 0) + n };
      }
    }
    const datasetEvents = await ledger.events({ stream: datasetStream("cap"), limit: 10_000 });
    expect(countByType(datasetEvents.map((e) => e.type))).toEqual(datasetExpected);
    // Nothing else in the log: the run and dataset streams are all of it.
    const log = await ledger.events({ limit: 10_000 });
    expect(log.length).toBe(all + datasetEvents.length);
  });
});

describe("capacity model: formula and simulation", () => {
  it("names ⌈shards / 1,000⌉ WinnerSelected events, as the run machine decides them", () => {
    for (const shards of [1, 999, 1000, 1001, 2500]) {
      const at = new Date("2026-01-01T00:00:00Z");
      const run = foldRun([
        { type: "RunStarted", data: { runId: "w", datasetId: "d", numShards: shards }, recordedAt: at },
        ...Array.from({ length: shards }, (_, shard) => ({
          type: "AttemptSucceeded" as const,
          data: { runId: "w", shard, attempt: 0, taskAttemptId: null, url: `file:///d/data/w/${shard}` },
          recordedAt: at,
        })),
      ]);
      const decided = decideRun(run, { type: "selectWinners", runId: "w" }, { now: at });
      const expected = runEvents({
        shards,
        succeeded: shards,
        failed: 0,
        running: 0,
        startedReports: false,
        heartbeats: 0,
        outcome: "published",
        loserCleanup: true,
        pruned: false,
        archived: false,
      });
      expect(decided.length).toBe(expected.run.WinnerSelected);
      expect(expected.run.WinnerSelected).toBe(Math.ceil(shards / WINNERS_PER_EVENT));
    }
  });

  it("archives only pruned runs and moves their count to one Archived event", () => {
    const shape: RunShape = {
      shards: 4,
      succeeded: 5,
      failed: 1,
      running: 0,
      startedReports: false,
      heartbeats: 0,
      outcome: "published",
      loserCleanup: true,
      pruned: false,
      archived: true,
    };
    expect(() => runEvents(shape)).toThrow(/only a pruned run/);
    const archived = runEvents({ ...shape, pruned: true });
    expect(archived.dataset).toEqual({ CurrentPointerMoved: 1, Archived: 1 });
    // 1 start + 6 reports + 1 selection + manifest + succeeded + 2×2 loser cleanup + 2×2 prune cleanup + Pruned
    expect(total(archived.run)).toBe(1 + 6 + 1 + 1 + 1 + 4 + 4 + 1);
  });

  it("samples attempts whose totals follow the mix and are the same for the same seed", () => {
    const means = mixMeans(PUBLISH_BENCH_MIX);
    expect(means.succeeded + means.failed + means.running).toBeCloseTo(2.0, 10);
    const a = sampleAttempts(100_000, PUBLISH_BENCH_MIX, prng(7));
    expect(sampleAttempts(100_000, PUBLISH_BENCH_MIX, prng(7))).toEqual(a);
    expect(a.succeeded).toBeGreaterThanOrEqual(100_000); // every shard has its winner
    expect(Math.abs(a.succeeded / 100_000 - means.succeeded)).toBeLessThan(0.02);
    expect(Math.abs(a.failed / 100_000 - means.failed)).toBeLessThan(0.02);
  });

  it("keeps the hot log under the retained-runs bound with archiving, and grows it linearly without", () => {
    const params = { ...BUSY_PLATFORM, datasets: 3, shards: 2_000, days: 730 };
    const result = simulate(params);
    const bound = retainedBound(params);
    // The dataset streams (2 small events per run, never archived) come on top of the bound.
    for (const m of result.months) {
      expect(m.archived.events).toBeLessThanOrEqual(bound.events + result.datasetStreamEvents);
    }
    const year1 = result.months[11];
    const year2 = result.months[23];
    expect(year1 && year2).toBeTruthy();
    if (!year1 || !year2) return;
    // Without archiving: a year's worth of events a year (linear, within 1%).
    expect(year2.unarchived.events / year1.unarchived.events).toBeGreaterThan(1.98);
    expect(year2.unarchived.events / year1.unarchived.events).toBeLessThan(2.02);
    // With archiving: flat after the first month.
    expect(Math.abs(year2.archived.events - year1.archived.events)).toBeLessThan(
      0.02 * year1.archived.events,
    );
    expect(simulate(params)).toEqual(result);
    // No archiving: both curves are the same.
    const off = simulate({ ...params, archiveAfterDays: null, days: 90 });
    for (const m of off.months) expect(m.archived).toEqual(m.unarchived);
  });
});
