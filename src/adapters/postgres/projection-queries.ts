import { sql } from "kysely";
import type { ProjectionTable, Row } from "../../projections/projection-rows.js";
import {
  type AttemptStatus,
  type AttemptView,
  type DatasetStatusFacts,
  type DatasetView,
  type MaintenancePassRecord,
  type PendingCleanupItem,
  type RetentionFloor,
  type Rollup,
  type RunStatus,
  type RunView,
  STATUS_FLOOR_ITEMS,
  type WinnerView,
} from "../../projections/views.js";
import type { LedgerDb } from "./database.js";
import { ATTEMPTS_VIEW_COLUMNS, PROJECTION_COLUMNS } from "./projection-schema.js";
import { normaliseRow } from "./table-io.js";

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

function toDatasetView(r: Row): DatasetView {
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
    safetyWindowHold:
      r.safety_window_hold_ms === null || r.safety_window_hold_until === null
        ? null
        : { windowMs: n(r.safety_window_hold_ms), until: d(r.safety_window_hold_until) },
  };
}

function toRunView(r: Row): RunView {
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

function toFloor(r: Row): RetentionFloor {
  return {
    datasetId: s(r.dataset_id),
    kind: r.kind as RetentionFloor["kind"],
    runId: s(r.run_id),
    url: r.url === "" ? null : s(r.url),
    failedAt: d(r.failed_at),
    protectedUntil: d(r.protected_until),
  };
}

function toPassRecord(r: Record<string, unknown>): MaintenancePassRecord {
  const o = (
    typeof r.last_pass_outcome === "string" ? JSON.parse(r.last_pass_outcome) : r.last_pass_outcome
  ) as {
    holder?: string;
    outcome: MaintenancePassRecord["outcome"];
    deleted?: number;
    failed?: number;
    pruned?: number;
    error?: string | null;
  };
  const date = (v: unknown) => (v instanceof Date ? v : new Date(String(v)));
  return {
    kind: r.last_pass_kind as MaintenancePassRecord["kind"],
    // Passes recorded before the outcome carried the holder: the lease row's (the same unless
    // another process took the lease since).
    holder: o.holder ?? s(r.holder),
    startedAt: date(r.last_pass_started_at),
    finishedAt: date(r.last_pass_finished_at),
    outcome: o.outcome,
    deleted: o.deleted ?? 0,
    failed: o.failed ?? 0,
    pruned: o.pruned ?? 0,
    error: o.error ?? null,
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
      ).map(toFloor);
    },
    /** One registry row without its attempts and winners (cheap for a 100,000-shard run). */
    async runRow(runId: string): Promise<RunView | null> {
      const rows = await select(db, schema, "runs", sql`run_id = ${runId}`, sql`run_id`);
      return rows[0] ? toRunView(rows[0]) : null;
    },
    /**
     * The aggregates `ledger.status` shows for one dataset, each one SQL statement: runs by
     * status (and pruned, from the rollups), the pending set split by due-ness at `now` exactly as
     * cleanup decides it, the floor, the last recorded maintenance pass and the last audit.
     */
    async statusFacts(datasetId: string, now: Date): Promise<DatasetStatusFacts> {
      const t = (name: string) => sql.id(schema, name);
      const at = now.toISOString();
      const { rows: runRows } = await sql<{ status: string; count: string | number }>`
        SELECT status, count(*) AS count FROM ${t("runs")} WHERE dataset_id = ${datasetId}
        GROUP BY status`.execute(db);
      const { rows: prunedRows } = await sql<{ pruned: string | number | null }>`
        SELECT sum(pruned_runs) AS pruned FROM ${t("rollups")} WHERE dataset_id = ${datasetId}`.execute(db);
      const byStatus = new Map(runRows.map((r) => [r.status, Number(r.count)]));
      // Due now: planned (a pass resumes it) or failed with its retry time reached; exhausted
      // items wait for retry-failed (the same rule as cleanup's isDue).
      const { rows: pendingRows } = await sql<Record<string, string | number | Date | null>>`
        SELECT count(*) AS total,
          count(*) FILTER (WHERE state = 'exhausted') AS exhausted,
          count(*) FILTER (WHERE state <> 'exhausted' AND (state = 'planned' OR next_retry_at IS NULL
            OR next_retry_at <= ${at}::timestamptz)) AS due,
          count(*) FILTER (WHERE state = 'failed' AND next_retry_at > ${at}::timestamptz) AS waiting,
          min(next_retry_at) FILTER (WHERE state = 'failed' AND next_retry_at > ${at}::timestamptz) AS next
        FROM ${t("pending_cleanup")} WHERE dataset_id = ${datasetId}`.execute(db);
      const p = pendingRows[0] ?? {};
      const { rows: floorCount } = await sql<{ total: string | number }>`
        SELECT count(*) AS total FROM ${t("retention_floors")} WHERE dataset_id = ${datasetId}`.execute(db);
      const { rows: floorItems } = await sql<Row>`
        SELECT * FROM ${t("retention_floors")} WHERE dataset_id = ${datasetId}
        ORDER BY protected_until, run_id, url LIMIT ${STATUS_FLOOR_ITEMS}`.execute(db);
      const items = floorItems.map((r) => toFloor(normaliseRow(r, PROJECTION_COLUMNS.retention_floors)));
      const { rows: passRows } = await sql<Record<string, unknown>>`
        SELECT holder, last_pass_kind, last_pass_started_at, last_pass_finished_at, last_pass_outcome
        FROM ${t("maintenance_leases")}
        WHERE dataset_id = ${datasetId} AND last_pass_kind IS NOT NULL`.execute(db);
      const { rows: auditRows } = await sql<Record<string, unknown>>`
        SELECT last_audit_at, last_audit_events, last_audit_match, last_audit_differences,
          last_audit_deep, last_audit_archive_problems
        FROM ${t("projection_state")} WHERE name = 'ledger' AND last_audit_at IS NOT NULL`.execute(db);
      const count = (v: unknown) => (v === null || v === undefined ? 0 : Number(v));
      const date = (v: unknown) =>
        v === null || v === undefined ? null : v instanceof Date ? v : new Date(String(v));
      const pass = passRows[0];
      const audit = auditRows[0];
      return {
        runs: {
          total: [...byStatus.values()].reduce((a, b) => a + b, 0),
          started: byStatus.get("STARTED") ?? 0,
          publishing: byStatus.get("PUBLISHING") ?? 0,
          succeeded: byStatus.get("SUCCEEDED") ?? 0,
          failed: byStatus.get("FAILED") ?? 0,
          pruned: count(prunedRows[0]?.pruned),
        },
        pending: {
          total: count(p.total),
          dueNow: count(p.due),
          waiting: count(p.waiting),
          exhausted: count(p.exhausted),
          nextRetryAt: date(p.next),
        },
        floor: { total: count(floorCount[0]?.total), nextLeavesAt: items[0]?.protectedUntil ?? null, items },
        lastMaintenance: pass ? toPassRecord(pass) : null,
        lastAudit: audit
          ? {
              at: date(audit.last_audit_at) as Date,
              events: count(audit.last_audit_events),
              match: audit.last_audit_match === true,
              differences: count(audit.last_audit_differences),
              deep: audit.last_audit_deep === true,
              archiveProblems:
                audit.last_audit_archive_problems === null || audit.last_audit_archive_problems === undefined
                  ? null
                  : Number(audit.last_audit_archive_problems),
            }
          : null,
      };
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
