import type { RecordedEvent } from "../../events/envelope.js";
import type { LedgerDb } from "./database.js";

/**
 * A projection updated inside the append's transaction: it is never behind the log, and a failing
 * projection fails the append (nothing is written).
 *
 * @example
 * ```ts
 * import { sql } from "kysely"
 * const counter: InlineProjection = {
 *   name: "event_counter",
 *   apply: async (trx, events, schema) => {
 *     await sql`UPDATE ${sql.id(schema, "counter")} SET n = n + ${events.length}`.execute(trx)
 *   },
 * }
 * ```
 */
export interface InlineProjection {
  readonly name: string;
  apply(trx: LedgerDb, events: readonly RecordedEvent[], schema: string): Promise<void>;
}
