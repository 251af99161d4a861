import { sql } from "kysely";
import type { LedgerDb } from "../adapters/postgres/database.js";
import type { AttemptStatus } from "../machines/attempt-machine.js";
import { ATTEMPTS_VIEW_COLUMNS, PROJECTION_COLUMNS } from "./ledger-projection.js";
import type { ProjectionTable } from "./projection-tables.js";
import { normaliseRow, type Row } from "./table-io.js";

/** Run status as the registry shows it. */
export type RunStatus = "STARTED" | "PUBLISHING" | "SUCCEEDED" | "FAILED";
/** Attempt status (the attempt machine's): what it reported, how publish classified it, what cleanup did. */
export type { AttemptStatus };

/** A dataset and its policies (durations in milliseconds). */
export interface DatasetView {
  datasetId: string;
  root: string;
  policies: {
    keepRuns: number;
    retentionMs: number;
    failedRetentionMs: number;
    staleAfterMs: number;
    safetyWindowMs: number;
  };
  currentRunId: string | null;
  currentManifestUrl: string | null;
  currentMovedAt: Date | null;
  registeredAt: Date;
  updatedAt: Date;
}

/** One row of the run registry. */
export interface RunView {
  runId: string;
  datasetId: string;
  status: RunStatus;
  numShards: number;
  current: boolean;
  publishProgress: "none" | "winners_selected" | "manifest_published" | "succeeded";
  manifestUrl: string | null;
  startedAt: Date;
  updatedAt: Date;
  heartbeatAt: Date;
  succeededAt: Date | null;
  failedAt: Date | null;
  replacedAt: Date | null;
  failureCause: string | null;
  failureReason: string | null;
  missingShards: number[] | null;
  reopenedCount: number;
  attempts: Record<
    "total" | "started" | "succeeded" | "failed" | "winner" | "loser" | "cleanupPending" | "deleted",
    number
  >;
}

/** One attempt of a run. */
export interface AttemptView {
  shard: number;
  attempt: number;
  taskAttemptId: string | null;
  url: string | null;
  status: AttemptStatus;
  outcome: "STARTED" | "SUCCEEDED" | "FAILED";
  error: string | null;
  reportedAt: Date;
  updatedAt: Date;
}

/** The winner of one shard. */
export interface WinnerView {
  shard: number;
  attempt: number;
  taskAttemptId: string | null;
  url: string | null;
}

/** One item of the pending-cleanup set. */
export interface PendingCleanupItem {
  runId: string;
  datasetId: string;
  url: string;
  reason: string;
  state: "planned" | "failed" | "exhausted";
  tries: number;
  lastErrorCode: string | null;
  lastErrorMessage: string | null;
  transient: boolean | null;
  plannedAt: Date;
  firstFailureAt: Date | null;
  lastFailureAt: Date | null;
  nextRetryAt: Date | null;
}

/** What the failed-retention floor protects, and until when. */
export interface RetentionFloor {
  datasetId: string;
  kind: "failed_run" | "failed_cleanup";
  runId: string;
  url: string | null;
  failedAt: Date;
  protectedUntil: Date;
}

/** Counts of what was pruned, per dataset and reason. */
export interface Rollup {
  datasetId: string;
  reason: string;
  prunedRuns: number;
  prunedAttempts: number;
  prunedFailedItems: number;
  lastPrunedAt: Date;
}

async function select(
  db: LedgerDb,
  schema: string,
  table: ProjectionTable | "attempts",
  where: ReturnType<typeof sql>,
  order: ReturnType<typeof sql>,
): Promise<Row[]> {
  const { rows } =
    await sql<Row>`SELECT * FROM ${sql.id(schema, table)} WHERE ${where} ORDER BY ${order}`.execute(db);
  const columns = table === "attempts" ? ATTEMPTS_VIEW_COLUMNS : PROJECTION_COLUMNS[table];
  return rows.map((r) => normaliseRow(r, columns));
}

const d = (v: unknown) => v as Date;
const dn = (v: unknown) => (v === null ? null : (v as Date));
const s = (v: unknown) => v as string;
const sn = (v: unknown) => (v === null ? null : (v as string));
const n = (v: unknown) => v as number;

export function toDatasetView(r: Row): DatasetView {
  return {
    datasetId: s(r.dataset_id),
    root: s(r.root),
    policies: {
      keepRuns: n(r.keep_runs),
      retentionMs: n(r.retention_ms),
      failedRetentionMs: n(r.failed_retention_ms),
      staleAfterMs: n(r.stale_after_ms),
      safetyWindowMs: n(r.safety_window_ms),
    },
    currentRunId: sn(r.current_run_id),
    currentManifestUrl: sn(r.current_manifest_url),
    currentMovedAt: dn(r.current_moved_at),
    registeredAt: d(r.registered_at),
    updatedAt: d(r.updated_at),
  };
}

