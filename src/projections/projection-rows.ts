/**
 * The rows of the projection tables as the fold sees them: which tables there are, the key of
 * each, and the row itself (column name to value, as read from and written to SQL). Storage (DDL,
 * column types, load and store) lives in src/adapters/postgres.
 */

/** Projection tables, in dependency-free order. Every one is rebuilt from the log by `rebuild`. */
export const PROJECTION_TABLES = [
  "datasets",
  "runs",
  "attempt_records",
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
  attempt_records: ["run_id", "attempt_key"],
  winners: ["run_id", "shard"],
  pending_cleanup: ["run_id", "url"],
  retention_floors: ["run_id", "kind", "url"],
  rollups: ["dataset_id", "reason"],
};

/** One projection row: column name to value. */
export type Row = Record<string, unknown>;
