import { randomUUID } from "node:crypto";
import pg from "pg";
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
const SINGLE_TARGET = 2_000;
const BATCH_RATIO_TARGET = 0.5;
const ROUNDS = 4;

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
    try {
      await migrateToLatest(database.db, SCHEMA);
      await raw.query(RAW_TABLE);
      const log = createPgEventLog({ db: database.db, schema: SCHEMA });
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
      const rawSingle = (stream: string, i: number) => rawRows(stream, i, 1);
      const rawBatch = (stream: string, i: number) => rawRows(stream, i, BATCH_SIZE);
      const ledgerSingle = async (stream: string, i: number) => {
        await log.append(stream, [event(i)], { expectedVersion: "any" });
        return 1;
      };
      const ledgerBatch = async (stream: string, i: number) => {
        const events = Array.from({ length: BATCH_SIZE }, (_, k) => event(i * BATCH_SIZE + k));
        await log.append(stream, events, { expectedVersion: "any" });
        return BATCH_SIZE;
      };

      const rows: BenchRow[] = [];
      // One comparison's phases run in interleaved rounds (after one warm-up each), so that load
      // from elsewhere on the machine hits the ledger and its raw reference alike.
      const compare = async (phases: Phase[]): Promise<Measurement[]> => {
        const stream = (p: Phase, client: number) =>
          `${p.label.replace(/\W+/g, "-")}-${p.streams}-${client % p.streams}`;
        for (const p of phases) {
          const warmUp = Math.max(p.clients, Math.round(p.ops / 20));
          await measure(p.clients, warmUp, (c, i) => p.op(stream(p, c), p.ops + i));
        }
        const runs = phases.map((): Measurement[] => []);
        const perRound = (p: Phase) => Math.max(1, Math.round(p.ops / ROUNDS));
        for (let round = 0; round < ROUNDS; round++) {
          for (const [k, p] of phases.entries()) {
            // Neither side should pay for the other's dirty pages.
            await raw.query("CHECKPOINT");
            const m = await measure(p.clients, perRound(p), (c, i) =>
              p.op(stream(p, c), round * perRound(p) + i),
            );
            runs[k]?.push(m);
          }
        }
        return phases.map((p, k) => {
          const m = combine(runs[k] ?? []);
          rows.push({
            phase: p.label,
            clients: p.clients,
            streams: p.streams,
            events: m.events,
            seconds: fmt(m.seconds),
            "events/s": fmt(m.eventsPerSecond),
            "p50 ms": fmt(m.p50Ms),
            "p99 ms": fmt(m.p99Ms),
            "peak RSS MB": m.peakRssMb,
          });
          return m;
        });
      };
      const judge = (row: number, m: Measurement, reference: Measurement, target: string) => {
        const r = rows[row] as BenchRow;
        r["ledger/raw"] = fmt(m.eventsPerSecond / reference.eventsPerSecond);
        r.target = target;
      };
      const singleTarget = (m: Measurement) =>
        `≥ ${SINGLE_TARGET}/s ${pass(m.eventsPerSecond >= SINGLE_TARGET)}`;

      const [rawSingles, own, shared] = await compare([
        { label: "raw INSERT, 1 row", clients: CLIENTS, streams: CLIENTS, ops: SINGLES, op: rawSingle },
        {
          label: "ledger append, 1 event",
          clients: CLIENTS,
          streams: CLIENTS,
          ops: SINGLES,
          op: ledgerSingle,
        },
        { label: "ledger append, 1 event", clients: CLIENTS, streams: 4, ops: SINGLES, op: ledgerSingle },
      ]);
      judge(1, own!, rawSingles!, singleTarget(own!));
      judge(2, shared!, rawSingles!, singleTarget(shared!));
      for (const clients of [4, 1]) {
        const [rawMulti, batch] = await compare([
          { label: `raw INSERT, ${BATCH_SIZE} rows`, clients, streams: clients, ops: BATCHES, op: rawBatch },
          {
            label: `ledger append, ${BATCH_SIZE} events`,
            clients,
            streams: clients,
            ops: BATCHES,
            op: ledgerBatch,
          },
        ]);
        const ratio = batch!.eventsPerSecond / rawMulti!.eventsPerSecond;
        judge(
          rows.length - 1,
          batch!,
          rawMulti!,
          `≥ ${BATCH_RATIO_TARGET}× raw ${pass(ratio >= BATCH_RATIO_TARGET)}`,
        );
      }
      return {
        name: "append",
        machine,
        rows,
        notes: [
          `${SINGLES} single appends / ${BATCHES} batches of ${BATCH_SIZE} per phase, after a 5% warm-up, ` +
            `in ${ROUNDS} rounds interleaved with the raw reference; ` +
            "raw = pg autocommit INSERT into a plain table with the events table's columns and indexes.",
        ],
      };
    } finally {
      await raw.end();
      await database.close();
    }
  });
}

const pass = (ok: boolean) => (ok ? "pass" : "MISS");

interface Phase {
  label: string;
  clients: number;
  streams: number;
  ops: number;
  op: (stream: string, i: number) => Promise<number>;
}
