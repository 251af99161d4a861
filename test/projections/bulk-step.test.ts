import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyLedgerEvents } from "../../src/adapters/postgres/projection-store.js";
import { CURRENT_SCHEMA_VERSIONS, type EventType } from "../../src/events/catalogue.js";
import type { RecordedEvent } from "../../src/events/envelope.js";
import { foldRun } from "../../src/machines/run-state.js";
import { LedgerFold } from "../../src/projections/ledger-fold.js";
import { BACKEND, openTestDatabase } from "../support/database.js";

// A selection (and its undoing) steps every attempt of its run. For a run that already has rows,
// the store applies those steps set-based (UPDATE … WHERE run_id AND phase), without loading the
// rows, and moves the run's counts by what the UPDATE reports. Batches here mix rows the fold
// holds (named by a report or a cleanup event in the batch) with rows only the store holds; the
// tables must end exactly as the one fold of every event in memory says, and as the machine says.

const root = "file:///lake/d";
let position = 0;
function event(type: string, data: Record<string, unknown>): RecordedEvent {
  position++;
  return {
    eventId: `00000000-0000-4000-8000-${String(position).padStart(12, "0")}`,
    streamId: typeof data.runId === "string" ? `run-${data.runId}` : "dataset-d",
    streamVersion: position,
    globalPosition: position,
    type,
    schemaVersion: CURRENT_SCHEMA_VERSIONS[type as EventType],
    data,
    metadata: { correlationId: null, causationId: null, actor: null },
    recordedAt: new Date(Date.UTC(2026, 0, 1, 0, 0, 0, position)),
  };
}
const url = (runId: string, shard: number, attempt: number) => `${root}/data/${runId}/${shard}/${attempt}`;
const report = (runId: string, shard: number, attempt: number, outcome: "Started" | "Succeeded" | "Failed") =>
  event(`Attempt${outcome}`, {
    runId,
    shard,
    attempt,
    taskAttemptId: null,
    url: url(runId, shard, attempt),
    ...(outcome === "Failed" ? { error: "boom" } : {}),
  });
const selection = (runId: string, picks: [shard: number, attempt: number][]) =>
  event("WinnerSelected", {
    runId,
    winners: picks.map(([shard, attempt]) => ({
      shard,
      attempt,
      taskAttemptId: null,
      url: url(runId, shard, attempt),
    })),
  });

/** Shard s has attempts 0 (failed when s % 3 = 0, else succeeded), 1 (succeeded) and 2 (still running). */
function reports(runId: string, shards: number): RecordedEvent[] {
  const out: RecordedEvent[] = [];
  for (let s = 0; s < shards; s++) {
    out.push(report(runId, s, 0, s % 3 === 0 ? "Failed" : "Succeeded"));
    out.push(report(runId, s, 1, "Succeeded"));
    out.push(report(runId, s, 2, "Started"));
  }
  return out;
}

const STEP_COLUMNS = ["phase", "status", "outcome", "cleanup_status", "updated_at"] as const;
const COUNT_COLUMNS = [
  "attempts_total",
  "attempts_started",
  "attempts_succeeded",
  "attempts_failed",
  "attempts_winner",
  "attempts_loser",
  "attempts_cleanup_pending",
  "attempts_deleted",
] as const;

const attemptView = (rows: Iterable<Record<string, unknown>>) =>
  Object.fromEntries(
    [...rows].map((r) => [
      `${String(r.run_id)} ${String(r.attempt_key)}`,
      Object.fromEntries(
        STEP_COLUMNS.map((c) => [c, r[c] instanceof Date ? (r[c] as Date).toISOString() : (r[c] ?? null)]),
      ),
    ]),
  );
const countView = (rows: Iterable<Record<string, unknown>>) =>
  Object.fromEntries([...rows].map((r) => [String(r.run_id), COUNT_COLUMNS.map((c) => Number(r[c]))]));

