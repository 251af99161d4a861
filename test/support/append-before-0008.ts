import { randomUUID } from "node:crypto";
import { sql } from "kysely";
import type { LedgerDb } from "../../src/adapters/postgres/database.js";
import { type NewEvent, normaliseMetadata } from "../../src/events/envelope.js";
import { defaultCatalogue } from "../../src/events/event-catalogue.js";

/**
 * Appends `events` to `streamId` ("any" expected version) as the log did before migration 0008
 * added `append_events`: reserve_positions, then the stream upsert and the insert. For tests that
 * build an install at an older schema version, where today's log cannot append; the rows are the
 * ones that code stored.
 */
export async function appendBefore0008(
  db: LedgerDb,
  schema: string,
  streamId: string,
  events: readonly NewEvent[],
  recordedAt = new Date(),
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const { rows } = await sql<{ tx: string; first_position: string | number }>`
      SELECT tx::text AS tx, first_position FROM ${sql.id(schema, "reserve_positions")}(${events.length}::integer)`.execute(
      trx,
    );
    const first = Number(rows[0]?.first_position);
    const { rows: moved } = await sql<{ version: string | number }>`
      INSERT INTO ${sql.id(schema, "streams")} AS st (stream_id, version, updated_at)
      VALUES (${streamId}, ${events.length}, ${recordedAt})
      ON CONFLICT (stream_id) DO UPDATE SET version = st.version + EXCLUDED.version, updated_at = EXCLUDED.updated_at
      RETURNING version`.execute(trx);
    const version = Number(moved[0]?.version) - events.length;
    for (const [i, e] of events.entries()) {
      const { schemaVersion, data } = defaultCatalogue.validate(e.type, e.data, e.schemaVersion);
      await sql`INSERT INTO ${sql.id(schema, "events")}
          (global_position, transaction_id, event_id, stream_id, stream_version, type, schema_version, data, metadata, recorded_at)
        VALUES (${first + i}, ${rows[0]?.tx}::xid8, ${e.eventId ?? randomUUID()}, ${streamId}, ${version + i + 1},
          ${e.type}, ${schemaVersion}, ${JSON.stringify(data)}::jsonb,
          ${JSON.stringify(normaliseMetadata(e.metadata))}::jsonb, ${recordedAt})`.execute(trx);
    }
  });
}
