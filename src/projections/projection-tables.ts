import { sql } from "kysely";
import type { LedgerDb } from "../adapters/postgres/database.js";

/** The version of the projection code; bump it when the fold changes so `rebuild` can switch. */
export const PROJECTION_VERSION = 1;

/** Projection tables, in dependency-free order. Every one is rebuilt from the log by `rebuild`. */
export const PROJECTION_TABLES = [
  "datasets",
  "runs",
  "attempts",
  "winners",
  "pending_cleanup",
  "retention_floors",
  "rollups",
] as const;
export type ProjectionTable = (typeof PROJECTION_TABLES)[number];

/** Primary-key columns of each projection table (audit compares rows by them). */
export const PROJECTION_KEYS: Readonly<Record<ProjectionTable, readonly string[]>> = {
  datasets: ["dataset_id"],
  runs: ["run_id"],
  attempts: ["run_id", "attempt_key"],
  winners: ["run_id", "shard"],
  pending_cleanup: ["run_id", "url"],
  retention_floors: ["run_id", "kind", "url"],
  rollups: ["dataset_id", "reason"],
};

/**
 * Creates the projection tables in `schema` (the live schema by migration, or a scratch schema by
 * rebuild). The columns are a documented, stable read interface: see docs/sql.md.
 */
export async function createProjectionTables(db: LedgerDb, schema: string): Promise<void> {
  const t = (name: string) => sql.id(schema, name);
  await sql`CREATE TABLE ${t("datasets")} (
    dataset_id text PRIMARY KEY,
    root text NOT NULL,
    keep_runs integer NOT NULL,
    retention_ms bigint NOT NULL,
    failed_retention_ms bigint NOT NULL,
    stale_after_ms bigint NOT NULL,
    safety_window_ms bigint NOT NULL,
    current_run_id text,
    current_manifest_url text,
    current_moved_at timestamptz,
    registered_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
  )`.execute(db);
  await sql`CREATE TABLE ${t("runs")} (
    run_id text PRIMARY KEY,
    dataset_id text NOT NULL,
    status text NOT NULL,
    num_shards integer NOT NULL,
    is_current boolean NOT NULL,
    publish_progress text NOT NULL,
    manifest_url text,
    started_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    succeeded_at timestamptz,
    failed_at timestamptz,
    replaced_at timestamptz,
    failure_cause text,
    failure_reason text,
    missing_shards jsonb,
    reopened_count integer NOT NULL,
    attempts_total integer NOT NULL,
    attempts_started integer NOT NULL,
    attempts_succeeded integer NOT NULL,
    attempts_failed integer NOT NULL,
    attempts_winner integer NOT NULL,
    attempts_loser integer NOT NULL,
    attempts_cleanup_pending integer NOT NULL,
    attempts_deleted integer NOT NULL
  )`.execute(db);
  await sql`CREATE INDEX ON ${t("runs")} (dataset_id, status, updated_at)`.execute(db);
  await sql`CREATE INDEX ON ${t("runs")} (dataset_id, started_at DESC)`.execute(db);
  await sql`CREATE TABLE ${t("attempts")} (
    run_id text NOT NULL,
    attempt_key text NOT NULL,
    dataset_id text NOT NULL,
    shard integer NOT NULL,
    attempt integer NOT NULL,
    task_attempt_id text,
    url text,
    status text NOT NULL,
    outcome text NOT NULL,
    error text,
    reported_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (run_id, attempt_key)
  )`.execute(db);
  await sql`CREATE INDEX ON ${t("attempts")} (run_id, url)`.execute(db);
  await sql`CREATE INDEX ON ${t("attempts")} (dataset_id, status)`.execute(db);
  await sql`CREATE TABLE ${t("winners")} (
    run_id text NOT NULL,
    shard integer NOT NULL,
    dataset_id text NOT NULL,
    attempt integer NOT NULL,
    task_attempt_id text,
    url text,
    selected_at timestamptz NOT NULL,
    PRIMARY KEY (run_id, shard)
  )`.execute(db);
  await sql`CREATE TABLE ${t("pending_cleanup")} (
    run_id text NOT NULL,
    url text NOT NULL,
    dataset_id text NOT NULL,
    reason text NOT NULL,
    state text NOT NULL,
    tries integer NOT NULL,
    last_error_code text,
    last_error_message text,
    transient boolean,
    planned_at timestamptz NOT NULL,
    first_failure_at timestamptz,
    last_failure_at timestamptz,
    next_retry_at timestamptz,
    PRIMARY KEY (run_id, url)
  )`.execute(db);
  await sql`CREATE INDEX ON ${t("pending_cleanup")} (dataset_id, next_retry_at)`.execute(db);
  await sql`CREATE TABLE ${t("retention_floors")} (
    run_id text NOT NULL,
    kind text NOT NULL,
    url text NOT NULL,
    dataset_id text NOT NULL,
    failed_at timestamptz NOT NULL,
    protected_until timestamptz NOT NULL,
    PRIMARY KEY (run_id, kind, url)
  )`.execute(db);
  await sql`CREATE INDEX ON ${t("retention_floors")} (dataset_id, protected_until)`.execute(db);
  await sql`CREATE TABLE ${t("rollups")} (
    dataset_id text NOT NULL,
    reason text NOT NULL,
    pruned_runs bigint NOT NULL,
    pruned_attempts bigint NOT NULL,
    pruned_failed_items bigint NOT NULL,
    last_pruned_at timestamptz NOT NULL,
    PRIMARY KEY (dataset_id, reason)
  )`.execute(db);
}
