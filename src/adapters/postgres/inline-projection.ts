import type { RecordedEvent } from "../../events/envelope.js";
import type { LedgerDb } from "./database.js";
import type { SendStatement } from "./pipelined-transaction.js";

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
  /**
   * The same work for a pipelined transaction (see PipelinedTransaction), when the projection can
   * send its statements ahead: given the events about to be appended, it sends (through `send`,
   * statements compiled for `db`) the reads it will need for any of them, and answers the step
   * that, given the events the append wrote, folds them once those reads answer and sends its
   * writes, answering once they are sent (`done` settles with them). A log uses it only when every
   * projection has it.
   */
  readonly ahead?: (
    send: SendStatement,
    db: LedgerDb,
    schema: string,
    events: readonly Pick<RecordedEvent, "type" | "data" | "recordedAt">[],
  ) => (written: readonly RecordedEvent[]) => Promise<{ done: Promise<unknown> }>;
}
