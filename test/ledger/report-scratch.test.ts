import { describe, expect, it } from "vitest";
import { reportScratch } from "../../src/ledger/report-scratch.js";
import { decideRun } from "../../src/machines/run-commands.js";
import { cloneRunState, evolveRun, initialRunState } from "../../src/machines/run-state.js";

const now = new Date("2026-01-01T00:00:00Z");

function run() {
  const s = initialRunState();
  evolveRun(s, { type: "RunStarted", data: { runId: "r", datasetId: "d", numShards: 4 }, recordedAt: now });
  evolveRun(s, {
    type: "AttemptStarted",
    data: { runId: "r", shard: 0, attempt: 0, taskAttemptId: null, url: null },
    recordedAt: now,
  });
  return s;
}

describe("report scratch", () => {
  it("folds reports like the state itself and never writes the base", () => {
    const base = run();
    const before = cloneRunState(base);
    const scratch = reportScratch(base);
    const full = cloneRunState(base);
    const commands = [
      {
        type: "attemptSucceeded",
        runId: "r",
        shard: 0,
        attempt: 0,
        url: "file:///x/data/r/shard=00000/attempt=00",
      },
      { type: "attemptFailed", runId: "r", shard: 1, attempt: 0, error: "x" },
      { type: "attemptStarted", runId: "r", shard: 0, attempt: 0 },
    ] as const;
    for (const c of commands) {
      const events = decideRun(scratch, c, { now });
      expect(decideRun(full, c, { now })).toEqual(events);
      for (const e of events) {
        evolveRun(scratch, { type: e.type, data: e.data, recordedAt: now });
        evolveRun(full, { type: e.type, data: e.data, recordedAt: now });
      }
    }
    expect(scratch.version).toBe(full.version);
    expect(scratch.phase).toBe(full.phase);
    for (const key of ["0/0/-", "1/0/-"]) expect(scratch.attempts.get(key)).toEqual(full.attempts.get(key));
    expect(base).toEqual(before);
  });

  it("refuses what a report never does: iterating attempts, changing winners", () => {
    const scratch = reportScratch(run());
    expect(() => [...scratch.attempts.values()]).toThrow(/only attempt reports/);
    expect(() => scratch.attempts.size).toThrow(/only attempt reports/);
    expect(() => (scratch.winners as Map<number, unknown>).set(0, {})).toThrow(/only attempt reports/);
    expect(scratch.winners.size).toBe(0);
  });
});
