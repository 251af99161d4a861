import { sql } from "kysely";
import { ValidationError } from "../../errors.js";
import type { RecordedEvent } from "../../events/envelope.js";
import type { LedgerDb } from "./database.js";
import type { PgEventLog } from "./pg-event-log.js";

/**
 * An asynchronous consumer of the global log. `handle` runs in the same transaction that moves
 * the checkpoint, so a crash neither loses nor repeats an event: either both the handler's writes
 * and the new checkpoint commit, or neither does.
 *
 * @example
 * ```ts
 * const sub: SubscriptionOptions = {
 *   name: "audit-mirror",
 *   handle: async (trx, events) => { for (const e of events) await insertRow(trx, e) },
 * }
 * ```
 */
export interface SubscriptionOptions {
  name: string;
  handle(trx: LedgerDb, events: readonly RecordedEvent[]): Promise<void>;
  batchSize?: number;
}

/**
 * Delivers the next batch after the subscription's checkpoint, if any. Returns how many events
 * were handled (0 when caught up or when another instance of the same subscription holds it).
 *
 * @example
 * ```ts
 * while ((await processSubscriptionBatch(log, sub)) > 0) {}
 * ```
 */
export async function processSubscriptionBatch(
  log: PgEventLog,
  options: SubscriptionOptions,
): Promise<number> {
  if (!/^[A-Za-z0-9._:-]{1,200}$/.test(options.name)) {
    throw new ValidationError("name", "subscription name must be 1–200 characters of A–Z a–z 0–9 . _ : -");
  }
  const table = sql.id(log.schema, "subscription_checkpoints");
  await sql`INSERT INTO ${table} (name) VALUES (${options.name}) ON CONFLICT (name) DO NOTHING`.execute(
    log.db,
  );
  const { rows } = await sql<{ position: string | number }>`
    SELECT position FROM ${table} WHERE name = ${options.name}`.execute(log.db);
  const checkpoint = Number(rows[0]?.position ?? 0);
  const events = await log.readAll({ after: checkpoint, limit: options.batchSize ?? 500 });
  const last = events.at(-1);
  if (!last) return 0;
  return log.db.transaction().execute(async (trx) => {
    // Re-read under a row lock: a second instance of the same subscription waits here, then sees
    // the moved checkpoint and backs off instead of applying the batch twice.
    const { rows: locked } = await sql<{ position: string | number }>`
      SELECT position FROM ${table} WHERE name = ${options.name} FOR UPDATE`.execute(trx);
    if (Number(locked[0]?.position ?? -1) !== checkpoint) return 0;
    await options.handle(trx, events);
    await sql`UPDATE ${table} SET position = ${last.globalPosition}, updated_at = now() WHERE name = ${options.name}`.execute(
      trx,
    );
    return events.length;
  });
}

/** The stored checkpoint of a subscription (0 when it never ran). */
export async function subscriptionCheckpoint(log: PgEventLog, name: string): Promise<number> {
  const { rows } = await sql<{ position: string | number }>`
    SELECT position FROM ${sql.id(log.schema, "subscription_checkpoints")} WHERE name = ${name}`.execute(
    log.db,
  );
  return Number(rows[0]?.position ?? 0);
}
