import { type Migration, type MigrationProvider, Migrator, sql } from "kysely";
import { InternalError } from "../../errors.js";
import { PROJECTION_TABLES } from "../../projections/projection-rows.js";
import { advisoryKey } from "./advisory-keys.js";
import { appendFunction } from "./append-function.js";
import { auditDepth } from "./audit-depth.js";
import { chainedAppends } from "./chained-appends.js";
import type { LedgerDb } from "./database.js";
import { lockFreePositions } from "./lock-free-positions.js";
import { withOwnSchemaIntrospection } from "./own-schema-introspection.js";
import { createPgEventLog } from "./pg-event-log.js";
import { plansPerCall } from "./plans-per-call.js";
import {
  createProjectionTables,
  PROJECTION_VERSION,
  PROJECTION_VIEWS,
  setAttemptRecordsFillfactor,
} from "./projection-schema.js";
import { replayInto } from "./rebuild.js";
import type { SchemaMigration } from "./schema-migration.js";

const eventLog: SchemaMigration = {
  name: "0001_event_log",
  async up(db, schema) {
    const t = (name: string) => sql.id(schema, name);
    const positionsKey = sql.lit(advisoryKey(schema, "positions"));
    await sql`CREATE SEQUENCE IF NOT EXISTS ${t("global_position_seq")} AS bigint`.execute(db);
    await sql`CREATE TABLE ${t("streams")} (
      stream_id text PRIMARY KEY,
      version bigint NOT NULL,
      updated_at timestamptz NOT NULL
    )`.execute(db);
    // The global position is the read-all ordering key: positions are handed out together with the
    // transaction id under one short mutex (reserve_positions), so position order equals
    // transaction-id order and a reader can bound what it reads by the snapshot's xmin.
    await sql`CREATE TABLE ${t("events")} (
      global_position bigint PRIMARY KEY,
      transaction_id xid8 NOT NULL,
      event_id uuid NOT NULL UNIQUE,
      stream_id text NOT NULL,
      stream_version bigint NOT NULL,
      type text NOT NULL,
      schema_version integer NOT NULL,
      data jsonb NOT NULL,
      metadata jsonb NOT NULL,
      recorded_at timestamptz NOT NULL,
      CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
    )`.execute(db);
    await sql`CREATE TABLE ${t("subscription_checkpoints")} (
      name text PRIMARY KEY,
      position bigint NOT NULL DEFAULT 0,
      updated_at timestamptz NOT NULL DEFAULT now()
    )`.execute(db);
    // Why a session-level lock that is released at once: sequences commit out of order. If the
    // xid and the positions of every appending transaction are assigned inside the same short
    // critical section, then a transaction with a smaller xid always holds smaller positions, and
    // "read only rows whose xid is below the snapshot's xmin" can never return a position above
    // one that is still in flight. The lock is held for microseconds, never across a network
    // round trip. A transaction that already had an xid before its first reservation (it wrote
    // something else first) would break that order, so it is refused.
    await sql`CREATE FUNCTION ${t("reserve_positions")}(n integer)
      RETURNS TABLE (tx xid8, first_position bigint)
      LANGUAGE plpgsql AS $fn$
      DECLARE
        assigned xid8 := pg_current_xact_id_if_assigned();
      BEGIN
        IF assigned IS NOT NULL
           AND current_setting('shardledger.position_tx', true) IS DISTINCT FROM assigned::text THEN
          RAISE EXCEPTION 'shardledger: a transaction must append events before it writes anything else'
            USING ERRCODE = 'P0001', HINT = 'append first, then update projections';
        END IF;
        PERFORM pg_advisory_lock(${positionsKey}::bigint);
        BEGIN
          tx := pg_current_xact_id();
          first_position := nextval(${sql.lit(`${schema}.global_position_seq`)}::regclass);
          IF n > 1 THEN
            PERFORM setval(${sql.lit(`${schema}.global_position_seq`)}::regclass, first_position + n - 1);
          END IF;
        EXCEPTION WHEN OTHERS THEN
          PERFORM pg_advisory_unlock(${positionsKey}::bigint);
          RAISE;
        END;
        PERFORM pg_advisory_unlock(${positionsKey}::bigint);
        PERFORM set_config('shardledger.position_tx', tx::text, true);
        RETURN NEXT;
      END
      $fn$`.execute(db);
  },
};

