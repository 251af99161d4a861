import { sql } from "kysely";
import { advisoryKey } from "./advisory-keys.js";
import type { SchemaMigration } from "./schema-migration.js";

/**
 * Migration 0008 (its function replaced by migration 0012, lock-free-positions.ts): `append_events`, the whole append as one server-side function, so that an append
 * with no inline projection is one statement sent in autocommit: one round trip instead of four
 * (BEGIN, reserve_positions, move-stream-and-insert, COMMIT). It runs in the caller's transaction
 * when there is one, so the rules of that transaction still hold.
 *
 * In order, as the TypeScript append did it:
 * 1. The ids the caller chose (`p_lookup`) that are stored already: their positions are returned
 *    and they are not written again (idempotent retries). A plain read, no lock.
 * 2. Nothing new: a fence is checked without a lock (a lost lease still stops an idempotent
 *    retry) and the stream's version is returned; nothing is reserved.
 * 3. The reservation of `reserve_positions(n)` (migration 0004), inlined to save a nested call:
 *    the transaction's first and only write (a second one, or a transaction that wrote something
 *    else first, is refused with the same errors), xid and positions taken under the same
 *    microsecond advisory lock, so position order stays transaction-id order and readAll stays
 *    gap-free. The block that releases the lock on an error (a cancel, a timeout) stays: a session
 *    lock left held would stop every appender.
 * 4. The fence: the lease row `FOR SHARE` (a row lock gives the transaction its xid, so it comes
 *    after the reservation); a pass bumping the epoch waits for this transaction to end.
 * 5. The expected version is checked while the stream row is moved (row-locked until commit),
 *    then the new events are inserted numbered from it. "any" tries the UPDATE first (the stream
 *    usually exists) and inserts the row only when it does not.
 *
 * A refused append is an outcome, not an exception: `outcome` is `conflict` (with the stream's
 * version in `next_version`) or `lease_lost` (with the stored epoch and holder). Nothing is written
 * then, and a caller's transaction stays usable, as it did when the checks ran in TypeScript; in
 * autocommit the statement commits only its reservation (a position gap, which readAll tolerates).
 * The caller dedupes ids within one batch before the call, so `p_ids` is distinct.
 *
 * `p_expected`: -1 for "any", 0 for "no stream", n for exactly n.
 */
export const appendFunction: SchemaMigration = {
  name: "0008_one_round_trip_append",
  async up(db, schema) {
    const t = (name: string) => sql.id(schema, name);
    const positionsKey = sql.lit(advisoryKey(schema, "positions"));
    const sequence = sql.lit(`${schema}.global_position_seq`);
    await sql`CREATE FUNCTION ${t("append_events")}(
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
        OUT first_position bigint,
        OUT next_version bigint,
        OUT known_ids uuid[],
        OUT known_positions bigint[],
        OUT lease_epoch bigint,
        OUT lease_holder text)
      LANGUAGE plpgsql AS $fn$
      DECLARE
        assigned xid8 := pg_current_xact_id_if_assigned();
        tx xid8;
        n integer;
        moved bigint;
      BEGIN
        outcome := 'ok';
        IF cardinality(p_lookup) > 0 THEN
          SELECT array_agg(e.event_id), array_agg(e.global_position) INTO known_ids, known_positions
          FROM ${t("events")} e WHERE e.event_id = ANY(p_lookup);
        END IF;
        IF known_ids IS NOT NULL THEN
          SELECT array_agg(u.e ORDER BY u.o), array_agg(u.ty ORDER BY u.o), array_agg(u.sv ORDER BY u.o),
                 array_agg(u.d ORDER BY u.o), array_agg(u.m ORDER BY u.o)
          INTO p_ids, p_types, p_schema_versions, p_data, p_metadata
          FROM unnest(p_ids, p_types, p_schema_versions, p_data, p_metadata) WITH ORDINALITY AS u(e, ty, sv, d, m, o)
          WHERE u.e <> ALL(known_ids);
        END IF;
        n := coalesce(cardinality(p_ids), 0);

        IF n = 0 THEN
          IF p_fence_dataset IS NOT NULL THEN
            SELECT l.epoch, l.holder INTO lease_epoch, lease_holder
            FROM ${t("maintenance_leases")} l WHERE l.dataset_id = p_fence_dataset;
            IF lease_epoch IS DISTINCT FROM p_fence_epoch THEN
              outcome := 'lease_lost';
              RETURN;
            END IF;
          END IF;
          SELECT s.version INTO next_version FROM ${t("streams")} s WHERE s.stream_id = p_stream;
          next_version := coalesce(next_version, 0);
          RETURN;
        END IF;

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
          first_position := nextval(${sequence}::regclass);
          IF n > 1 THEN
            PERFORM setval(${sequence}::regclass, first_position + n - 1);
          END IF;
        EXCEPTION WHEN OTHERS THEN
          PERFORM pg_advisory_unlock(${positionsKey}::bigint);
          RAISE;
        END;
        PERFORM pg_advisory_unlock(${positionsKey}::bigint);
        PERFORM set_config('shardledger.position_tx', tx::text, true);

        IF p_fence_dataset IS NOT NULL THEN
          SELECT l.epoch, l.holder INTO lease_epoch, lease_holder
          FROM ${t("maintenance_leases")} l WHERE l.dataset_id = p_fence_dataset FOR SHARE;
          IF lease_epoch IS DISTINCT FROM p_fence_epoch THEN
            outcome := 'lease_lost';
            RETURN;
          END IF;
        END IF;

        IF p_expected < 0 THEN
          UPDATE ${t("streams")} st SET version = st.version + n, updated_at = p_recorded_at
          WHERE st.stream_id = p_stream
          RETURNING st.version INTO moved;
          IF moved IS NULL THEN
            INSERT INTO ${t("streams")} AS st (stream_id, version, updated_at) VALUES (p_stream, n, p_recorded_at)
            ON CONFLICT (stream_id) DO UPDATE SET version = st.version + EXCLUDED.version, updated_at = EXCLUDED.updated_at
            RETURNING st.version INTO moved;
          END IF;
        ELSIF p_expected = 0 THEN
          INSERT INTO ${t("streams")} AS st (stream_id, version, updated_at) VALUES (p_stream, n, p_recorded_at)
          ON CONFLICT (stream_id) DO NOTHING
          RETURNING st.version INTO moved;
        ELSE
          UPDATE ${t("streams")} st SET version = st.version + n, updated_at = p_recorded_at
          WHERE st.stream_id = p_stream AND st.version = p_expected
          RETURNING st.version INTO moved;
        END IF;
        IF moved IS NULL THEN
          outcome := 'conflict';
          SELECT s.version INTO next_version FROM ${t("streams")} s WHERE s.stream_id = p_stream;
          next_version := coalesce(next_version, 0);
          RETURN;
        END IF;

        INSERT INTO ${t("events")}
          (global_position, transaction_id, event_id, stream_id, stream_version, type, schema_version, data, metadata, recorded_at)
        SELECT first_position + u.o - 1, tx, u.e, p_stream, moved - n + u.o,
               u.ty, u.sv, u.d::jsonb, u.m::jsonb, p_recorded_at
        FROM unnest(p_ids, p_types, p_schema_versions, p_data, p_metadata) WITH ORDINALITY AS u(e, ty, sv, d, m, o);
        next_version := moved;
      END
      $fn$`.execute(db);
  },
};
