import { sql } from "kysely";
import { ConcurrencyError, InternalError } from "../../errors.js";
import type { EventData } from "../../events/catalogue.js";
import { type EventMetadata, normaliseMetadata, type RecordedEvent } from "../../events/envelope.js";
import type { AppendFence } from "../../events/event-log.js";
import { datasetStream, runStream } from "../../events/streams.js";
import type { StoredEvent } from "../../storage/archive-format.js";
import type { LedgerDb } from "./database.js";
import type { PgEventLog } from "./pg-event-log.js";

/**
 * A pruned run that is not archived yet: its `Pruned` event is still in the hot log.
 *
 * @internal
 */
export interface PrunedRun {
  runId: string;
  datasetId: string;
  prunedAt: Date;
  reason: EventData<"Pruned">["reason"];
  attempts: number;
  failedItems: number;
}

/**
 * What the archive's last step commits, in one transaction: the `Archived` event on the dataset
 * stream (fenced by the pass's lease), the deletion of every event of the run stream from the hot
 * log, and the rollups' compensation for its `Pruned`.
 *
 * @internal
 */
export interface ArchiveCommit {
  run: PrunedRun;
  /** The run stream's version the archive holds: every event 1..version is deleted, or nothing. */
  version: number;
  archiveUrl: string;
  checksum: string;
  fence: AppendFence;
  metadata: Partial<EventMetadata>;
  /** @internal test hook, called inside the transaction after the delete: a throw rolls it all back. */
  beforeCommit?: () => Promise<void> | void;
}

/**
 * The hot log's side of archiving: which pruned runs wait, a run stream's events exactly as
 * stored, the `Archived` events, and the one transaction that moves a stream out.
 *
 * @internal built by the ledger's composition file (open-ledger.ts) over its log.
 */
export interface HotLogArchive {
  /** Pruned runs of the dataset still in the hot log, pruned at or before `prunedBefore`, oldest first. */
  prunedRuns(datasetId: string, prunedBefore: Date, limit: number): Promise<PrunedRun[]>;
  /** Every event of a stream as stored (schema version and data not upcast), in version order. */
  storedStream(streamId: string): Promise<StoredEvent[]>;
  /** The `Archived` event of a run (upcast), or null when the run was never archived. */
  archivedEvent(runId: string): Promise<RecordedEvent | null>;
  /** Every `Archived` event in the hot log (upcast), in log order. */
  archivedEvents(): Promise<RecordedEvent[]>;
  /** How many events of the stream the hot log still holds. */
  hotEvents(streamId: string): Promise<number>;
  /** Records the archive and deletes the run stream from the hot log, atomically. */
  commit(input: ArchiveCommit): Promise<{ globalPosition: number }>;
}

interface Raw {
  global_position: string | number;
  event_id: string;
  stream_id: string;
  stream_version: string | number;
  type: string;
  schema_version: number;
  data: unknown;
  metadata: unknown;
  recorded_at: Date | string;
}

const toStored = (r: Raw): StoredEvent => ({
  globalPosition: Number(r.global_position),
  eventId: r.event_id,
  streamId: r.stream_id,
  streamVersion: Number(r.stream_version),
  type: r.type,
  schemaVersion: r.schema_version,
  data: r.data,
  metadata: normaliseMetadata(r.metadata as Partial<EventMetadata>),
  recordedAt: r.recorded_at instanceof Date ? r.recorded_at : new Date(r.recorded_at),
});

/**
 * The hot log's archiving queries over a PostgreSQL/PGlite event log.
 *
 * @internal
 * @example
 * ```ts
 * const hot = pgHotLogArchive(log)
 * const waiting = await hot.prunedRuns("events", new Date(Date.now() - 7 * 86_400_000), 100)
 * ```
 */
