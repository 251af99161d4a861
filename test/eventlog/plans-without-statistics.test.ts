import { randomUUID } from "node:crypto";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPgEventLog, type PgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import type { NewEvent } from "../../src/events/envelope.js";
import { BACKEND, openTestDatabase } from "../support/database.js";

const heartbeat = (runId: string, eventId?: string): NewEvent => ({
  type: "RunHeartbeat",
  data: { runId },
  ...(eventId ? { eventId } : {}),
});

/*
 * The append functions (append_events, append_events_chained) are PL/pgSQL: their statements'
 * plans are cached per connection, and after a few calls a cached plan may be the GENERIC one,
 * planned once for every later call. Planned while the events table was small and had never been
 * analysed (a new database, or any server with autovacuum off or behind), the lookup of stored
 * event ids was a sequential scan, and it stayed one as the table grew: every report group's
 * append read the whole log. On this machine's CI server (autovacuum off) 64 concurrent HTTP
 * reports of one run on a new database ran at ~1,000/s instead of ~3,000/s, slower with every
 * report. Migration 0014 plans the functions' statements for each call.
 */
describe(`append functions on a log that was never analysed (${BACKEND})`, () => {
  let database: Awaited<ReturnType<typeof openTestDatabase>>;
  let log: PgEventLog;
  // One connection: the cached plans are that connection's.
  beforeAll(async () => {
    database = await openTestDatabase("plans", { poolSize: 1 });
    log = createPgEventLog({ db: database.db, schema: database.schema });
  });
  afterAll(() => database.close());

  /** Rows of `events` read by sequential scans so far (this backend's counts flushed first). */
  async function seqTuplesRead(): Promise<number> {
    await sql`SELECT pg_stat_force_next_flush()`.execute(database.db);
    const { rows } = await sql<{ n: string | number | null }>`
      SELECT seq_tup_read AS n FROM pg_stat_user_tables
      WHERE schemaname = ${database.schema} AND relname = 'events'`.execute(database.db);
    return Number(rows[0]?.n ?? 0);
  }

  it("looks stored ids up through the index once the log has grown, not by reading it whole", async () => {
    // Groups of reports with caller-chosen ids (as attempt reports are) while the log is tiny:
    // enough calls for the cached plan to become the generic one.
    const group = () => Array.from({ length: 30 }, () => heartbeat("small", randomUUID()));
    for (let i = 0; i < 10; i++) await log.append("run-small", group(), { expectedVersion: "any" });
    // The log grows (a run's worth of events), with no ANALYZE in between.
    const grown = 5_000;
    await log.append(
      "run-big",
      Array.from({ length: grown }, () => heartbeat("big")),
      { expectedVersion: "any" },
    );
    const before = await seqTuplesRead();
    const appends = 20;
    for (let i = 0; i < appends; i++) await log.append("run-small", group(), { expectedVersion: "any" });
    // A sequential scan per append would read the whole log each time (≥ 100,000 rows here).
    const read = (await seqTuplesRead()) - before;
    expect(read).toBeLessThan(grown);
    expect(await log.streamVersion("run-small")).toBe(30 * 30);
  });
});
