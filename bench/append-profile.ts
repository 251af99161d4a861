import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import pg from "pg";
import { createPgEventLog, migrateToLatest, type NewEvent, openDatabase } from "../src/index.js";
import { event, RAW_TABLE, rawInsert, rawValues } from "./append.js";
import {
  type BenchReport,
  type BenchRow,
  fmt,
  machineFacts,
  measure,
  scaled,
  withBenchDatabase,
} from "./support.js";

/*
 * Where a ledger append's time goes. The same appends as bench/append.ts, replayed with raw pg
 * statement by statement, then with fewer round trips, so each saving is measured rather than
 * guessed. The variants are SQL sketches for src/, not a second implementation: they skip
 * validation, duplicate handling and error mapping. "ledger append" is today's log.append (one call
 * of append_events, migration 0008); "ledger SQL via raw pg" replays the 7 statements it used to send.
 */

const S = "shardledger";
const CLIENTS = 16;
const SINGLES = scaled(10_000);
const BATCHES = scaled(1_000);
const ROUNDS = 3;

// One round trip: what a server-side append would cost (dedupe check included).
const APPEND_FUNCTION = `CREATE FUNCTION ${S}.bench_append(
  p_stream text, p_ids uuid[], p_types text[], p_svs integer[], p_data text[], p_meta text[], p_at timestamptz
) RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
  r record;
  n integer := cardinality(p_ids);
  v bigint;
BEGIN
  PERFORM 1 FROM ${S}.events WHERE event_id = ANY(p_ids);
  SELECT * INTO r FROM ${S}.reserve_positions(n);
  INSERT INTO ${S}.streams AS s VALUES (p_stream, n, p_at)
    ON CONFLICT (stream_id) DO UPDATE SET version = s.version + n, updated_at = p_at
    RETURNING version INTO v;
  INSERT INTO ${S}.events (global_position, transaction_id, event_id, stream_id, stream_version, type,
      schema_version, data, metadata, recorded_at)
    SELECT r.first_position + o - 1, r.tx, e, p_stream, v - n + o, t, sv, d::jsonb, m::jsonb, p_at
    FROM unnest(p_ids, p_types, p_svs, p_data, p_meta) WITH ORDINALITY AS u(e, t, sv, d, m, o);
  RETURN r.first_position;
END
$fn$`;

// The stream upsert and the events insert as one statement (after reserve_positions).
const UPSERT_AND_INSERT = `WITH s AS (
  INSERT INTO ${S}.streams AS s VALUES ($1, $2::bigint, $3)
  ON CONFLICT (stream_id) DO UPDATE SET version = s.version + $2::bigint, updated_at = EXCLUDED.updated_at
  RETURNING version
)
INSERT INTO ${S}.events (global_position, transaction_id, event_id, stream_id, stream_version, type,
  schema_version, data, metadata, recorded_at)
SELECT $4::bigint + o - 1, $5::xid8, e, $1, s.version - $2 + o, t, sv, d::jsonb, m::jsonb, $3
FROM s, unnest($6::uuid[], $7::text[], $8::integer[], $9::text[], $10::text[]) WITH ORDINALITY AS u(e, t, sv, d, m, o)`;