const projections: SchemaMigration = {
  name: "0002_projections",
  async up(db, schema) {
    // The tables of the current projection code. A later projection version is a migration that
    // drops and rebuilds them from the log (0003 on), so an install that ran an older 0002 ends
    // up with the same tables as a fresh one.
    await createProjectionTables(db, schema);
    // Which version of the projection code built the live tables, and up to which position.
    await sql`CREATE TABLE ${sql.id(schema, "projection_state")} (
      name text PRIMARY KEY,
      version integer NOT NULL,
      built_at timestamptz NOT NULL DEFAULT now()
    )`.execute(db);
    await sql`INSERT INTO ${sql.id(schema, "projection_state")} (name, version) VALUES ('ledger', ${PROJECTION_VERSION})`.execute(
      db,
    );
  },
};

/**
 * Projection version 2: an attempt's WINNER/LOSER status is derived at read time (`attempts` is a
 * view over `attempt_records`, `runs` and `winners`) and WinnerSelected names up to 1,000 shards.
 * Projections are folds of the log, so the change is a rebuild: drop the tables, create the new
 * ones and replay every event into them. Appends wait for it (EXCLUSIVE lock on the log).
 */
const attemptStatusAtRead: SchemaMigration = {
  name: "0003_attempt_status_at_read",
  async up(db, schema) {
    await rebuildInPlace(db, schema);
  },
};

/**
 * Drops the projection tables and views, creates those of the current projection code and replays
 * every event into them, appends waiting meanwhile (EXCLUSIVE lock on the log).
 */
async function rebuildInPlace(db: LedgerDb, schema: string): Promise<void> {
  await sql`LOCK TABLE ${sql.id(schema, "events")} IN EXCLUSIVE MODE`.execute(db);
  await dropProjectionRelations(db, schema, [...PROJECTION_VIEWS, ...PROJECTION_TABLES, "attempts"]);
  await createProjectionTables(db, schema);
  const log = createPgEventLog({ db, schema });
  await replayInto(log, db, schema, 0);
  await sql`UPDATE ${sql.id(schema, "projection_state")} SET version = ${PROJECTION_VERSION}, built_at = now()
    WHERE name = 'ledger'`.execute(db);
}

/**
 * One position reservation per transaction. A transaction that reserves twice holds positions on
 * both sides of a later transaction's (a larger xid): once it commits, a reader whose xmin is that
 * later transaction reads past its position before it commits and never returns it. The function
 * already records the reserving xid in `shardledger.position_tx` (transaction-local); a second call
 * that finds it equal to the current xid is now refused. Everything else is as in 0001, including
 * the refusal of a transaction that wrote something else first.
 */
const oneReservationPerTransaction: SchemaMigration = {
  name: "0004_one_reservation_per_transaction",
  async up(db, schema) {
    const positionsKey = sql.lit(advisoryKey(schema, "positions"));
    await sql`CREATE OR REPLACE FUNCTION ${sql.id(schema, "reserve_positions")}(n integer)
      RETURNS TABLE (tx xid8, first_position bigint)
      LANGUAGE plpgsql AS $fn$
      DECLARE
        assigned xid8 := pg_current_xact_id_if_assigned();
      BEGIN
        IF assigned IS NOT NULL THEN
          IF current_setting('shardledger.position_tx', true) = assigned::text THEN
            RAISE EXCEPTION 'shardledger: a transaction may append to the log once; put all of its events in one append'
              USING ERRCODE = 'P0001',
                    HINT = 'a second reservation would hold positions above those of a transaction that reserved in between, and readAll could skip its events';
          END IF;
          RAISE EXCEPTION 'shardledger: a transaction must append events before it writes anything else'
            USING ERRCODE = 'P0001', HINT = 'append first, then update projections';
        END IF;
        PERFORM pg_advisory_lock(${positionsKey}::bigint);
        BEGIN
          tx := pg_current_xact_id();
          first_position := nextval(${sql.lit(`${schema}.global_position_seq`)}::regclass);
          IF n > 1 THEN
            PERFORM setval(${sql.lit(`${schema}.global_position_seq`)}::regclass, first_position + n - 1);
          END IF;
        EXCEPTION WHEN OTHERS THEN
          PERFORM pg_advisory_unlock(${positionsKey}::bigint);
          RAISE;
        END;
        PERFORM pg_advisory_unlock(${positionsKey}::bigint);
        PERFORM set_config('shardledger.position_tx', tx::text, true);
        RETURN NEXT;
      END
      $fn$`.execute(db);
  },
};

