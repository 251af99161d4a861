import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPgEventLog, type PgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import { projectionQueries } from "../../src/adapters/postgres/projection-queries.js";
import { ledgerProjection } from "../../src/adapters/postgres/projection-store.js";
import { auditProjections, rebuildProjections } from "../../src/adapters/postgres/rebuild.js";
import type { NewEvent } from "../../src/events/envelope.js";
import { PROJECTION_TABLES } from "../../src/projections/projection-rows.js";
import { BACKEND, openTestDatabase } from "../support/database.js";

const policies = {
  keepRuns: 2,
  retentionMs: 86_400_000,
  failedRetentionMs: 3_600_000,
  staleAfterMs: 600_000,
  safetyWindowMs: 0,
};
const attempt = (runId: string, shard: number, n: number, tid: string | null, url: string | null) => ({
  runId,
  shard,
  attempt: n,
  taskAttemptId: tid,
  url,
});

describe(`projections, rebuild and audit on ${BACKEND}`, () => {
  let database: Awaited<ReturnType<typeof openTestDatabase>>;
  let log: PgEventLog;
  let now = Date.parse("2026-01-01T00:00:00Z");
  const append = (stream: string, events: NewEvent[]) =>
    log.append(stream, events, { expectedVersion: "any" }).then(() => {
      now += 1000;
    });

  beforeAll(async () => {
    database = await openTestDatabase("projection");
    log = createPgEventLog({
      db: database.db,
      schema: database.schema,
      projections: [ledgerProjection],
      clock: () => new Date(now),
    });
    const root = "file:///tmp/ds1";
    await append("dataset-ds1", [{ type: "DatasetRegistered", data: { datasetId: "ds1", root, policies } }]);
    await append("run-r1", [{ type: "RunStarted", data: { runId: "r1", datasetId: "ds1", numShards: 2 } }]);
    await append("run-r1", [
      { type: "AttemptStarted", data: attempt("r1", 0, 0, "7", `${root}/data/r1/shard=00000/attempt=00-7`) },
      {
        type: "AttemptSucceeded",
        data: attempt("r1", 0, 0, "7", `${root}/data/r1/shard=00000/attempt=00-7`),
      },
      {
        type: "AttemptSucceeded",
        data: attempt("r1", 0, 1, "9", `${root}/data/r1/shard=00000/attempt=01-9`),
      },
      {
        type: "AttemptFailed",
        data: { ...attempt("r1", 1, 0, null, `${root}/data/r1/shard=00001/attempt=00`), error: "OOM" },
      },
      { type: "AttemptSucceeded", data: attempt("r1", 1, 1, null, `${root}/data/r1/shard=00001/attempt=01`) },
    ]);
    // Shard 0's winner in the v1 shape (one event per shard, as logs written before version 2
    // hold it: upcast on the way into the projection), shard 1's in the current shape.
    await append("run-r1", [
      {
        type: "WinnerSelected",
        schemaVersion: 1,
        data: attempt("r1", 0, 0, "7", `${root}/data/r1/shard=00000/attempt=00-7`),
      },
      {
        type: "WinnerSelected",
        data: {
          runId: "r1",
          winners: [
            { shard: 1, attempt: 1, taskAttemptId: null, url: `${root}/data/r1/shard=00001/attempt=01` },
          ],
        },
      },
    ]);
    await append("run-r1", [
      {
        type: "ManifestPublished",
        data: {
          runId: "r1",
          manifestUrl: `${root}/manifests/r1.json`,
          createdAt: new Date(now).toISOString(),
        },
      },
      { type: "RunSucceeded", data: { runId: "r1" } },
    ]);
    await append("dataset-ds1", [
      {
        type: "CurrentPointerMoved",
        data: {
          datasetId: "ds1",
          runId: "r1",
          manifestUrl: `${root}/manifests/r1.json`,
          previousRunId: null,
          reason: "publish",
        },
      },
    ]);
    // A late attempt after publish: a loser at once.
    await append("run-r1", [
      { type: "AttemptSucceeded", data: attempt("r1", 1, 2, null, `${root}/data/r1/shard=00001/attempt=02`) },
    ]);
    const loserUrl = `${root}/data/r1/shard=00000/attempt=01-9`;
    await append("run-r1", [
      { type: "CleanupPlanned", data: { runId: "r1", url: loserUrl, reason: "loser" } },
      {
        type: "CleanupFailed",
        data: {
          runId: "r1",
          url: loserUrl,
          errorCode: "AccessDenied",
          errorMessage: "denied",
          transient: false,
          tries: 1,
          exhausted: true,
          nextRetryAt: null,
        },
      },
      {
        type: "CleanupPlanned",
        data: { runId: "r1", url: `${root}/data/r1/shard=00001/attempt=00`, reason: "loser" },
      },
      {
        type: "CleanupSucceeded",
        data: { runId: "r1", url: `${root}/data/r1/shard=00001/attempt=00`, deletedObjects: 3 },
      },
    ]);
    await append("run-r2", [{ type: "RunStarted", data: { runId: "r2", datasetId: "ds1", numShards: 3 } }]);
    await append("run-r2", [
      { type: "AttemptSucceeded", data: attempt("r2", 0, 0, null, `${root}/data/r2/shard=00000/attempt=00`) },
      { type: "ShardCoverageFailed", data: { runId: "r2", missingShards: [1, 2] } },
      { type: "RunFailed", data: { runId: "r2", cause: "coverage", reason: "missing shards 1, 2" } },
    ]);
    await append("run-r3", [{ type: "RunStarted", data: { runId: "r3", datasetId: "ds1", numShards: 1 } }]);
    await append("run-r3", [
      {
        type: "AttemptFailed",
        data: { ...attempt("r3", 0, 0, null, `${root}/data/r3/shard=00000/attempt=00`), error: "x" },
      },
      { type: "RunFailed", data: { runId: "r3", cause: "writer_abort", reason: "killed" } },
      {
        type: "CleanupFailed",
        data: {
          runId: "r3",
          url: `${root}/data/r3/shard=00000/attempt=00`,
          errorCode: "SlowDown",
          errorMessage: "slow",
          transient: true,
          tries: 5,
          exhausted: true,
          nextRetryAt: null,
        },
      },
    ]);
    await append("run-r3", [
      {
        type: "Pruned",
        data: { runId: "r3", datasetId: "ds1", reason: "failed_retention", attempts: 1, failedItems: 2 },
      },
    ]);
  });
  afterAll(() => database.close());

  it("folds a history into the registry, attempts, winners, pending set, floors and rollups", async () => {
    const q = projectionQueries(database.db, database.schema);
    const runs = await q.runs("ds1");
    expect(runs.map((r) => [r.runId, r.status, r.current])).toEqual([
      ["r2", "FAILED", false],
      ["r1", "SUCCEEDED", true],
    ]);
    const shown = await q.run("r1");
    expect(shown?.winners.map((w) => [w.shard, w.attempt, w.taskAttemptId])).toEqual([
      [0, 0, "7"],
      [1, 1, null],
    ]);
    expect(shown?.attempts.map((a) => [a.shard, a.attempt, a.status])).toEqual([
      [0, 0, "WINNER"],
      [0, 1, "CLEANUP_PENDING"],
      [1, 0, "DELETED"],
      [1, 1, "WINNER"],
      [1, 2, "LOSER"],
    ]);
    expect(shown?.run.attempts).toMatchObject({
      total: 5,
      winner: 2,
      loser: 1,
      cleanupPending: 1,
      deleted: 1,
      succeeded: 0,
    });
    const pending = await q.pendingCleanup({ datasetId: "ds1" });
    expect(pending.map((p) => [p.runId, p.state, p.lastErrorCode, p.tries])).toEqual([
      ["r1", "exhausted", "AccessDenied", 1],
    ]);
    const floors = await q.retentionFloors("ds1");
    expect(floors.map((f) => [f.kind, f.runId])).toEqual([
      ["failed_cleanup", "r1"],
      ["failed_run", "r2"],
    ]);
    expect(
      floors.every((f) => f.protectedUntil.getTime() - f.failedAt.getTime() === policies.failedRetentionMs),
    ).toBe(true);
    expect(await q.rollups("ds1")).toMatchObject([
      { reason: "failed_retention", prunedRuns: 1, prunedAttempts: 1, prunedFailedItems: 2 },
    ]);
  });

  it("leaves no row that refers to a pruned run in any projection table", async () => {
    for (const table of PROJECTION_TABLES) {
      if (table === "datasets" || table === "rollups") continue;
      const { rows } = await sql<{
        n: string | number;
      }>`SELECT count(*) AS n FROM ${sql.id(database.schema, table)} WHERE run_id = 'r3'`.execute(
        database.db,
      );
      expect(Number(rows[0]?.n), table).toBe(0);
    }
    const { rows } = await sql<{
      n: string | number;
    }>`SELECT count(*) AS n FROM ${sql.id(database.schema, "datasets")} WHERE current_run_id = 'r3'`.execute(
      database.db,
    );
    expect(Number(rows[0]?.n)).toBe(0);
  });

  it("audits a match, then names the exact table, row and column of a corrupted projection row", async () => {
    const clean = await auditProjections(log);
    expect(clean.differences).toEqual([]);
    expect(clean.match).toBe(true);
    expect(clean.events).toBeGreaterThan(20);

    await sql`UPDATE ${sql.id(database.schema, "attempt_records")} SET outcome = 'FAILED' WHERE run_id = 'r1' AND attempt_key = '1/2/-'`.execute(
      database.db,
    );
    await sql`DELETE FROM ${sql.id(database.schema, "winners")} WHERE run_id = 'r1' AND shard = 1`.execute(
      database.db,
    );
    const dirty = await auditProjections(log);
    expect(dirty.match).toBe(false);
    expect(dirty.differences).toEqual([
      {
        table: "attempt_records",
        key: { run_id: "r1", attempt_key: "1/2/-" },
        column: "outcome",
        live: "FAILED",
        replayed: "SUCCEEDED",
      },
      expect.objectContaining({
        table: "winners",
        key: { run_id: "r1", shard: 1 },
        column: "missing_in_live",
      }),
    ]);
  });

  it("rebuilds the projections from the log and swaps them in", async () => {
    const result = await rebuildProjections(log);
    expect(result.events).toBeGreaterThan(20);
    const after = await auditProjections(log);
    expect(after.match).toBe(true);
    const q = projectionQueries(database.db, database.schema);
    expect((await q.run("r1"))?.attempts.find((a) => a.attempt === 2)?.status).toBe("LOSER");
    // Appends keep projecting into the swapped-in tables.
    await append("run-r1", [
      { type: "AttemptFailed", data: { ...attempt("r1", 1, 3, null, null), error: "late" } },
    ]);
    expect((await q.run("r1"))?.attempts.find((a) => a.attempt === 3)?.status).toBe("LOSER");
    expect((await auditProjections(log)).match).toBe(true);
  });
});
