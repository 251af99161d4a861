import { randomUUID } from "node:crypto";
import { getPostgreSQLEventStore } from "@event-driven-io/emmett-postgresql";
import { sql } from "kysely";
import pg from "pg";
import type { InlineProjection } from "../src/adapters/postgres/inline-projection.js";
import { createPgEventLog, migrateToLatest, type NewEvent, openDatabase } from "../src/index.js";
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

const SCHEMA = "shardledger";
const CLIENTS = 16;
const SINGLES = scaled(20_000);
const BATCHES = scaled(2_000);
const BATCH_SIZE = 100;
const ROUNDS = 5;
/** Issue 16 item 0: single appends ≥ 0.8× raw and ≥ 2× Emmett; batches ≥ 0.9× raw. */
const TARGETS = { singleVsRaw: 0.8, singleVsEmmett: 2, batchVsRaw: 0.9 };

const RAW_COLUMNS = "event_id, stream_id, stream_version, type, schema_version, data, metadata, recorded_at";
// The same columns and indexes as the ledger's events table, with none of its protocol.
export const RAW_TABLE = `CREATE TABLE raw_events (
  global_position bigserial PRIMARY KEY,
  transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
  event_id uuid NOT NULL UNIQUE,
  stream_id text NOT NULL,
  stream_version bigint NOT NULL,
  type text NOT NULL,
  schema_version integer NOT NULL,
  data jsonb NOT NULL,
  metadata jsonb NOT NULL,
  recorded_at timestamptz NOT NULL,
  UNIQUE (stream_id, stream_version)
)`;

const metadata = { correlationId: "job-2026-11-23-sales", causationId: null, actor: "spark-driver" };

/** Alternates a heartbeat and a realistic AttemptSucceeded, as a run's stream does. */
export function event(i: number): NewEvent {
  if (i % 2 === 0) return { type: "RunHeartbeat", data: { runId: "run-2026-11-23T10.00" }, metadata };
  return {
    type: "AttemptSucceeded",
    data: {
      runId: "run-2026-11-23T10.00",
      shard: i % 4096,
      attempt: 1,
      taskAttemptId: String(9_007_199_254_740_993n + BigInt(i)),
      url: `s3://lake-prod/datasets/sales/_attempts/run-2026-11-23T10.00/shard-${i % 4096}/attempt-1/`,
    },
    metadata,
  };
}

/** Rows exactly as the ledger stores them, for the raw INSERTs. */
export function rawValues(streamId: string, version: number, i: number): unknown[] {
  const e = event(i);
  return [
    randomUUID(),
    streamId,
    version,
    e.type,
    1,
    JSON.stringify(e.data),
    JSON.stringify(e.metadata),
    new Date(),
  ];
}

/** One raw INSERT of `rows` (a multi-row VALUES list when there are several). */
export function rawInsert(rows: unknown[][]): [text: string, values: unknown[]] {
  const values: unknown[] = [];
  const tuples = rows.map((row) => {
    const placeholders = row.map((_, j) => `$${values.length + j + 1}`);
    values.push(...row);
    return `(${placeholders.join(", ")})`;
  });
  return [`INSERT INTO raw_events (${RAW_COLUMNS}) VALUES ${tuples.join(", ")}`, values];
}