export function pgHotLogArchive(log: PgEventLog): HotLogArchive {
  const db = log.db;
  const events = sql.id(log.schema, "events");
  const upcast = (s: StoredEvent): RecordedEvent => ({
    ...s,
    ...log.catalogue.upcast(s.type, s.schemaVersion, s.data),
  });
  const columns = sql`global_position, event_id, stream_id, stream_version, type, schema_version, data, metadata, recorded_at`;
  return {
    async prunedRuns(datasetId, prunedBefore, limit) {
      // Served by events_pruned_idx (migration 0010).
      const { rows } = await sql<{ data: EventData<"Pruned">; recorded_at: Date | string }>`
        SELECT data, recorded_at FROM ${events}
        WHERE type = 'Pruned' AND data->>'datasetId' = ${datasetId} AND recorded_at <= ${prunedBefore.toISOString()}::timestamptz
        ORDER BY recorded_at, global_position
        LIMIT ${limit}`.execute(db);
      return rows.map((r) => ({
        runId: r.data.runId,
        datasetId: r.data.datasetId,
        prunedAt: r.recorded_at instanceof Date ? r.recorded_at : new Date(r.recorded_at),
        reason: r.data.reason,
        attempts: r.data.attempts,
        failedItems: r.data.failedItems,
      }));
    },
    async storedStream(streamId) {
      const { rows } = await sql<Raw>`
        SELECT ${columns} FROM ${events} WHERE stream_id = ${streamId} ORDER BY stream_version`.execute(db);
      return rows.map(toStored);
    },
    async archivedEvent(runId) {
      // Served by events_archived_idx (migration 0010). The latest, should a v1 event exist too.
      const { rows } = await sql<Raw>`
        SELECT ${columns} FROM ${events} WHERE type = 'Archived' AND data->>'runId' = ${runId}
        ORDER BY global_position DESC LIMIT 1`.execute(db);
      return rows[0] ? upcast(toStored(rows[0])) : null;
    },
    async archivedEvents() {
      const { rows } = await sql<Raw>`
        SELECT ${columns} FROM ${events} WHERE type = 'Archived' ORDER BY global_position`.execute(db);
      return rows.map((r) => upcast(toStored(r)));
    },
    async hotEvents(streamId) {
      const { rows } = await sql<{ n: string | number }>`
        SELECT count(*) AS n FROM ${events} WHERE stream_id = ${streamId}`.execute(db);
      return Number(rows[0]?.n ?? 0);
    },
    commit: (input) => commitArchive(log, input),
  };
}

/**
 * One transaction: append `Archived` to the dataset stream (the transaction's first write, as
 * the API asks of every append: docs/event-log.md), then lock the run stream's row and check it still
 * holds exactly the archived version, take the deleted `Pruned` back off the live rollups (the
 * `Archived` fold just added it again: live counts do not move, and a replay of the hot log,
 * which sees only `Archived`, counts the run once), and delete the stream's events. Any surprise
 * throws and rolls everything back. The `streams` row stays: the run's version is kept, so its id
 * can never start a new stream.
 */
async function commitArchive(log: PgEventLog, input: ArchiveCommit): Promise<{ globalPosition: number }> {
  const { run, version } = input;
  const stream = runStream(run.runId);
  const schema = log.schema;
  return log.db.transaction().execute(async (trx: LedgerDb) => {
    const session = log.session(trx);
    const datasetVersion = await session.streamVersion(datasetStream(run.datasetId));
    const data: EventData<"Archived"> = {
      runId: run.runId,
      datasetId: run.datasetId,
      archiveUrl: input.archiveUrl,
      events: version,
      checksum: input.checksum,
      pruned: {
        reason: run.reason,
        attempts: run.attempts,
        failedItems: run.failedItems,
        prunedAt: run.prunedAt.toISOString(),
      },
    };
    const appended = await session.append(
      datasetStream(run.datasetId),
      [{ type: "Archived", data, metadata: input.metadata }],
      { expectedVersion: datasetVersion, fence: input.fence },
    );
    const { rows } = await sql<{ version: string | number }>`
      SELECT version FROM ${sql.id(schema, "streams")} WHERE stream_id = ${stream} FOR UPDATE`.execute(trx);
    const current = rows[0] ? Number(rows[0].version) : 0;
    if (current !== version) throw new ConcurrencyError(stream, version, current);
    const compensated = await sql`
      UPDATE ${sql.id(schema, "rollups")}
      SET pruned_runs = pruned_runs - 1, pruned_attempts = pruned_attempts - ${run.attempts},
        pruned_failed_items = pruned_failed_items - ${run.failedItems}
      WHERE dataset_id = ${run.datasetId} AND reason = ${run.reason} AND pruned_runs >= 2`.execute(trx);
    if (Number(compensated.numAffectedRows ?? 0) !== 1)
      throw new InternalError(
        `archiving run ${run.runId}: the rollup of ${run.datasetId}/${run.reason} does not count its prune`,
      );
    const deleted = await sql`
      DELETE FROM ${sql.id(schema, "events")} WHERE stream_id = ${stream}`.execute(trx);
    if (Number(deleted.numAffectedRows ?? 0) !== version)
      throw new InternalError(
        `archiving run ${run.runId}: the hot log held ${String(deleted.numAffectedRows)} event(s) of ${stream}, the archive ${version}`,
      );
    // Its snapshot (derived from the events just removed) goes with them.
    await sql`DELETE FROM ${sql.id(schema, "run_snapshots")} WHERE stream_id = ${stream}`.execute(trx);
    await input.beforeCommit?.();
    return { globalPosition: appended.positions[0] as number };
  });
}