export function toRunView(r: Row): RunView {
  return {
    runId: s(r.run_id),
    datasetId: s(r.dataset_id),
    status: r.status as RunStatus,
    numShards: n(r.num_shards),
    current: r.is_current === true,
    publishProgress: r.publish_progress as RunView["publishProgress"],
    manifestUrl: sn(r.manifest_url),
    startedAt: d(r.started_at),
    updatedAt: d(r.updated_at),
    heartbeatAt: d(r.heartbeat_at),
    succeededAt: dn(r.succeeded_at),
    failedAt: dn(r.failed_at),
    replacedAt: dn(r.replaced_at),
    failureCause: sn(r.failure_cause),
    failureReason: sn(r.failure_reason),
    missingShards: (r.missing_shards as number[] | null) ?? null,
    reopenedCount: n(r.reopened_count),
    attempts: {
      total: n(r.attempts_total),
      started: n(r.attempts_started),
      succeeded: n(r.attempts_succeeded),
      failed: n(r.attempts_failed),
      winner: n(r.attempts_winner),
      loser: n(r.attempts_loser),
      cleanupPending: n(r.attempts_cleanup_pending),
      deleted: n(r.attempts_deleted),
    },
  };
}

function toAttemptView(r: Row): AttemptView {
  return {
    shard: n(r.shard),
    attempt: n(r.attempt),
    taskAttemptId: sn(r.task_attempt_id),
    url: sn(r.url),
    status: r.status as AttemptStatus,
    outcome: r.outcome as AttemptView["outcome"],
    error: sn(r.error),
    reportedAt: d(r.reported_at),
    updatedAt: d(r.updated_at),
  };
}

function toPending(r: Row): PendingCleanupItem {
  return {
    runId: s(r.run_id),
    datasetId: s(r.dataset_id),
    url: s(r.url),
    reason: s(r.reason),
    state: r.state as PendingCleanupItem["state"],
    tries: n(r.tries),
    lastErrorCode: sn(r.last_error_code),
    lastErrorMessage: sn(r.last_error_message),
    transient: r.transient === null ? null : r.transient === true,
    plannedAt: d(r.planned_at),
    firstFailureAt: dn(r.first_failure_at),
    lastFailureAt: dn(r.last_failure_at),
    nextRetryAt: dn(r.next_retry_at),
  };
}

/**
 * Typed reads of the projection tables.
 *
 * @example
 * ```ts
 * const q = projectionQueries(db, "shardledger")
 * const runs = await q.runs("events-daily")
 * ```
 */
export function projectionQueries(db: LedgerDb, schema: string) {
  return {
    async dataset(datasetId: string): Promise<DatasetView | null> {
      const rows = await select(db, schema, "datasets", sql`dataset_id = ${datasetId}`, sql`dataset_id`);
      return rows[0] ? toDatasetView(rows[0]) : null;
    },
    async datasets(): Promise<DatasetView[]> {
      return (await select(db, schema, "datasets", sql`true`, sql`dataset_id`)).map(toDatasetView);
    },
    async runs(datasetId: string): Promise<RunView[]> {
      return (
        await select(db, schema, "runs", sql`dataset_id = ${datasetId}`, sql`started_at DESC, run_id`)
      ).map(toRunView);
    },
    async run(
      runId: string,
    ): Promise<{ run: RunView; attempts: AttemptView[]; winners: WinnerView[] } | null> {
      const runs = await select(db, schema, "runs", sql`run_id = ${runId}`, sql`run_id`);
      if (!runs[0]) return null;
      const attempts = await select(
        db,
        schema,
        "attempts",
        sql`run_id = ${runId}`,
        sql`shard, attempt, task_attempt_id NULLS FIRST, url`,
      );
      const winners = await select(db, schema, "winners", sql`run_id = ${runId}`, sql`shard`);
      return {
        run: toRunView(runs[0]),
        attempts: attempts.map(toAttemptView),
        winners: winners.map((w) => ({
          shard: n(w.shard),
          attempt: n(w.attempt),
          taskAttemptId: sn(w.task_attempt_id),
          url: sn(w.url),
        })),
      };
    },
    async pendingCleanup(
      filter: { datasetId?: string; dueBefore?: Date } = {},
    ): Promise<PendingCleanupItem[]> {
      const conditions = [sql`true`];
      if (filter.datasetId !== undefined) conditions.push(sql`dataset_id = ${filter.datasetId}`);
      if (filter.dueBefore !== undefined) {
        conditions.push(
          sql`state <> 'exhausted' AND (next_retry_at IS NULL OR next_retry_at <= ${filter.dueBefore})`,
        );
      }
      return (
        await select(
          db,
          schema,
          "pending_cleanup",
          sql.join(conditions, sql` AND `),
          sql`dataset_id, planned_at, url`,
        )
      ).map(toPending);
    },
    async retentionFloors(datasetId: string): Promise<RetentionFloor[]> {
      return (
        await select(
          db,
          schema,
          "retention_floors",
          sql`dataset_id = ${datasetId}`,
          sql`protected_until, run_id, url`,
        )
      ).map((r) => ({
        datasetId: s(r.dataset_id),
        kind: r.kind as RetentionFloor["kind"],
        runId: s(r.run_id),
        url: r.url === "" ? null : s(r.url),
        failedAt: d(r.failed_at),
        protectedUntil: d(r.protected_until),
      }));
    },
    async rollups(datasetId: string): Promise<Rollup[]> {
      return (await select(db, schema, "rollups", sql`dataset_id = ${datasetId}`, sql`reason`)).map((r) => ({
        datasetId: s(r.dataset_id),
        reason: s(r.reason),
        prunedRuns: n(r.pruned_runs),
        prunedAttempts: n(r.pruned_attempts),
        prunedFailedItems: n(r.pruned_failed_items),
        lastPrunedAt: d(r.last_pruned_at),
      }));
    },
  };
}

/** The query surface returned by {@link projectionQueries}. */
export type ProjectionQueries = ReturnType<typeof projectionQueries>;
