import { sql } from "kysely";
import { runStream } from "../../events/streams.js";
import type { RunUrls } from "../../maintenance/gc-planner.js";
import type { MaintenancePassRecord } from "../../projections/views.js";
import { DATA_AREA, runDataPrefix } from "../../storage/object-layout.js";
import type { Database } from "./database.js";
import type { MaintenanceLease } from "./maintenance-lease.js";

/**
 * The reads and writes maintenance needs beyond the typed projection queries, on the tables
 * behind the views (so each uses the index it was built for).
 */

/**
 * Attempts of the dataset's runs that lost and are not yet cleaned (status LOSER, as the fold
 * stored it), starting from the runs that still have losers (the runs index). Ordered by run,
 * then url.
 */
export async function loserAttempts(
  database: Database,
  datasetId: string,
): Promise<{ runId: string; url: string }[]> {
  const schema = database.schema;
  const { rows } = await sql<{ run_id: string; url: string }>`
      SELECT a.run_id, a.url FROM ${sql.id(schema, "runs")} r
      JOIN ${sql.id(schema, "attempt_records")} a ON a.run_id = r.run_id
      WHERE r.dataset_id = ${datasetId} AND r.status = 'SUCCEEDED' AND r.attempts_loser > 0
        AND a.status = 'LOSER' AND a.url IS NOT NULL
      ORDER BY a.run_id, a.url`.execute(database.db);
  return rows.map((r) => ({ runId: r.run_id, url: r.url }));
}

/** The urls of the dataset's recorded winners (those reported with one). */
export async function winnerUrls(database: Database, datasetId: string): Promise<string[]> {
  const { rows } = await sql<{ url: string }>`
      SELECT url FROM ${sql.id(database.schema, "winners")}
      WHERE dataset_id = ${datasetId} AND url IS NOT NULL`.execute(database.db);
  return rows.map((r) => r.url);
}

/**
 * Attempt urls of the dataset's runs recorded outside their own run's data area (before attempt
 * urls were confined to it), and whether each won. `notDeleted` leaves out the ones cleanup has
 * already deleted.
 */
export async function attemptUrlsOutsideRunArea(
  database: Database,
  datasetId: string,
  root: string,
  options: { notDeleted?: boolean } = {},
): Promise<{ runId: string; url: string; winner: boolean }[]> {
  const schema = database.schema;
  const { rows } = await sql<{ run_id: string; url: string; winner: boolean }>`
      SELECT a.run_id, a.url, (w.run_id IS NOT NULL) AS winner
      FROM ${sql.id(schema, "runs")} r
      JOIN ${sql.id(schema, "attempt_records")} a ON a.run_id = r.run_id
      LEFT JOIN ${sql.id(schema, "winners")} w ON w.run_id = a.run_id AND w.shard = a.shard
        AND w.attempt = a.attempt AND w.task_attempt_id IS NOT DISTINCT FROM a.task_attempt_id
      WHERE r.dataset_id = ${datasetId} AND a.url IS NOT NULL
        ${sql.raw(options.notDeleted ? "AND a.cleanup_status IS DISTINCT FROM 'DELETED'" : "")}
        AND NOT starts_with(a.url, ${`${root}/${DATA_AREA}`} || a.run_id || '/')`.execute(database.db);
  return rows.map((r) => ({ runId: r.run_id, url: r.url, winner: r.winner }));
}

/**
 * What gc may delete of each run of the dataset: its whole data area (so files no attempt
 * reported are not stranded; the planner still refuses it if it overlaps a run that stays), the
 * attempt urls recorded outside it, its winners' urls among those, and its manifest.
 */
export async function runUrls(
  database: Database,
  datasetId: string,
  root: string,
): Promise<Map<string, RunUrls>> {
  const attempts = await attemptUrlsOutsideRunArea(database, datasetId, root, { notDeleted: true });
  const { rows: runs } = await sql<{ run_id: string; manifest_url: string | null }>`
      SELECT run_id, manifest_url FROM ${sql.id(database.schema, "runs")} WHERE dataset_id = ${datasetId}`.execute(
    database.db,
  );
  const sets = new Map<
    string,
    { attemptUrls: Set<string>; winnerUrls: Set<string>; manifestUrl: string | null }
  >();
  for (const r of runs) {
    sets.set(r.run_id, {
      attemptUrls: new Set([`${root}/${runDataPrefix(r.run_id).slice(0, -1)}`]),
      winnerUrls: new Set(),
      manifestUrl: r.manifest_url,
    });
  }
  for (const a of attempts) {
    const entry = sets.get(a.runId);
    if (!entry) continue;
    entry.attemptUrls.add(a.url);
    if (a.winner) entry.winnerUrls.add(a.url);
  }
  const out = new Map<string, RunUrls>();
  for (const [runId, e] of sets) {
    out.set(runId, {
      attemptUrls: [...e.attemptUrls],
      winnerUrls: [...e.winnerUrls],
      manifestUrl: e.manifestUrl,
    });
  }
  return out;
}

/**
 * The prune of a run as the log records it: its `Pruned` event while the run is in the hot log, or
 * the counts its `Archived` event carried on once the run stream was archived (and deleted). Null
 * when the run was never pruned. `failedItems` is what `retry-failed` reports as pruned past the
 * floor: at least 1 (the run itself) for a `failed_retention` prune, 0 for any other reason.
 */
export async function prunedFailedItems(
  database: Database,
  runId: string,
): Promise<{ datasetId: string | null; failedItems: number } | null> {
  const { rows } = await sql<{ type: string; data: Record<string, unknown> }>`
      SELECT type, data FROM ${sql.id(database.schema, "events")}
      WHERE (stream_id = ${runStream(runId)} AND type = 'Pruned')
         OR (type = 'Archived' AND data->>'runId' = ${runId})
      ORDER BY global_position DESC LIMIT 1`.execute(database.db);
  const row = rows[0];
  if (!row) return null;
  const pruned = (row.type === "Pruned" ? row.data : row.data.pruned) as {
    reason: string;
    failedItems: number;
  } | null;
  const datasetId = typeof row.data.datasetId === "string" ? row.data.datasetId : null;
  if (!pruned) return { datasetId, failedItems: 0 };
  return {
    datasetId,
    failedItems: pruned.reason === "failed_retention" ? Math.max(1, pruned.failedItems) : 0,
  };
}

/** Records a finished pass on its lease row, only while the lease's epoch is still the stored one. */
export async function recordPass(
  database: Database,
  lease: MaintenanceLease,
  pass: Omit<MaintenancePassRecord, "holder">,
): Promise<void> {
  const outcome = {
    // The pass's own holder: the row's `holder` is whoever took the lease last, and archive and
    // rollback take it without recording a pass.
    holder: lease.holder,
    outcome: pass.outcome,
    deleted: pass.deleted,
    failed: pass.failed,
    pruned: pass.pruned,
    error: pass.error,
  };
  await sql`UPDATE ${sql.id(database.schema, "maintenance_leases")}
    SET last_pass_kind = ${pass.kind}, last_pass_started_at = ${pass.startedAt.toISOString()}::timestamptz,
      last_pass_finished_at = ${pass.finishedAt.toISOString()}::timestamptz,
      last_pass_outcome = ${JSON.stringify(outcome)}::jsonb
    WHERE dataset_id = ${lease.datasetId} AND epoch = ${lease.epoch}`.execute(database.db);
}
