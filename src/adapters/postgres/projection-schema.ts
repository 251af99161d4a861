import { sql } from "kysely";
import {
  PROJECTION_KEYS,
  PROJECTION_TABLES,
  type ProjectionTable,
} from "../../projections/projection-rows.js";
import type { LedgerDb } from "./database.js";
import type { Columns } from "./table-io.js";

/**
 * The version of the projection code; bump it when the fold changes, with a migration that
 * rebuilds the tables from the log. 2: attempt statuses WINNER/LOSER derived at read time.
 * 3: a policy change never shortens a floor item's `protected_until`, and a shorter safety window
 * is held (`datasets.safety_window_hold_*`) until the old one's promises end.
 * 4: an attempt's status is stored (`attempt_records.phase`, `.status`), written by the fold from
 * the attempt machine's transition table; the `attempts` view only reads it.
 */
export const PROJECTION_VERSION = 4;

/**
 * The columns of every projection table, in order, with their SQL types: the DDL is generated
 * from them (with {@link NULLABLE} and the keys), and the bulk reads and writes use them.
 * `attempt_records`: what each attempt reported, and where it is in its lifecycle — `phase` is the
 * attempt machine's state (src/machines/attempt-machine.ts) and `status` what it means, both
 * written by the fold stepping the machine's transition table; `cleanup_status` repeats
 * cleanup's verdict.
 */
export const PROJECTION_COLUMNS: Readonly<Record<ProjectionTable, Columns>> = {
  datasets: {
    dataset_id: "text",
    root: "text",
    keep_runs: "integer",
    retention_ms: "bigint",
    failed_retention_ms: "bigint",
    stale_after_ms: "bigint",
    safety_window_ms: "bigint",
    current_run_id: "text",
    current_manifest_url: "text",
    current_moved_at: "timestamptz",
    registered_at: "timestamptz",
    updated_at: "timestamptz",
    safety_window_hold_ms: "bigint",
    safety_window_hold_until: "timestamptz",
  },
  runs: {
    run_id: "text",
    dataset_id: "text",
    status: "text",
    num_shards: "integer",
    is_current: "boolean",
    publish_progress: "text",
    manifest_url: "text",
    started_at: "timestamptz",
    updated_at: "timestamptz",
    heartbeat_at: "timestamptz",
    winners_selected_at: "timestamptz",
    succeeded_at: "timestamptz",
    failed_at: "timestamptz",
    replaced_at: "timestamptz",
    failure_cause: "text",
    failure_reason: "text",
    missing_shards: "jsonb",
    reopened_count: "integer",
    attempts_total: "integer",
    attempts_started: "integer",
    attempts_succeeded: "integer",
    attempts_failed: "integer",
    attempts_winner: "integer",
    attempts_loser: "integer",
    attempts_cleanup_pending: "integer",
    attempts_deleted: "integer",
  },
  attempt_records: {
    run_id: "text",
    attempt_key: "text",
    dataset_id: "text",
    shard: "integer",
    attempt: "integer",
    task_attempt_id: "text",
    url: "text",
    outcome: "text",
    cleanup_status: "text",
    error: "text",
    reported_at: "timestamptz",
    updated_at: "timestamptz",
    phase: "text",
    status: "text",
  },
  winners: {
    run_id: "text",
    shard: "integer",
    dataset_id: "text",
    attempt: "integer",
    task_attempt_id: "text",
    url: "text",
    selected_at: "timestamptz",
  },
  pending_cleanup: {
    run_id: "text",
    url: "text",
    dataset_id: "text",
    reason: "text",
    state: "text",
    tries: "integer",
    last_error_code: "text",
    last_error_message: "text",
    transient: "boolean",
    planned_at: "timestamptz",
    first_failure_at: "timestamptz",
    last_failure_at: "timestamptz",
    next_retry_at: "timestamptz",
  },
  retention_floors: {
    run_id: "text",
    kind: "text",
    url: "text",
    dataset_id: "text",
    failed_at: "timestamptz",
    protected_until: "timestamptz",
  },
  rollups: {
    dataset_id: "text",
    reason: "text",
    pruned_runs: "bigint",
    pruned_attempts: "bigint",
    pruned_failed_items: "bigint",
    last_pruned_at: "timestamptz",
  },
};

const {
  cleanup_status: _cleanupStatus,
  phase: _phase,
  ...attemptViewColumns
} = PROJECTION_COLUMNS.attempt_records;
/** Column types of the `attempts` view: an attempt record without its machine phase and `cleanup_status`. */
export const ATTEMPTS_VIEW_COLUMNS: Columns = attemptViewColumns;