export async function run(): Promise<BenchReport> {
  return withBenchDatabase(async (url) => {
    const machine = await machineFacts(url);
    const database = await openDatabase(url, { schema: SCHEMA, poolSize: CLIENTS });
    const raw = new pg.Pool({ connectionString: url, max: CLIENTS });
    raw.on("error", () => {});
    const emmettPool = new pg.Pool({ connectionString: url, max: CLIENTS });
    emmettPool.on("error", () => {});
    // Emmett on a pool of the same size, its schema (public) migrated before the first round.
    const emmett = getPostgreSQLEventStore(url, { connectionOptions: { pool: emmettPool } });
    try {
      await migrateToLatest(database.db, SCHEMA);
      await raw.query(RAW_TABLE);
      await emmett.schema.migrate();
      const log = createPgEventLog({ db: database.db, schema: SCHEMA });
      // What an inline projection adds: the ledger's default log runs its projection in the
      // append's transaction (BEGIN + append_events + the projection's statements + COMMIT). One
      // upsert stands for the projection here, so the row shows the transaction's cost.
      await sql`CREATE TABLE ${sql.id(SCHEMA, "bench_counts")} (stream_id text PRIMARY KEY, n bigint NOT NULL)`.execute(
        database.db,
      );
      const counting: InlineProjection = {
        name: "bench_counts",
        apply: async (trx, events, schema) => {
          const table = sql.id(schema, "bench_counts");
          await sql`INSERT INTO ${table} AS c VALUES (${events[0]?.streamId}, ${events.length})
            ON CONFLICT (stream_id) DO UPDATE SET n = c.n + EXCLUDED.n`.execute(trx);
        },
      };
      const projected = createPgEventLog({ db: database.db, schema: SCHEMA, projections: [counting] });
      const versions = new Map<string, number>();
      const nextVersion = (stream: string, n: number) => {
        const v = versions.get(stream) ?? 0;
        versions.set(stream, v + n);
        return v + 1;
      };

      const rawRows = async (stream: string, i: number, n: number) => {
        const first = nextVersion(stream, n);
        await raw.query(
          ...rawInsert(Array.from({ length: n }, (_, k) => rawValues(stream, first + k, i * n + k))),
        );
        return n;
      };
      const events = (i: number, n: number) => Array.from({ length: n }, (_, k) => event(i * n + k));
      const ledger =
        (n: number, target = log) =>
        async (stream: string, i: number) => {
          await target.append(stream, events(i, n), { expectedVersion: "any" });
          return n;
        };
      // Idempotent appends: every event carries an id the caller chose, so the append looks the ids
      // up first (append_events) instead of the plain INSERT … SELECT.
      const ledgerWithIds = (n: number) => async (stream: string, i: number) => {
        const withIds = events(i, n).map((e) => ({ ...e, eventId: randomUUID() }));
        await log.append(stream, withIds, { expectedVersion: "any" });
        return n;
      };
      const emmettAppend = (n: number) => async (stream: string, i: number) => {
        // Emmett's own default: no expected version, like the ledger's "any".
        await emmett.appendToStream(
          stream,
          events(i, n).map((e) => ({
            type: e.type,
            data: e.data as Record<string, unknown>,
            metadata: e.metadata,
          })),
        );
        return n;
      };

      const rows: BenchRow[] = [];
      // One comparison's phases run in interleaved rounds (after one warm-up each), so that load
      // from elsewhere on the machine hits every contender alike.
      const compare = async (phases: Phase[]): Promise<Measurement[]> => {
        const stream = (p: Phase, client: number) =>
          `${p.label.replace(/\W+/g, "_")}-${p.streams}-${client % p.streams}`;
        for (const p of phases) {
          const warmUp = Math.max(p.clients, Math.round(p.ops / 20));
          await measure(p.clients, warmUp, (c, i) => p.op(stream(p, c), p.ops + i));
        }
        const runs = phases.map((): Measurement[] => []);
        const perRound = (p: Phase) => Math.max(1, Math.round(p.ops / ROUNDS));
        for (let round = 0; round < ROUNDS; round++) {
          for (const [k, p] of phases.entries()) {
            // No contender should pay for another's dirty pages.
            await raw.query("CHECKPOINT");
            const m = await measure(p.clients, perRound(p), (c, i) =>
              p.op(stream(p, c), round * perRound(p) + i),
            );
            runs[k]?.push(m);
          }
        }
        return phases.map((p, k) => {
          const all = runs[k] ?? [];
          const m = combine(all);
          const perRoundEps = all.map((r) => r.eventsPerSecond);
          rows.push({
            phase: p.label,
            "round trips": p.roundTrips,
            clients: p.clients,
            events: m.events,
            "events/s": fmt(m.eventsPerSecond),
            "min–max per round": `${fmt(Math.min(...perRoundEps))}–${fmt(Math.max(...perRoundEps))}`,
            "p50 ms": fmt(m.p50Ms),
            "p99 ms": fmt(m.p99Ms),
          });
          return m;
        });
      };
      const ratio = (a: Measurement, b: Measurement) => a.eventsPerSecond / b.eventsPerSecond;
      const judge = (row: BenchRow, cells: Record<string, string | number>) => Object.assign(row, cells);

      const singles = rows.length;
      const [rawSingle, emmettSingle, ledgerSingle, projectedSingle, idsSingle] = await compare([
        {
          label: "raw INSERT, 1 row",
          roundTrips: "1",
          clients: CLIENTS,
          streams: CLIENTS,
          ops: SINGLES,
          op: (s, i) => rawRows(s, i, 1),
        },
        {
          label: "Emmett 0.42 append, 1 event",
          roundTrips: "3",
          clients: CLIENTS,
          streams: CLIENTS,
          ops: SINGLES,
          op: emmettAppend(1),
        },
        {
          label: "ledger append, 1 event",
          roundTrips: "1",
          clients: CLIENTS,
          streams: CLIENTS,
          ops: SINGLES,
          op: ledger(1),
        },
        {
          label: "ledger append + 1-statement inline projection",
          roundTrips: "4",
          clients: CLIENTS,
          streams: CLIENTS,
          ops: SINGLES,
          op: ledger(1, projected),
        },
        {
          label: "ledger append, 1 event with a caller-chosen id",
          roundTrips: "1",
          clients: CLIENTS,
          streams: CLIENTS,
          ops: SINGLES,
          op: ledgerWithIds(1),
        },
      ]);
      for (const [k, m] of [
        [2, ledgerSingle],
        [3, projectedSingle],
        [4, idsSingle],
      ] as const) {
        const vsRaw = ratio(m!, rawSingle!);
        const vsEmmett = ratio(m!, emmettSingle!);
        judge(rows[singles + k] as BenchRow, {
          "×raw": fmt(vsRaw),
          "×Emmett": fmt(vsEmmett),
          target:
            k === 2
              ? `≥ ${TARGETS.singleVsRaw}× raw ${pass(vsRaw >= TARGETS.singleVsRaw)}, ≥ ${TARGETS.singleVsEmmett}× Emmett ${pass(vsEmmett >= TARGETS.singleVsEmmett)}`
              : "(no target)",
        });
      }
      judge(rows[singles + 1] as BenchRow, { "×raw": fmt(ratio(emmettSingle!, rawSingle!)) });

      const batches = rows.length;
      const [rawBatch, emmettBatch, ledgerBatch] = await compare([
        {
          label: `raw INSERT, ${BATCH_SIZE} rows`,
          roundTrips: "1",
          clients: CLIENTS,
          streams: CLIENTS,
          ops: BATCHES,
          op: (s, i) => rawRows(s, i, BATCH_SIZE),
        },
        {
          label: `Emmett 0.42 append, ${BATCH_SIZE} events`,
          roundTrips: "3",
          clients: CLIENTS,
          streams: CLIENTS,
          ops: BATCHES,
          op: emmettAppend(BATCH_SIZE),
        },
        {
          label: `ledger append, ${BATCH_SIZE} events`,
          roundTrips: "1",
          clients: CLIENTS,
          streams: CLIENTS,
          ops: BATCHES,
          op: ledger(BATCH_SIZE),
        },
      ]);
      judge(rows[batches + 1] as BenchRow, { "×raw": fmt(ratio(emmettBatch!, rawBatch!)) });
      const batchVsRaw = ratio(ledgerBatch!, rawBatch!);
      judge(rows[batches + 2] as BenchRow, {
        "×raw": fmt(batchVsRaw),
        "×Emmett": fmt(ratio(ledgerBatch!, emmettBatch!)),
        target: `≥ ${TARGETS.batchVsRaw}× raw ${pass(batchVsRaw >= TARGETS.batchVsRaw)}`,
      });
      return {
        name: "append",
        machine,
        rows,
        notes: [
          `${SINGLES} single appends / ${BATCHES} batches of ${BATCH_SIZE} per contender, after a 5% warm-up, ` +
            `in ${ROUNDS} rounds interleaved between the contenders; ${CLIENTS} clients, each on its own stream, "any" expected version. ` +
            "raw = pg autocommit INSERT into a plain table with the events table's columns and indexes; " +
            "Emmett = @event-driven-io/emmett-postgresql 0.42.0 appendToStream on its own pool of the same size.",
        ],
      };
    } finally {
      await emmett.close();
      await raw.end();
      await emmettPool.end().catch(() => {});
      await database.close();
    }
  });
}

const pass = (ok: boolean) => (ok ? "pass" : "MISS");

interface Phase {
  label: string;
  roundTrips: string;
  clients: number;
  streams: number;
  ops: number;
  op: (stream: string, i: number) => Promise<number>;
}
