import { describe, expect, it } from "vitest";
import type { RecordedEvent } from "../../src/events/envelope.js";
import { attemptPhaseInfo } from "../../src/machines/attempt-machine.js";
import { foldRun } from "../../src/machines/run-state.js";
import { LedgerFold } from "../../src/projections/ledger-fold.js";

// The projection's attempt status is the attempt machine's: the fold steps the same transition
// table the run fold uses, and stores the phase it reached. Checked here without a database (the
// fold is pure), after every event of a history, against foldRun over the same events.

const root = "s3://lake/events";
const url = (runId: string, shard: number, attempt: number) =>
  `${root}/data/${runId}/shard=${String(shard).padStart(5, "0")}/attempt=${String(attempt).padStart(2, "0")}`;

let position = 0;
function event(type: string, data: Record<string, unknown>): RecordedEvent {
  position++;
  return {
    eventId: `e${position}`,
    streamId: `run-${String(data.runId)}`,
    streamVersion: position,
    globalPosition: position,
    type,
    schemaVersion: 1,
    data,
    metadata: {},
    recordedAt: new Date(Date.UTC(2026, 0, 1, 0, 0, position)),
  } as RecordedEvent;
}

const report = (runId: string, shard: number, attempt: number, outcome: "Started" | "Succeeded" | "Failed") =>
  event(`Attempt${outcome}`, {
    runId,
    shard,
    attempt,
    taskAttemptId: null,
    url: url(runId, shard, attempt),
    ...(outcome === "Failed" ? { error: "boom" } : {}),
  });
const winner = (runId: string, shard: number, attempt: number) =>
  event("WinnerSelected", {
    runId,
    winners: [{ shard, attempt, taskAttemptId: null, url: url(runId, shard, attempt) }],
  });

/** Folds `events` one by one and compares every attempt's phase and status with the machine's after each. */
function expectOneFold(runId: string, events: readonly RecordedEvent[]): Map<string, string> {
  const fold = new LedgerFold();
  for (let i = 0; i < events.length; i++) {
    fold.apply(events[i] as RecordedEvent);
    const machine = foldRun(events.slice(0, i + 1));
    const rows = [...fold.attempts.rows.values()].filter((r) => r.run_id === runId);
    expect(rows.length, `after ${events[i]?.type}`).toBe(machine.attempts.size);
    for (const row of rows) {
      const a = machine.attempts.get(row.attempt_key as string);
      expect(row.phase, `${String(row.attempt_key)} after event ${i} (${events[i]?.type})`).toBe(a?.phase);
      expect(row.status).toBe(a?.status);
      expect(row.status).toBe(attemptPhaseInfo(row.phase as string).status);
    }
  }
  const fold2 = new LedgerFold();
  for (const e of events) fold2.apply(e);
  return new Map([...fold2.attempts.rows.values()].map((r) => [r.attempt_key as string, r.status as string]));
}

describe("one fold: the projection steps the attempt machine's transition table", () => {
  it("classifies at the end of a selection split over events, late reports, and cleanup to DELETED", () => {
    const statuses = expectOneFold("r1", [
      event("RunStarted", { runId: "r1", datasetId: "ds1", numShards: 2 }),
      report("r1", 0, 0, "Succeeded"),
      report("r1", 0, 1, "Started"),
      report("r1", 1, 0, "Failed"),
      report("r1", 1, 1, "Succeeded"),
      // Two WinnerSelected events: nobody is a loser until the second completes the selection.
      winner("r1", 0, 0),
      winner("r1", 1, 1),
      report("r1", 0, 2, "Succeeded"),
      report("r1", 0, 1, "Succeeded"),
      event("ManifestPublished", {
        runId: "r1",
        manifestUrl: `${root}/manifests/r1.json`,
        createdAt: "2026-01-01T00:00:00Z",
      }),
      event("RunSucceeded", { runId: "r1" }),
      event("CleanupPlanned", { runId: "r1", url: url("r1", 1, 0), reason: "loser" }),
      event("CleanupFailed", {
        runId: "r1",
        url: url("r1", 1, 0),
        errorCode: "SlowDown",
        errorMessage: "slow",
        transient: true,
        tries: 20,
        exhausted: true,
        nextRetryAt: null,
      }),
      event("CleanupRequeued", { runId: "r1", url: url("r1", 1, 0) }),
      event("CleanupPlanned", { runId: "r1", url: url("r1", 1, 0), reason: "loser" }),
      event("CleanupSucceeded", { runId: "r1", url: url("r1", 1, 0), deletedObjects: 2 }),
      // A winner's url named by a cleanup event: the machine refuses, the winner stays.
      event("CleanupSucceeded", { runId: "r1", url: url("r1", 0, 0), deletedObjects: 0 }),
    ]);
    expect(Object.fromEntries(statuses)).toEqual({
      "0/0/-": "WINNER",
      "0/1/-": "LOSER",
      "0/2/-": "LOSER",
      "1/0/-": "DELETED",
      "1/1/-": "WINNER",
    });
  });

  it("undoes a selection when the run fails before its manifest", () => {
    const statuses = expectOneFold("r2", [
      event("RunStarted", { runId: "r2", datasetId: "ds1", numShards: 2 }),
      report("r2", 0, 0, "Succeeded"),
      report("r2", 1, 0, "Failed"),
      report("r2", 1, 1, "Succeeded"),
      winner("r2", 0, 0),
      winner("r2", 1, 1),
      event("RunFailed", { runId: "r2", cause: "writer_abort", reason: "killed" }),
    ]);
    expect(Object.fromEntries(statuses)).toEqual({
      "0/0/-": "SUCCEEDED",
      "1/0/-": "FAILED",
      "1/1/-": "SUCCEEDED",
    });
  });
});