const STATEMENT_KINDS: [string, RegExp][] = [
  ["BEGIN", /^begin/i],
  ["COMMIT", /^commit/i],
  ["dedupe SELECT", /SELECT event_id, global_position/],
  ["reserve_positions", /reserve_positions/],
  ["SELECT … FOR UPDATE", /FOR UPDATE/],
  ["UPDATE streams", /^\s*UPDATE/],
  ["INSERT streams", /^\s*INSERT INTO "?\w+"?\."?streams/],
  ["INSERT … unnest", /^\s*INSERT INTO "?\w+"?\."?events/],
  ["upsert⋈insert CTE", /^WITH s AS/],
];

interface Columns {
  ids: string[];
  types: string[];
  svs: number[];
  data: string[];
  meta: string[];
}

function columns(events: NewEvent[]): Columns {
  return {
    ids: events.map(() => randomUUID()),
    types: events.map((e) => e.type),
    svs: events.map(() => 1),
    data: events.map((e) => JSON.stringify(e.data)),
    meta: events.map((e) => JSON.stringify(e.metadata)),
  };
}

/** Busy and total jiffies of the whole machine (node and every postgres backend). */
function machineCpu(): { busy: number; total: number } {
  const fields = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").trim().split(/\s+/).slice(1);
  const n = fields.map(Number);
  const total = n.reduce((a, b) => a + b, 0);
  return { busy: total - (n[3] ?? 0) - (n[4] ?? 0), total };
}

/** Samples what the benchmark's busy backends (in a statement or a transaction) are doing. */
async function sampleWaits(url: string, counts: Map<string, number>): Promise<() => Promise<void>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  let running = true;
  const loop = (async () => {
    while (running) {
      const { rows } = await client.query<{ w: string; n: string }>(
        `SELECT CASE WHEN state = 'active' AND wait_event IS NULL THEN 'on CPU'
                     WHEN wait_event = 'ClientRead' THEN state || ', waiting for client'
                     ELSE coalesce(wait_event_type || ':' || wait_event, state) END AS w, count(*) AS n
         FROM pg_stat_activity
         WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
           AND state IN ('active', 'idle in transaction')
         GROUP BY 1`,
      );
      for (const r of rows) counts.set(r.w, (counts.get(r.w) ?? 0) + Number(r.n));
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  })();
  return async () => {
    running = false;
    await loop;
    await client.end();
  };
}

const median = (xs: number[]): number => {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

type Spec = [
  label: string,
  roundTrips: number,
  eventsPerAppend: number,
  clients: number,
  streams: number,
  ops: number,
  append: (stream: string, events: NewEvent[], i: number) => Promise<unknown>,
];

export async function run(): Promise<BenchReport> {
  return withBenchDatabase(async (url) => {
    const machine = await machineFacts(url);
    const pool = new pg.Pool({ connectionString: url, max: CLIENTS });
    pool.on("error", () => {});
    // Times every statement sent as (text, values) into `timed`, while it is set.
    let timed: Map<string, { n: number; ms: number }> | undefined;
    pool.on("connect", (client) => {
      const query = client.query.bind(client) as unknown as (...args: unknown[]) => unknown;
      // Only kysely's promise calls (text, values) are timed; pool.query passes a callback.
      (client as unknown as { query: unknown }).query = (...args: unknown[]) => {
        const text = args[0];
        const into = timed;
        if (!into || typeof text !== "string" || args.length > 2) return query(...args);
        const started = performance.now();
        return (query(...args) as Promise<unknown>).finally(() => {
          const kind = STATEMENT_KINDS.find(([, re]) => re.test(text))?.[0] ?? text.slice(0, 40);
          const s = into.get(kind) ?? { n: 0, ms: 0 };
          s.n++;
          s.ms += performance.now() - started;
          into.set(kind, s);
        });
      };
    });
    const database = await openDatabase(pool, { schema: S });
    try {
      await migrateToLatest(database.db, S);
      await pool.query(RAW_TABLE);
      await pool.query(APPEND_FUNCTION);
      const log = createPgEventLog({ db: database.db, schema: S });
      const rawVersions = new Map<string, number>();

      const inTransaction = async (fn: (c: pg.PoolClient) => Promise<void>) => {
        const client = await pool.connect();
        try {
          await client.query("BEGIN");
          await fn(client);
          await client.query("COMMIT");
        } catch (e) {
          await client.query("ROLLBACK");
          throw e;
        } finally {
          client.release();
        }
      };
      const rawRows = (c: pg.PoolClient | pg.Pool, stream: string, i: number, n: number) => {
        const first = (rawVersions.get(stream) ?? 0) + 1;
        rawVersions.set(stream, first + n - 1);
        return c.query(
          ...rawInsert(Array.from({ length: n }, (_, k) => rawValues(stream, first + k, i * n + k))),
        );
      };
      // The ledger's statements, verbatim in effect, minus kysely and zod.
      const replay =
        (o: { dedupe: boolean; advisoryLock: boolean }) => (stream: string, events: NewEvent[]) =>
          inTransaction(async (c) => {
            const col = columns(events);
            if (o.dedupe)
              await c.query(
                `SELECT event_id, global_position FROM ${S}.events WHERE event_id = ANY($1::uuid[])`,
                [col.ids],
              );
            const { rows } = o.advisoryLock
              ? await c.query(
                  `SELECT tx::text AS tx, first_position FROM ${S}.reserve_positions($1::integer)`,
                  [events.length],
                )
              : await c.query(
                  `SELECT pg_current_xact_id()::text AS tx, nextval('${S}.global_position_seq') AS first_position`,
                );
            const { tx, first_position: first } = rows[0] as { tx: string; first_position: string };
            const s = await c.query<{ version: string }>(
              `SELECT version FROM ${S}.streams WHERE stream_id = $1 FOR UPDATE`,
              [stream],
            );
            const current = Number(s.rows[0]?.version ?? 0);
            const at = new Date();
            if (s.rows.length > 0)
              await c.query(`UPDATE ${S}.streams SET version = $1, updated_at = $2 WHERE stream_id = $3`, [
                current + events.length,
                at,
                stream,
              ]);
            else await c.query(`INSERT INTO ${S}.streams VALUES ($1, $2, $3)`, [stream, events.length, at]);
            await c.query(
              `INSERT INTO ${S}.events (global_position, transaction_id, event_id, stream_id, stream_version, type,
                 schema_version, data, metadata, recorded_at)
               SELECT $1::bigint + o - 1, $2::xid8, e, $3, $4::bigint + o, t, sv, d::jsonb, m::jsonb, $5
               FROM unnest($6::uuid[], $7::text[], $8::integer[], $9::text[], $10::text[])
                 WITH ORDINALITY AS u(e, t, sv, d, m, o)`,
              [first, tx, stream, current, at, col.ids, col.types, col.svs, col.data, col.meta],
            );
          });
      const fourTrips = (stream: string, events: NewEvent[]) =>
        inTransaction(async (c) => {
          const col = columns(events);
          const { rows } = await c.query(
            `SELECT tx::text AS tx, first_position FROM ${S}.reserve_positions($1::integer)`,
            [events.length],
          );
          const { tx, first_position: first } = rows[0] as { tx: string; first_position: string };
          await c.query(UPSERT_AND_INSERT, [
            stream,
            events.length,
            new Date(),
            first,
            tx,
            col.ids,
            col.types,
            col.svs,
            col.data,
            col.meta,
          ]);
        });
      const oneTrip = async (stream: string, events: NewEvent[]) => {
        const col = columns(events);
        await pool.query(`SELECT ${S}.bench_append($1, $2::uuid[], $3, $4, $5, $6, $7)`, [
          stream,
          col.ids,
          col.types,
          col.svs,
          col.data,
          col.meta,
          new Date(),
        ]);
      };
      const ledger = async (stream: string, events: NewEvent[]) => {
        await log.append(stream, events, { expectedVersion: "any" });
      };

      const specs: Spec[] = [
        ["raw INSERT, autocommit", 1, 1, CLIENTS, CLIENTS, SINGLES, (s, _e, i) => rawRows(pool, s, i, 1)],
        [
          "raw BEGIN; INSERT; COMMIT",
          3,
          1,
          CLIENTS,
          CLIENTS,
          SINGLES,
          (s, _e, i) =>
            inTransaction(async (c) => {
              await rawRows(c, s, i, 1);
            }),
        ],
        ["ledger append", 1, 1, CLIENTS, CLIENTS, SINGLES, ledger],
        [
          "ledger SQL via raw pg",
          7,
          1,
          CLIENTS,
          CLIENTS,
          SINGLES,
          replay({ dedupe: true, advisoryLock: true }),
        ],
        [
          "… without dedupe SELECT",
          6,
          1,
          CLIENTS,
          CLIENTS,
          SINGLES,
          replay({ dedupe: false, advisoryLock: true }),
        ],
        [
          "… and no advisory lock (unsafe)",
          6,
          1,
          CLIENTS,
          CLIENTS,
          SINGLES,
          replay({ dedupe: false, advisoryLock: false }),
        ],
        ["reserve + upsert⋈insert CTE", 4, 1, CLIENTS, CLIENTS, SINGLES, fourTrips],
        ["plpgsql append, autocommit", 1, 1, CLIENTS, CLIENTS, SINGLES, oneTrip],
        // 16 clients on 4 streams: the stream's row lock is held from SELECT … FOR UPDATE to COMMIT.
        ["ledger append", 1, 1, CLIENTS, 4, SINGLES, ledger],
        ["reserve + upsert⋈insert CTE", 4, 1, CLIENTS, 4, SINGLES, fourTrips],
        ["plpgsql append, autocommit", 1, 1, CLIENTS, 4, SINGLES, oneTrip],
        ...[4, 1].flatMap((clients): Spec[] => [
          [
            "raw INSERT, 100 rows",
            1,
            100,
            clients,
            clients,
            BATCHES,
            (s, e, i) => rawRows(pool, s, i, e.length),
          ],
          ["ledger append", 1, 100, clients, clients, BATCHES, ledger],
          [
            "ledger SQL via raw pg",
            7,
            100,
            clients,
            clients,
            BATCHES,
            replay({ dedupe: true, advisoryLock: true }),
          ],
          ["reserve + upsert⋈insert CTE", 4, 100, clients, clients, BATCHES, fourTrips],
        ]),
      ];
      // Rounds interleave the variants, and the median is reported, so that load from other
      // processes on the machine does not favour whichever variant ran at a quiet moment.
      const results = specs.map(() => ({
        runs: [] as { eps: number; p50: number; nodeUs: number; cpu: number }[],
        waits: new Map<string, number>(),
        statements: new Map<string, { n: number; ms: number }>(),
      }));
      for (let round = 0; round < ROUNDS; round++) {
        for (const [index, [label, , size, clients, streams, ops, append]] of specs.entries()) {
          const result = results[index]!;
          const stream = (client: number) =>
            `${label.replace(/\W+/g, "-")}-${size}-${streams}-${client % streams}`;
          const op = async (client: number, i: number) => {
            const at = round * 2 * ops + i;
            await append(
              stream(client),
              Array.from({ length: size }, (_, k) => event(at * size + k)),
              at,
            );
            return size;
          };
          await measure(clients, Math.max(clients, Math.round(ops / 20)), (c, i) => op(c, ops + i));
          await pool.query("CHECKPOINT");
          const stopWaits = await sampleWaits(url, result.waits);
          const cpu0 = machineCpu();
          const node0 = process.cpuUsage();
          timed = result.statements;
          const m = await measure(clients, ops, op);
          timed = undefined;
          const node = process.cpuUsage(node0);
          const cpu1 = machineCpu();
          await stopWaits();
          result.runs.push({
            eps: m.eventsPerSecond,
            p50: m.p50Ms,
            nodeUs: (node.user + node.system) / m.events,
            cpu: (100 * (cpu1.busy - cpu0.busy)) / (cpu1.total - cpu0.total),
          });
        }
      }

      const rows: BenchRow[] = [];
      const notes: string[] = [
        `median of ${ROUNDS} interleaved rounds; ${SINGLES} single appends / ${BATCHES} batches per variant and round.`,
      ];
      for (const [index, [label, trips, size, clients, streams, ops]] of specs.entries()) {
        const { runs, waits, statements } = results[index]!;
        const med = (f: (r: (typeof runs)[number]) => number) => median(runs.map(f));
        rows.push({
          variant: label,
          "round trips": trips,
          "events/append": size,
          clients,
          streams,
          "events/s": fmt(med((r) => r.eps)),
          "min–max": `${fmt(Math.min(...runs.map((r) => r.eps)))}–${fmt(Math.max(...runs.map((r) => r.eps)))}`,
          "p50 ms": fmt(med((r) => r.p50)),
          "node CPU µs/event": fmt(med((r) => r.nodeUs)),
          "machine CPU %": Math.round(med((r) => r.cpu)),
        });
        const total = [...waits.values()].reduce((a, b) => a + b, 0) || 1;
        const busy = [...waits.entries()]
          .sort((a, b) => b[1] - a[1])
          .slice(0, 4)
          .map(([w, n]) => `${w} ${Math.round((100 * n) / total)}%`)
          .join(", ");
        const perStatement = [...statements.entries()]
          .map(([kind, st]) => `${kind} ${fmt(st.n / (ops * ROUNDS))}× ${fmt(st.ms / st.n)} ms`)
          .join(", ");
        notes.push(
          `${label} (${size}/append, ${clients} clients, ${streams} streams): backends ${busy}` +
            (perStatement ? `; per append: ${perStatement}` : ""),
        );
      }
      return { name: "append-profile", machine, rows, notes };
    } finally {
      await database.close();
      await pool.end();
    }
  });
}
