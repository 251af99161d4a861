import { sql } from "kysely";
import type { PgEventLog } from "../src/adapters/postgres/pg-event-log.js";
import { createPgEventLog, migrateToLatest, openDatabase } from "../src/index.js";
import { event } from "./append.js";
import {
  type BenchReport,
  type BenchRow,
  fmt,
  type Measurement,
  machineFacts,
  measure,
  scaled,
  withBenchDatabase,
} from "./support.js";

/*
 * Hot-log growth (issue 16 item 5): does the `events` table need declarative partitioning? The same
 * measurements at a small and a large log: single appends (16 clients), readAll in pages from the
 * oldest events and from the newest, and reading one run's stream. The log is filled in SQL
 * (INSERT … SELECT generate_series, the shapes and sizes of bench/append's events, runs of 2,000
 * events), not through the API: only the table's size matters here, and 10M appends would take
 * hours. Then VACUUM ANALYZE, as autovacuum would eventually do.
 */

const SCHEMA = "shardledger";
const SIZES = [scaled(100_000), Number(process.env.LOG_GROWTH_EVENTS ?? scaled(10_000_000))];
const EVENTS_PER_RUN = 2_000;
const FILL_CHUNK = 500_000;
const CLIENTS = 16;
const APPENDS = scaled(8_000);
const READ_EVENTS = scaled(200_000);
const PAGE = 10_000;
const STREAM_READS = 50;

export async function run(): Promise<BenchReport> {
  return withBenchDatabase(async (url) => {
    const machine = await machineFacts(url);
    const database = await openDatabase(url, { schema: SCHEMA, poolSize: CLIENTS });
    try {
      await migrateToLatest(database.db, SCHEMA);
      const log = createPgEventLog({ db: database.db, schema: SCHEMA });
      const rows: BenchRow[] = [];
      // `count` events are in the log, the last at `position` (appends measured take positions too).
      let count = 0;
      let position = 0;
      for (const size of SIZES) {
        const fillStarted = performance.now();
        while (count < size) {
          const n = Math.min(size - count, FILL_CHUNK);
          await fill(log, position + 1, position + n);
          count += n;
          position += n;
        }
        await sql`SELECT setval(${`${SCHEMA}.global_position_seq`}::regclass, ${position})`.execute(
          database.db,
        );
        await sql`VACUUM ANALYZE ${sql.id(SCHEMA, "events")}`.execute(database.db);
        await sql`VACUUM ANALYZE ${sql.id(SCHEMA, "streams")}`.execute(database.db);
        await sql`CHECKPOINT`.execute(database.db);
        const fillSeconds = (performance.now() - fillStarted) / 1000;
        const sizes = await relationSizes(log);

        const appends = await measure(CLIENTS, APPENDS, async (c, i) => {
          await log.append(`growth-${size}-${c}`, [event(i)], { expectedVersion: "any" });
          return 1;
        });
        count += appends.events;
        position = await lastPosition(log);
        const oldest = await readAllFrom(log, 0);
        const newest = await readAllFrom(log, Math.max(0, position - READ_EVENTS));
        const runs = Math.max(1, Math.floor(position / EVENTS_PER_RUN));
        const stream = await measure(1, STREAM_READS, async (_c, i) => {
          return (await log.readStream(`run-${(i * 7919) % runs}`)).length;
        });
        const row = (what: string, m: Measurement, extra: BenchRow = {}): BenchRow => ({
          "events in log": size,
          measurement: what,
          "events/s": fmt(m.eventsPerSecond),
          "p50 ms": fmt(m.p50Ms),
          "p99 ms": fmt(m.p99Ms),
          ...extra,
        });
        rows.push(
          row(`append, 1 event (${CLIENTS} clients)`, appends, {
            "table + indexes": `${sizes.table} + ${sizes.indexes}`,
            "fill s": fmt(fillSeconds),
          }),
          row(`readAll ${READ_EVENTS} oldest, pages of ${PAGE}`, oldest),
          row(`readAll ${READ_EVENTS} newest, pages of ${PAGE}`, newest),
          row(`readStream of one ${EVENTS_PER_RUN}-event run`, stream),
        );
      }
      return {
        name: "log-growth",
        machine,
        rows,
        notes: [
          `Filled in SQL in chunks of ${FILL_CHUNK} (runs of ${EVENTS_PER_RUN} events, bench/append's payloads), then VACUUM ANALYZE and CHECKPOINT; ` +
            `${APPENDS} single appends on ${CLIENTS} clients; readAll timed per page (p50/p99 are per page of ${PAGE}); ` +
            `readStream of ${STREAM_READS} runs spread over the log.`,
        ],
      };
    } finally {
      await database.close();
    }
  });
}