/**
 * Maintenance leases: one row per dataset that ever had a maintenance pass. Whoever takes the
 * dataset's maintenance advisory lock bumps `epoch`; a fenced append commits only while its epoch
 * is the stored one. The advisory lock alone dies silently with its session (idle timeout,
 * failover, a pooler), so it is only a hint; this row is what fences a pass that lost it. Not a
 * projection: it is not derived from the log, and rebuild and audit leave it alone.
 */
const maintenanceLeases: SchemaMigration = {
  name: "0005_maintenance_leases",
  async up(db, schema) {
    await sql`CREATE TABLE ${sql.id(schema, "maintenance_leases")} (
      dataset_id text PRIMARY KEY,
      epoch bigint NOT NULL,
      holder text NOT NULL,
      acquired_at timestamptz NOT NULL,
      renewed_at timestamptz NOT NULL
    )`.execute(db);
  },
};

/**
 * Policy changes and the status view (projection version 3).
 *
 * - `datasets` gains `safety_window_hold_ms` / `safety_window_hold_until`: after a policy change
 *   shortened the safety window, the longer window still in force and until when. The fold of
 *   DatasetPoliciesChanged also no longer shortens a floor item's `protected_until`. Nothing wrote
 *   that event before this version, so a log without it needs no replay (the new columns are null,
 *   exactly what a replay gives); a log that has one (appended by hand) is replayed.
 * - `maintenance_leases` gains the last pass a lease holder recorded (kind, times, outcome as
 *   jsonb), written at the end of each cleanup or gc pass under the pass's epoch.
 * - `projection_state` gains the last audit (when, events, match, differences).
 *
 * The last two are operational records, like the lease itself: not derived from the log, left
 * alone by rebuild and audit.
 */
const policyChangesAndStatus: SchemaMigration = {
  name: "0006_policy_changes_and_status",
  async up(db, schema) {
    const t = (name: string) => sql.id(schema, name);
    await sql`ALTER TABLE ${t("datasets")}
      ADD COLUMN IF NOT EXISTS safety_window_hold_ms bigint,
      ADD COLUMN IF NOT EXISTS safety_window_hold_until timestamptz`.execute(db);
    await sql`ALTER TABLE ${t("maintenance_leases")}
      ADD COLUMN IF NOT EXISTS last_pass_kind text,
      ADD COLUMN IF NOT EXISTS last_pass_started_at timestamptz,
      ADD COLUMN IF NOT EXISTS last_pass_finished_at timestamptz,
      ADD COLUMN IF NOT EXISTS last_pass_outcome jsonb`.execute(db);
    await sql`ALTER TABLE ${t("projection_state")}
      ADD COLUMN IF NOT EXISTS last_audit_at timestamptz,
      ADD COLUMN IF NOT EXISTS last_audit_events bigint,
      ADD COLUMN IF NOT EXISTS last_audit_match boolean,
      ADD COLUMN IF NOT EXISTS last_audit_differences integer`.execute(db);
    const { rows } = await sql<{ found: boolean }>`
      SELECT EXISTS (SELECT 1 FROM ${t("events")} WHERE type = 'DatasetPoliciesChanged') AS found`.execute(
      db,
    );
    if (rows[0]?.found) await rebuildInPlace(db, schema);
    else {
      await sql`UPDATE ${t("projection_state")} SET version = ${PROJECTION_VERSION} WHERE name = 'ledger'`.execute(
        db,
      );
    }
  },
};

/**
 * Projection version 4: one fold. An attempt's status is no longer derived by the `attempts` view
 * from `winners` and the run; the fold steps the attempt machine's transition table and stores
 * `attempt_records.phase` and `.status`, and the view only reads them. A projection change is a
 * rebuild from the log, as in 0003.
 */
const attemptStatusStored: SchemaMigration = {
  name: "0007_attempt_status_stored",
  async up(db, schema) {
    await rebuildInPlace(db, schema);
  },
};

/**
 * Attempt rows leave half of each page free (`ATTEMPT_RECORDS_FILLFACTOR`), so the update a
 * selection makes to every attempt of a run stays on the row's page and touches no index (a HOT
 * update). Storage only: no rebuild; pages written from now on get the room.
 */
