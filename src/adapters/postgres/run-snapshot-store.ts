import { sql } from "kysely";
import { runStream } from "../../events/streams.js";
import type { RunSnapshot, RunSnapshotStore } from "../../machines/run-snapshot-store.js";
import type { LedgerDb } from "./database.js";

/**
 * Run snapshots in the `run_snapshots` table (migration 0011): one row per run stream, the stream
 * version it reflects, the fold version that wrote it and the serialised state as text (not
 * jsonb: it is only ever read whole, so the server need not parse it). Written outside any
 * append's transaction; the archive deletes a run's row in its own transaction, a rebuild empties
 * the table (snapshots are derived).
 *
 * @example
 * ```ts
 * const snapshots = pgRunSnapshotStore(database.db, "shardledger")
 * const found = await snapshots.read("r1")
 * ```
 */
export function pgRunSnapshotStore(db: LedgerDb, schema: string): RunSnapshotStore {
  const table = sql.id(schema, "run_snapshots");
  return {
    async read(runId) {
      const { rows } = await sql<{ stream_version: string | number; fold_version: number; state: string }>`
        SELECT stream_version, fold_version, state FROM ${table} WHERE stream_id = ${runStream(runId)}`.execute(
        db,
      );
      const row = rows[0];
      if (!row) return null;
      return {
        runId,
        version: Number(row.stream_version),
        foldVersion: Number(row.fold_version),
        state: row.state,
      } satisfies RunSnapshot;
    },
    async write(snapshot) {
      // A later snapshot of the same fold stays; one of another fold version is replaced.
      await sql`
        INSERT INTO ${table} (stream_id, stream_version, fold_version, state, written_at)
        VALUES (${runStream(snapshot.runId)}, ${snapshot.version}, ${snapshot.foldVersion}, ${snapshot.state}, now())
        ON CONFLICT (stream_id) DO UPDATE SET stream_version = EXCLUDED.stream_version,
          fold_version = EXCLUDED.fold_version, state = EXCLUDED.state, written_at = EXCLUDED.written_at
        WHERE ${table}.fold_version <> EXCLUDED.fold_version
          OR ${table}.stream_version < EXCLUDED.stream_version`.execute(db);
    },
    async remove(runId) {
      await sql`DELETE FROM ${table} WHERE stream_id = ${runStream(runId)}`.execute(db);
    },
  };
}

/**
 * Empties `run_snapshots` in `schema` (a rebuild: snapshots are derived, and the fold that rebuilt
 * the projections may be a newer one).
 *
 * @internal rebuild.
 * @example
 * ```ts
 * await dropRunSnapshots(trx, "shardledger")
 * ```
 */
export async function dropRunSnapshots(db: LedgerDb, schema: string): Promise<void> {
  await sql`DELETE FROM ${sql.id(schema, "run_snapshots")}`.execute(db);
}