/** Inserts positions `from`..`to` as an old install's history, and their streams. */
async function fill(log: PgEventLog, from: number, to: number): Promise<void> {
  const t = (name: string) => sql.id(SCHEMA, name);
  const metadata = JSON.stringify(event(0).metadata);
  await log.db.transaction().execute(async (trx) => {
    await sql`INSERT INTO ${t("events")}
        (global_position, transaction_id, event_id, stream_id, stream_version, type, schema_version, data, metadata, recorded_at)
      SELECT g, pg_current_xact_id(), gen_random_uuid(), 'run-' || ((g - 1) / ${EVENTS_PER_RUN}),
        (g - 1) % ${EVENTS_PER_RUN} + 1,
        CASE WHEN g % 2 = 0 THEN 'RunHeartbeat' ELSE 'AttemptSucceeded' END, 1,
        CASE WHEN g % 2 = 0 THEN jsonb_build_object('runId', 'run-2026-11-23T10.00')
        ELSE jsonb_build_object('runId', 'run-2026-11-23T10.00', 'shard', g % 4096, 'attempt', 1,
          'taskAttemptId', (9007199254740993 + g)::text,
          'url', 's3://lake-prod/datasets/sales/_attempts/run-2026-11-23T10.00/shard-' || (g % 4096) || '/attempt-1/')
        END,
        ${metadata}::jsonb, now() - make_interval(secs => ${to} - g)
      FROM generate_series(${from}::bigint, ${to}::bigint) AS g`.execute(trx);
    await sql`INSERT INTO ${t("streams")} AS st (stream_id, version, updated_at)
      SELECT 'run-' || r, least(${to}::bigint - r * ${EVENTS_PER_RUN}, ${EVENTS_PER_RUN}), now()
      FROM generate_series((${from}::bigint - 1) / ${EVENTS_PER_RUN}, (${to}::bigint - 1) / ${EVENTS_PER_RUN}) AS r
      ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version`.execute(trx);
  });
}

/** Reads READ_EVENTS events in pages after `after`; one operation per page. */
async function readAllFrom(log: PgEventLog, after: number): Promise<Measurement> {
  let cursor = after;
  let read = 0;
  return measure(1, Math.ceil(READ_EVENTS / PAGE), async () => {
    const page = await log.readAll({ after: cursor, limit: Math.min(PAGE, READ_EVENTS - read) });
    cursor = page.at(-1)?.globalPosition ?? cursor;
    read += page.length;
    return page.length;
  });
}

async function lastPosition(log: PgEventLog): Promise<number> {
  const { rows } = await sql<{ p: string | number | null }>`
    SELECT max(global_position) AS p FROM ${sql.id(SCHEMA, "events")}`.execute(log.db);
  return Number(rows[0]?.p ?? 0);
}

async function relationSizes(log: PgEventLog): Promise<{ table: string; indexes: string }> {
  const { rows } = await sql<{ table: string; indexes: string }>`
    SELECT pg_size_pretty(pg_table_size(${`${SCHEMA}.events`}::regclass)) AS table,
           pg_size_pretty(pg_indexes_size(${`${SCHEMA}.events`}::regclass)) AS indexes`.execute(log.db);
  return rows[0] ?? { table: "?", indexes: "?" };
}