/** The columns that may be null; every other column is NOT NULL. */
const NULLABLE: Readonly<Record<ProjectionTable, readonly string[]>> = {
  datasets: [
    "current_run_id",
    "current_manifest_url",
    "current_moved_at",
    "safety_window_hold_ms",
    "safety_window_hold_until",
  ],
  runs: [
    "manifest_url",
    "winners_selected_at",
    "succeeded_at",
    "failed_at",
    "replaced_at",
    "failure_cause",
    "failure_reason",
    "missing_shards",
  ],
  attempt_records: ["task_attempt_id", "url", "cleanup_status", "error"],
  winners: ["task_attempt_id", "url"],
  pending_cleanup: [
    "last_error_code",
    "last_error_message",
    "transient",
    "first_failure_at",
    "last_failure_at",
    "next_retry_at",
  ],
  retention_floors: [],
  rollups: [],
};

/**
 * Every attempt row is rewritten at least once after it is reported (a selection classifies
 * every attempt of the run, then cleanup steps the losers), so the table grows to twice its
 * packed size anyway. Leaving that room in each page up front keeps those updates on the row's
 * page with no index entry to add (HOT updates): a 40,000-attempt selection's UPDATE went from
 * 1.3 s to 0.34 s on the bench machine (bench/RESULTS.md, publish).
 */
const ATTEMPT_RECORDS_FILLFACTOR = 50;

/** Sets the fill factor of `attempt_records` (new pages only; existing rows are not moved). */
export async function setAttemptRecordsFillfactor(db: LedgerDb, schema: string): Promise<void> {
  await sql`ALTER TABLE ${sql.id(schema, "attempt_records")} SET (fillfactor = ${sql.raw(String(ATTEMPT_RECORDS_FILLFACTOR))})`.execute(
    db,
  );
}

/** Views over the projection tables (part of the read interface; never compared by audit). */
export const PROJECTION_VIEWS = ["attempts"] as const;

/**
 * Creates the projection tables and views in `schema` (the live schema by migration, or a scratch
 * schema by rebuild). The columns are a documented, stable read interface: see docs/sql.md.
 */
export async function createProjectionTables(db: LedgerDb, schema: string): Promise<void> {
  const t = (name: string) => sql.id(schema, name);
  // One statement per table, from PROJECTION_COLUMNS (names, types, order), NULLABLE and
  // PROJECTION_KEYS: the columns are written down once, for the DDL and for the bulk writes.
  for (const table of PROJECTION_TABLES) {
    const columns = Object.entries(PROJECTION_COLUMNS[table]).map(
      ([name, type]) =>
        sql`${sql.id(name)} ${sql.raw(type)}${NULLABLE[table].includes(name) ? sql`` : sql` NOT NULL`}`,
    );
    const key = sql`PRIMARY KEY (${sql.join(PROJECTION_KEYS[table].map((k) => sql.id(k)))})`;
    await sql`CREATE TABLE ${t(table)} (${sql.join([...columns, key])})`.execute(db);
  }
  await sql`CREATE INDEX ON ${t("runs")} (dataset_id, status, updated_at)`.execute(db);
  await sql`CREATE INDEX ON ${t("runs")} (dataset_id, started_at DESC)`.execute(db);
  await sql`CREATE INDEX ON ${t("attempt_records")} (run_id, url)`.execute(db);
  await setAttemptRecordsFillfactor(db, schema);
  await sql`CREATE INDEX ON ${t("pending_cleanup")} (dataset_id, next_retry_at)`.execute(db);
  await sql`CREATE INDEX ON ${t("retention_floors")} (dataset_id, protected_until)`.execute(db);
  await createProjectionViews(db, schema);
}

/**
 * Creates the views of `schema`. `attempts` shows every attempt with its lifecycle status
 * (SPEC "Attempt lifecycle") as the fold stored it: SQL reads it, never derives it.
 */
export async function createProjectionViews(db: LedgerDb, schema: string): Promise<void> {
  await sql`CREATE VIEW ${sql.id(schema, "attempts")} AS
    SELECT run_id, attempt_key, dataset_id, shard, attempt, task_attempt_id, url, status, outcome, error,
      reported_at, updated_at
    FROM ${sql.id(schema, "attempt_records")}`.execute(db);
}

/** Drops the views of `schema` (before its tables are replaced). */
export async function dropProjectionViews(db: LedgerDb, schema: string): Promise<void> {
  for (const view of PROJECTION_VIEWS) await sql`DROP VIEW IF EXISTS ${sql.id(schema, view)}`.execute(db);
}