const attemptRowsLeaveRoom: SchemaMigration = {
  name: "0009_attempt_rows_leave_room",
  async up(db, schema) {
    await setAttemptRecordsFillfactor(db, schema);
  },
};

/**
 * Archiving (issue 16) finds the runs it may archive by their `Pruned` event (a pruned run that is
 * not archived yet still has it in the hot log; archiving deletes it with the rest of the stream),
 * and readers find an archived run's archive by its `Archived` event. Two partial indexes, a few
 * rows each per pruned run: no full scan of `events` on either path.
 */
const archiveIndexes: SchemaMigration = {
  name: "0010_archive_indexes",
  async up(db, schema) {
    const events = sql.id(schema, "events");
    await sql`CREATE INDEX events_pruned_idx ON ${events} ((data->>'datasetId'), recorded_at)
      WHERE type = 'Pruned'`.execute(db);
    await sql`CREATE INDEX events_archived_idx ON ${events} ((data->>'runId'))
      WHERE type = 'Archived'`.execute(db);
  },
};

/**
 * Snapshots of run state (issue 16): the state of a run stream after its first `stream_version`
 * events, serialised by the run fold of `fold_version`, so that loading a long run reads the
 * snapshot and the tail of its stream instead of the whole stream. Derived data: a reader ignores
 * a row of another fold version, a rebuild empties the table, archiving a run deletes its row.
 */
const runSnapshots: SchemaMigration = {
  name: "0011_run_snapshots",
  async up(db, schema) {
    await sql`CREATE TABLE ${sql.id(schema, "run_snapshots")} (
      stream_id text PRIMARY KEY,
      stream_version bigint NOT NULL,
      fold_version integer NOT NULL,
      state text NOT NULL,
      written_at timestamptz NOT NULL
    )`.execute(db);
  },
};

/** Drops each named table or view of `schema` that exists, whichever of the two it is. */
async function dropProjectionRelations(
  db: LedgerDb,
  schema: string,
  names: readonly string[],
): Promise<void> {
  const { rows } = await sql<{ relname: string; relkind: string }>`
    SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ${schema} AND c.relname = ANY(${[...new Set(names)]}::text[]) AND c.relkind IN ('r', 'v')
    ORDER BY c.relkind DESC`.execute(db);
  for (const r of rows) {
    const kind = r.relkind === "v" ? sql`VIEW` : sql`TABLE`;
    await sql`DROP ${kind} IF EXISTS ${sql.id(schema, r.relname)} CASCADE`.execute(db);
  }
}

/** Every migration, in order. Later issues append here. */
export const MIGRATIONS: readonly SchemaMigration[] = [
  eventLog,
  projections,
  attemptStatusAtRead,
  oneReservationPerTransaction,
  maintenanceLeases,
  policyChangesAndStatus,
  attemptStatusStored,
  appendFunction,
  attemptRowsLeaveRoom,
  archiveIndexes,
  runSnapshots,
  lockFreePositions,
  chainedAppends,
  plansPerCall,
  auditDepth,
];

/**
 * Creates or upgrades the ledger schema. Safe to run concurrently from several processes: kysely's
 * migrator serialises on its lock table. It reads the catalog of `schema` only, so schemas created
 * and dropped meanwhile (an audit's scratch schema among them) do not disturb it.
 *
 * @example
 * ```ts
 * const { version } = await migrateToLatest(database.db, "shardledger")
 * ```
 */
export async function migrateToLatest(
  db: LedgerDb,
  schema: string,
  migrations: readonly SchemaMigration[] = MIGRATIONS,
): Promise<{ version: string; applied: string[] }> {
  await sql`CREATE SCHEMA IF NOT EXISTS ${sql.id(schema)}`.execute(db);
  const provider: MigrationProvider = {
    getMigrations: async () =>
      Object.fromEntries(
        migrations.map((m): [string, Migration] => [m.name, { up: (trx: LedgerDb) => m.up(trx, schema) }]),
      ),
  };
  const migrator = new Migrator({
    db: withOwnSchemaIntrospection(db, schema),
    provider,
    migrationTableSchema: schema,
    migrationTableName: "schema_migrations",
    migrationLockTableName: "schema_migrations_lock",
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    throw new InternalError(`migration failed: ${(error as Error).message ?? String(error)}`, {
      cause: error,
    });
  }
  const last = migrations.at(-1);
  return {
    version: last?.name ?? "none",
    applied: (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName),
  };
}
