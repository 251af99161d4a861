import { sql } from "kysely";
import type { SchemaMigration } from "./schema-migration.js";

/**
 * Migration 0012: positions without a mutex. Until now every append took its transaction id and
 * its positions under one advisory lock (reserve_positions, then append_events), so that position
 * order was transaction-id order and a reader could stop at the snapshot's xmin. That lock, its
 * error block and the plpgsql around it cost a single append half of a raw INSERT
 * (bench/RESULTS.md, "Single appends: what the server spends…").
 *
 * The order is now the readers' business, with one rule left to the writers: **a transaction
 * takes a position only after it has a transaction id** (it has written its stream row first, or
 * asked for its id). A reader then finds a position below which nothing is still in flight
 * (`read_horizon`, below, and src/adapters/postgres/read-horizon.ts):
 *
 * 1. it reads the sequence: every position ≤ `horizon` has been handed out;
 * 2. it then takes a transaction id of its own, `horizon_xid`: ids are handed out in time order,
 *    so every transaction holding a position ≤ `horizon` has an id below it;
 * 3. once a snapshot's xmin is above `horizon_xid`, all of them have ended, and every event at a
 *    position ≤ `horizon` that will ever exist is committed and visible.
 *
 * The reader's own transaction writes nothing; it commits asynchronously (no WAL flush wait).
 *
 * `append_events` keeps its arguments, its outcomes and its two API rules (one append per
 * transaction, the append before any other write), and answers the positions of the new events,
 * which are no longer contiguous: two concurrent appends may interleave. Within one append they
 * rise with the stream version, and a stream's row lock (taken before any position) orders the
 * appends of one stream, so a stream still reads in version order.
 */
export const lockFreePositions: SchemaMigration = {
  name: "0012_lock_free_positions",
  async up(db, schema) {
    const t = (name: string) => sql.id(schema, name);
    const sequence = sql.lit(`${schema}.global_position_seq`);
    await sql`DROP FUNCTION ${t("append_events")}(text, bigint, uuid[], uuid[], text[], integer[], text[], text[],
      timestamptz, text, bigint)`.execute(db);
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
        OUT positions bigint[],
        OUT next_version bigint,
        OUT known_ids uuid[],
        OUT known_positions bigint[],
        OUT lease_epoch bigint,
        OUT lease_holder text)
      LANGUAGE plpgsql AS $fn$
      DECLARE
        assigned xid8 := pg_current_xact_id_if_assigned();
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

        -- The API's rules, which readers no longer depend on: one append per transaction, before
        -- anything else it writes.
        IF assigned IS NOT NULL THEN
          IF current_setting('shardledger.position_tx', true) = assigned::text THEN
            RAISE EXCEPTION 'shardledger: a transaction may append to the log once; put all of its events in one append'
              USING ERRCODE = 'P0001';
          END IF;
          RAISE EXCEPTION 'shardledger: a transaction must append events before it writes anything else'
            USING ERRCODE = 'P0001', HINT = 'append first, then update projections';
        END IF;
        -- The transaction id, before any position (see read_horizon).
        PERFORM set_config('shardledger.position_tx', pg_current_xact_id()::text, true);

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

        -- Positions in event order: the rows come from unnest in order, and nextval is taken per
        -- row after the ORDER BY.
        WITH ins AS (
          INSERT INTO ${t("events")}
            (global_position, transaction_id, event_id, stream_id, stream_version, type, schema_version, data, metadata, recorded_at)
          SELECT nextval(${sequence}::regclass), pg_current_xact_id(), u.e, p_stream, moved - n + u.o,
                 u.ty, u.sv, u.d::jsonb, u.m::jsonb, p_recorded_at
          FROM unnest(p_ids, p_types, p_schema_versions, p_data, p_metadata) WITH ORDINALITY AS u(e, ty, sv, d, m, o)
          ORDER BY u.o
          RETURNING global_position, stream_version)
        SELECT array_agg(ins.global_position ORDER BY ins.stream_version) INTO positions FROM ins;
        next_version := moved;
      END
      $fn$`.execute(db);

    await sql`CREATE FUNCTION ${t("read_horizon")}(OUT horizon bigint, OUT horizon_xid xid8)
      LANGUAGE plpgsql AS $fn$
      BEGIN
        IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
          RAISE EXCEPTION 'shardledger: read_horizon needs a transaction that has no transaction id yet'
            USING ERRCODE = 'P0001';
        END IF;
        SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END INTO horizon FROM ${t("global_position_seq")} s;
        horizon_xid := pg_current_xact_id();
        -- Nothing of this transaction needs to survive a crash: no flush at commit.
        PERFORM set_config('synchronous_commit', 'off', true);
      END
      $fn$`.execute(db);
  },
};
