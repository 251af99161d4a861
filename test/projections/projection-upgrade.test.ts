import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MIGRATIONS, migrateToLatest } from "../../src/adapters/postgres/migrations.js";
import { createPgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import { projectionQueries } from "../../src/adapters/postgres/projection-queries.js";
import { PROJECTION_VERSION } from "../../src/adapters/postgres/projection-schema.js";
import { auditProjections } from "../../src/adapters/postgres/rebuild.js";
import type { NewEvent } from "../../src/events/envelope.js";
import { BACKEND, openTestDatabase } from "../support/database.js";

/*
 * An install made before projection version 2: its `attempts` table stored every attempt's status
 * (rewritten at publish) and its log holds WinnerSelected events of schema version 1, one per
 * shard. Migrating it must rebuild the projections from that log: same statuses, counts that add
 * up, an audit that matches, and the stored events untouched.
 */

const root = "file:///lake/sales";
const url = (shard: number, attempt: number) => `${root}/data/r1/shard=${shard}/attempt=${attempt}`;
const ref = (shard: number, attempt: number) => ({
  runId: "r1",
  shard,
  attempt,
  taskAttemptId: null,
  url: url(shard, attempt),
});

describe(`upgrading a version-1 install (${BACKEND})`, () => {
  let database: Awaited<ReturnType<typeof openTestDatabase>>;
  beforeAll(async () => {
    database = await openTestDatabase("upgrade", { migrate: false });
  });
  afterAll(() => database.close());

  it("rebuilds the projections from a log with v1 WinnerSelected events", async () => {
    const { db, schema } = database;
    const t = (name: string) => sql.id(schema, name);
    await migrateToLatest(db, schema, MIGRATIONS.slice(0, 2));
    // The version-1 shape of the tables this upgrade changes.
    await sql`DROP VIEW ${t("attempts")}`.execute(db);
    await sql`DROP TABLE ${t("attempt_records")}`.execute(db);
    await sql`ALTER TABLE ${t("runs")} DROP COLUMN winners_selected_at`.execute(db);
    await sql`CREATE TABLE ${t("attempts")} (
      run_id text NOT NULL, attempt_key text NOT NULL, dataset_id text NOT NULL, shard integer NOT NULL,
      attempt integer NOT NULL, task_attempt_id text, url text, status text NOT NULL, outcome text NOT NULL,
      error text, reported_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
      PRIMARY KEY (run_id, attempt_key))`.execute(db);
    await sql`CREATE INDEX ON ${t("attempts")} (dataset_id, status)`.execute(db);
    await sql`UPDATE ${t("projection_state")} SET version = 1`.execute(db);

    // The history, appended without projections (the version-1 fold is gone; the upgrade replays).
    const log = createPgEventLog({ db, schema });
    const append = (stream: string, events: NewEvent[]) =>
      log.append(stream, events, { expectedVersion: "any" });
    await append("dataset-sales", [
      {
        type: "DatasetRegistered",
        data: {
          datasetId: "sales",
          root,
          policies: {
            keepRuns: 2,
            retentionMs: 86_400_000,
            failedRetentionMs: 3_600_000,
            staleAfterMs: 600_000,
            safetyWindowMs: 0,
          },
        },
      },
    ]);
    await append("run-r1", [
      { type: "RunStarted", data: { runId: "r1", datasetId: "sales", numShards: 2 } },
      { type: "AttemptSucceeded", data: ref(0, 0) },
      { type: "AttemptSucceeded", data: ref(0, 1) },
      { type: "AttemptFailed", data: { ...ref(1, 0), error: "executor lost" } },
      { type: "AttemptSucceeded", data: ref(1, 1) },
      { type: "WinnerSelected", schemaVersion: 1, data: ref(0, 0) },
      { type: "WinnerSelected", schemaVersion: 1, data: ref(1, 1) },
      {
        type: "ManifestPublished",
        data: {
          runId: "r1",
          manifestUrl: `${root}/manifests/r1.json`,
          createdAt: "2026-01-01T00:00:00.000Z",
        },
      },
      { type: "RunSucceeded", data: { runId: "r1" } },
      // A late speculative attempt (a loser at once), and one loser's data already deleted.
      { type: "AttemptSucceeded", data: ref(1, 2) },
      { type: "CleanupPlanned", data: { runId: "r1", url: url(0, 1), reason: "loser" } },
      { type: "CleanupSucceeded", data: { runId: "r1", url: url(0, 1), deletedObjects: 3 } },
    ]);
    await append("dataset-sales", [
      {
        // Version 1: before rollback existed, a move carried no reason.
        type: "CurrentPointerMoved",
        schemaVersion: 1,
        data: {
          datasetId: "sales",
          runId: "r1",
          manifestUrl: `${root}/manifests/r1.json`,
          previousRunId: null,
        },
      },
    ]);

    const { applied } = await migrateToLatest(db, schema);
    // 0003 rebuilds the projections; the migrations after it (one reservation, leases, …) come along.
    expect(applied).toEqual(MIGRATIONS.slice(2).map((m) => m.name));
    expect(applied.slice(0, 3)).toEqual([
      "0003_attempt_status_at_read",
      "0004_one_reservation_per_transaction",
      "0005_maintenance_leases",
    ]);

    const { rows: state } = await sql<{
      version: number;
    }>`SELECT version FROM ${t("projection_state")}`.execute(db);
    expect(state.map((r) => r.version)).toEqual([PROJECTION_VERSION]);
    const shown = await projectionQueries(db, schema).run("r1");
    expect(shown?.attempts.map((a) => [a.shard, a.attempt, a.status])).toEqual([
      [0, 0, "WINNER"],
      [0, 1, "DELETED"],
      [1, 0, "LOSER"],
      [1, 1, "WINNER"],
      [1, 2, "LOSER"],
    ]);
    expect(shown?.run).toMatchObject({ status: "SUCCEEDED", current: true, publishProgress: "succeeded" });
    expect(shown?.run.attempts).toEqual({
      total: 5,
      started: 0,
      succeeded: 0,
      failed: 0,
      winner: 2,
      loser: 2,
      cleanupPending: 0,
      deleted: 1,
    });
    expect(shown?.winners.map((w) => [w.shard, w.attempt])).toEqual([
      [0, 0],
      [1, 1],
    ]);
    expect((await auditProjections(log)).differences).toEqual([]);
    // Upcast on read, never rewritten.
    const { rows: stored } = await sql<{ schema_version: number }>`
      SELECT schema_version FROM ${t("events")} WHERE type = 'WinnerSelected'`.execute(db);
    expect(stored.map((r) => r.schema_version)).toEqual([1, 1]);
    const [moved] = await log.readStream("dataset-sales", { fromVersion: 2 });
    expect(moved).toMatchObject({
      type: "CurrentPointerMoved",
      schemaVersion: 2,
      data: { reason: "publish" },
    });
    const { rows: pointer } = await sql<{ schema_version: number }>`
      SELECT schema_version FROM ${t("events")} WHERE type = 'CurrentPointerMoved'`.execute(db);
    expect(pointer.map((r) => r.schema_version)).toEqual([1]);
  });
});