describe(`a selection steps the attempt rows it does not load in the store (${BACKEND})`, () => {
  let database: Awaited<ReturnType<typeof openTestDatabase>>;
  beforeAll(async () => {
    database = await openTestDatabase("bulkstep");
  });
  afterAll(() => database.close());

  it("ends as the fold of every event in memory and as the machine, batch after batch", async () => {
    const shards = 6;
    const batches: RecordedEvent[][] = [
      [
        event("DatasetRegistered", {
          datasetId: "d",
          root,
          policies: {
            keepRuns: 5,
            retentionMs: 86_400_000,
            failedRetentionMs: 86_400_000,
            staleAfterMs: 3_600_000,
            safetyWindowMs: 0,
          },
        }),
        event("RunStarted", { runId: "a", datasetId: "d", numShards: shards }),
        event("RunStarted", { runId: "b", datasetId: "d", numShards: shards }),
      ],
      [...reports("a", shards), ...reports("b", shards)],
      // Run a: a late report of a stored attempt (the fold holds it) and a new attempt before the
      // selection; winners split over two events, some held (the late one), most only stored;
      // then a report after it (a loser at once), the manifest, and a loser's cleanup by url (the
      // store loads that row, so the fold steps it and the UPDATE leaves it alone).
      [
        report("a", 0, 2, "Succeeded"),
        report("a", 5, 3, "Succeeded"),
        selection("a", [
          [0, 2],
          [1, 1],
          [2, 0],
        ]),
        selection("a", [
          [3, 1],
          [4, 0],
          [5, 3],
        ]),
        report("a", 1, 4, "Succeeded"),
        event("ManifestPublished", {
          runId: "a",
          manifestUrl: `${root}/manifests/a.json`,
          createdAt: "2026-01-01T00:00:00Z",
        }),
        event("RunSucceeded", { runId: "a" }),
        event("CleanupPlanned", { runId: "a", url: url("a", 2, 1), reason: "loser" }),
        event("CleanupSucceeded", { runId: "a", url: url("a", 2, 1), deletedObjects: 1 }),
        event("CleanupPlanned", { runId: "a", url: url("a", 3, 0), reason: "loser" }),
        event("CleanupFailed", {
          runId: "a",
          url: url("a", 3, 0),
          errorCode: "SlowDown",
          errorMessage: "slow",
          transient: true,
          tries: 3,
          exhausted: false,
          nextRetryAt: null,
        }),
      ],
      // Run b: selected in full, then failed before its manifest in the same batch (every attempt
      // steps back), reopened, and a new report.
      [
        selection(
          "b",
          Array.from({ length: shards }, (_, s) => [s, 1] as [number, number]),
        ),
        event("RunFailed", { runId: "b", cause: "writer_abort", reason: "killed" }),
        event("RunReopened", { runId: "b", reason: "retry" }),
        report("b", 0, 3, "Succeeded"),
      ],
      // Run b selected again on its own batch, then failed on another (all rows in the store).
      [
        selection(
          "b",
          Array.from({ length: shards }, (_, s) => [s, s === 0 ? 3 : 1] as [number, number]),
        ),
      ],
      [event("RunFailed", { runId: "b", cause: "writer_abort", reason: "killed again" })],
      // Run a: cleanup of a stored loser in a batch of its own.
      [
        event("CleanupPlanned", { runId: "a", url: url("a", 4, 1), reason: "loser" }),
        event("CleanupSucceeded", { runId: "a", url: url("a", 4, 1), deletedObjects: 1 }),
      ],
    ];

    const memory = new LedgerFold();
    const all: RecordedEvent[] = [];
    for (const batch of batches) {
      await applyLedgerEvents(database.db, database.schema, batch);
      for (const e of batch) memory.apply(e);
      all.push(...batch);

      const stored = await sql<Record<string, unknown>>`
        SELECT * FROM ${sql.id(database.schema, "attempt_records")}`.execute(database.db);
      expect(attemptView(stored.rows)).toEqual(attemptView(memory.attempts.rows.values()));
      const runs = await sql<Record<string, unknown>>`
        SELECT * FROM ${sql.id(database.schema, "runs")}`.execute(database.db);
      expect(countView(runs.rows)).toEqual(countView(memory.runs.rows.values()));
      for (const runId of ["a", "b"]) {
        const machine = foldRun(all.filter((e) => e.streamId === `run-${runId}`));
        const rows = stored.rows.filter((r) => r.run_id === runId);
        expect(rows.length).toBe(machine.attempts.size);
        for (const r of rows) expect(r.phase).toBe(machine.attempts.get(r.attempt_key as string)?.phase);
      }
    }
    // The batches did what they say: a's winners, losers, one loser deleted and one retrying; b
    // back to what its attempts reported.
    const statuses = await sql<{ run_id: string; status: string; n: string }>`
      SELECT run_id, status, count(*) AS n FROM ${sql.id(database.schema, "attempt_records")}
      GROUP BY run_id, status ORDER BY run_id, status`.execute(database.db);
    expect(statuses.rows.map((r) => `${r.run_id} ${r.status} ${r.n}`)).toEqual([
      "a CLEANUP_PENDING 1",
      "a DELETED 2",
      "a LOSER 11",
      "a WINNER 6",
      "b FAILED 2",
      "b STARTED 6",
      "b SUCCEEDED 11",
    ]);
  });
});
