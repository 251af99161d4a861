import { sql } from "kysely";
import type { Database } from "../src/adapters/postgres/database.js";
import { createPgEventLog, type PgEventLog } from "../src/adapters/postgres/pg-event-log.js";
import { migrateToLatest, openDatabase } from "../src/index.js";
import { event } from "./append.js";
import {
  type BenchReport,
  type BenchRow,
  combine,
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

const SIZES = [scaled(100_000), Number(process.env.LOG_GROWTH_EVENTS ?? scaled(10_000_000))];
const EVENTS_PER_RUN = 2_000;
const FILL_CHUNK = 500_000;
const CLIENTS = 16;
const APPENDS = scaled(4_000);
const LATENCY_APPENDS = scaled(500);
const READ_EVENTS = scaled(100_000);
const PAGE = 10_000;
const STREAM_READS = 30;
const ROUNDS = 3;

export async function run(): Promise<BenchReport> {
  return withBenchDatabase(async (url) => {
    const machine = await machineFacts(url);
    // One ledger schema per size in the same database, measured in interleaved rounds, so that
    // load from elsewhere on the machine hits both sizes alike.
    const logs: { size: number; schema: string; database: Database; log: PgEventLog; fillSeconds: number }[] =
      [];
    try {
      for (const size of SIZES) {
        const schema = `growth_${size}`;
        const database = await openDatabase(url, { schema, poolSize: CLIENTS });
        await migrateToLatest(database.db, schema);
        const log = createPgEventLog({ db: database.db, schema });
        const started = performance.now();
        for (let from = 1; from <= size; from += FILL_CHUNK) {
          await fill(log, from, Math.min(size, from + FILL_CHUNK - 1));
        }
        await sql`SELECT setval(${`${schema}.global_position_seq`}::regclass, ${size})`.execute(database.db);
        await sql`VACUUM ANALYZE ${sql.id(schema, "events")}`.execute(database.db);
        await sql`VACUUM ANALYZE ${sql.id(schema, "streams")}`.execute(database.db);
        logs.push({ size, schema, database, log, fillSeconds: (performance.now() - started) / 1000 });
      }
      await sql`CHECKPOINT`.execute(logs[0]?.database.db as Database["db"]);

      type Kind = "append16" | "append1" | "oldest" | "newest" | "stream";
      const results = new Map<string, Measurement[]>();
      const keep = (size: number, kind: Kind, m: Measurement) => {
        const key = `${size}:${kind}`;
        results.set(key, [...(results.get(key) ?? []), m]);
      };
      for (let round = 0; round < ROUNDS; round++) {
        for (const { size, log } of logs) {
          keep(
            size,
            "append16",
            await measure(CLIENTS, APPENDS, async (c, i) => {
              await log.append(`growth-${c}`, [event(round * APPENDS + i)], { expectedVersion: "any" });
              return 1;
            }),
          );
          keep(
            size,
            "append1",
            await measure(1, LATENCY_APPENDS, async (_c, i) => {
              await log.append("growth-single", [event(i)], { expectedVersion: "any" });
              return 1;
            }),
          );
          const last = await lastPosition(log);
          keep(size, "oldest", await readAllFrom(log, 0));
          keep(size, "newest", await readAllFrom(log, Math.max(0, last - READ_EVENTS)));
          const runs = Math.max(1, Math.floor(size / EVENTS_PER_RUN));
          keep(
            size,
            "stream",
            await measure(1, STREAM_READS, async (_c, i) => {
              return (await log.readStream(`run-${(round * 104_729 + i * 7919) % runs}`)).length;
            }),
          );
        }
      }

      const rows: BenchRow[] = [];
      const labels: Record<Kind, string> = {
        append16: `append, 1 event, ${CLIENTS} clients`,
        append1: "append, 1 event, 1 client",
        oldest: `readAll ${READ_EVENTS} of the oldest, pages of ${PAGE}`,
        newest: `readAll ${READ_EVENTS} of the newest, pages of ${PAGE}`,
        stream: `readStream of one ${EVENTS_PER_RUN}-event run`,
      };
      for (const kind of Object.keys(labels) as Kind[]) {
        for (const { size, log, fillSeconds } of logs) {
          const m = combine(results.get(`${size}:${kind}`) ?? []);
          const sizes = kind === "append16" ? await relationSizes(log) : null;
          rows.push({
            measurement: labels[kind],
            "events in log": size,
            "events/s": fmt(m.eventsPerSecond),
            "p50 ms": fmt(m.p50Ms),
            "p99 ms": fmt(m.p99Ms),
            ...(sizes
              ? { "table + indexes": `${sizes.table} + ${sizes.indexes}`, "fill s": fmt(fillSeconds) }
              : {}),
          });
        }
      }
      return {
        name: "log-growth",
        machine,
        rows,
        notes: [
          `One schema per size in one database, filled in SQL in chunks of ${FILL_CHUNK} (runs of ${EVENTS_PER_RUN} events, bench/append's payloads), ` +
            `then VACUUM ANALYZE and CHECKPOINT; ${ROUNDS} rounds interleaving the sizes. Per round and size: ${APPENDS} single appends on ${CLIENTS} clients, ` +
            `${LATENCY_APPENDS} on 1 client (latency without queueing), readAll of ${READ_EVENTS} events timed per page of ${PAGE} ` +
            `(p50/p99 per page) from the oldest and up to the newest, readStream of ${STREAM_READS} runs spread over the log.`,
        ],
      };
    } finally {
      for (const { database } of logs) await database.close();
    }
  });
}

/** Inserts positions `from`..`to` as an old install's history, and their streams. */
async function fill(log: PgEventLog, from: number, to: number): Promise<void> {
  const t = (name: string) => sql.id(log.schema, name);
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
    SELECT max(global_position) AS p FROM ${sql.id(log.schema, "events")}`.execute(log.db);
  return Number(rows[0]?.p ?? 0);
}

async function relationSizes(log: PgEventLog): Promise<{ table: string; indexes: string }> {
  const { rows } = await sql<{ table: string; indexes: string }>`
    SELECT pg_size_pretty(pg_table_size(${`${log.schema}.events`}::regclass)) AS table,
           pg_size_pretty(pg_indexes_size(${`${log.schema}.events`}::regclass)) AS indexes`.execute(log.db);
  return rows[0] ?? { table: "?", indexes: "?" };
}
