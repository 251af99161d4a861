import { sql } from "kysely";
import type { SchemaMigration } from "./schema-migration.js";

/**
 * Migration 0013: `append_events_chained`, an append that may be sent before the append ahead of
 * it on the same stream has committed. A run's report groups are appended one after another, each
 * at the version the previous one leaves; waiting for each commit before sending the next append
 * left the database idle while the process prepared it (bench/RESULTS.md, report-throughput).
 *
 * The function takes the stream's transaction-scoped advisory lock (the key of
 * `log.transaction(fn, { serialiseWith })`, computed by the caller), so it waits on the server
 * for the chained append ahead of it (which holds that lock until it commits or rolls back). Once
 * the lock is granted, the next statement's snapshot sees what that append committed. Then, with
 * `p_head`, it checks that the stream's event at `p_expected` is the one stored at global position
 * `p_head` — the last event of the append it was chained behind. An expected version alone would
 * also be met by another writer's events of the same count after that append rolled back; a
 * position is taken from a sequence and never handed out twice, so the event at that position is
 * that append's, and an append is all or nothing: the stream holds exactly what it stored. Then it
 * is `append_events` (migration 0012), unchanged: the version check under the stream's row lock
 * still refuses anything appended in between by a writer that takes no advisory lock.
 *
 * Neither the advisory lock nor the read assigns a transaction id, so the append is still the
 * transaction's first write. A failed head check is the `conflict` outcome, with nothing written.
 * `append_events` keeps its signature: a process of the previous version goes on calling it.
 */
export const chainedAppends: SchemaMigration = {
  name: "0013_chained_appends",
  async up(db, schema) {
    const t = (name: string) => sql.id(schema, name);
    await sql`CREATE FUNCTION ${t("append_events_chained")}(
        p_lock bigint,
        p_head bigint,
        p_stream text,
        p_expected bigint,
        p_ids uuid[],
        p_lookup uuid[],
        p_types text[],
        p_schema_versions integer[],
        p_data text[],
        p_metadata text[],
        p_recorded_at timestamptz,
        p_fence_dataset text,
        p_fence_epoch bigint,
        OUT outcome text,
        OUT positions bigint[],
        OUT next_version bigint,
        OUT known_ids uuid[],
        OUT known_positions bigint[],
        OUT lease_epoch bigint,
        OUT lease_holder text)
      LANGUAGE plpgsql AS $fn$
      BEGIN
        PERFORM pg_advisory_xact_lock(p_lock);
        -- A statement after the wait: its snapshot holds whatever the append ahead committed.
        IF p_head IS NOT NULL AND NOT EXISTS (
          SELECT 1 FROM ${t("events")} e
          WHERE e.stream_id = p_stream AND e.stream_version = p_expected AND e.global_position = p_head
        ) THEN
          outcome := 'conflict';
          SELECT s.version INTO next_version FROM ${t("streams")} s WHERE s.stream_id = p_stream;
          next_version := coalesce(next_version, 0);
          RETURN;
        END IF;
        SELECT a.outcome, a.positions, a.next_version, a.known_ids, a.known_positions, a.lease_epoch, a.lease_holder
        INTO outcome, positions, next_version, known_ids, known_positions, lease_epoch, lease_holder
        FROM ${t("append_events")}(p_stream, p_expected, p_ids, p_lookup, p_types, p_schema_versions,
          p_data, p_metadata, p_recorded_at, p_fence_dataset, p_fence_epoch) a;
      END
      $fn$`.execute(db);
  },
};
