import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import os from "node:os";
import pg from "pg";

/** One line of a benchmark's table; columns are the union of the rows' keys, in first-seen order. */
export type BenchRow = Record<string, string | number>;

/** What every `bench/<name>.ts` returns from `run()`. */
export interface BenchReport {
  name: string;
  machine: MachineFacts;
  rows: BenchRow[];
  notes?: string[];
}

export interface MachineFacts {
  cpu: string;
  cores: number;
  memoryGb: number;
  node: string;
  postgres: string;
  /** 1-minute load average when the benchmark started: others' load skews the figures. */
  loadAverage: number;
}

const DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432";

/** Multiplies every benchmark's work (BENCH_SCALE=0.1 for a quick look). */
export const SCALE = Number(process.env.BENCH_SCALE ?? "1");
export const scaled = (n: number): number => Math.max(1, Math.round(n * SCALE));

const cleanups = new Set<() => Promise<void>>();
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    // Without this an interrupted run leaves its bench_* database behind.
    Promise.allSettled([...cleanups].map((c) => c())).finally(() => process.exit(130));
  });
}

/**
 * Runs `fn` against a fresh database `bench_<random>` on the server named by BENCH_DATABASE_URL (or
 * the local default) and drops it WITH (FORCE) afterwards, also when `fn` throws.
 */
export async function withBenchDatabase<T>(fn: (url: string) => Promise<T>): Promise<T> {
  const base = new URL(process.env.BENCH_DATABASE_URL ?? DEFAULT_SERVER);
  const adminUrl = new URL(base);
  if (adminUrl.pathname.length <= 1) adminUrl.pathname = "/postgres";
  const name = `bench_${randomBytes(6).toString("hex")}`;
  const benchUrl = new URL(base);
  benchUrl.pathname = `/${name}`;

  const admin = new pg.Client({ connectionString: adminUrl.toString() });
  await admin.connect();
  let dropped: Promise<void> | undefined;
  const drop = () => {
    dropped ??= admin
      .query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      .then(() => admin.end())
      .catch((e: unknown) => console.error(`could not drop ${name}: ${(e as Error).message}`));
    return dropped;
  };
  try {
    await admin.query(`CREATE DATABASE ${name}`);
    cleanups.add(drop);
    return await fn(benchUrl.toString());
  } finally {
    await drop();
    cleanups.delete(drop);
  }
}

/** CPU, cores, memory, node and the server's `SELECT version()`. */
export async function machineFacts(url: string): Promise<MachineFacts> {
  let cpu = os.cpus()[0]?.model ?? "unknown";
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? cpu;
  } catch {}
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ version: string }>("SELECT version()");
    return {
      cpu,
      cores: os.availableParallelism(),
      memoryGb: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
      postgres: rows[0]?.version ?? "unknown",
      loadAverage: os.loadavg()[0] ?? 0,
    };
  } finally {
    await client.end();
  }
}

/** Samples this process's RSS every few milliseconds; `stop()` returns the peak in MB. */
export function sampleRss(everyMs = 10): { stop(): number } {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, everyMs);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      return Math.round(Math.max(peak, process.memoryUsage.rss()) / 2 ** 20);
    },
  };
}

export interface Measurement {
  ops: number;
  events: number;
  seconds: number;
  eventsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  peakRssMb: number;
  /** Every operation's latency, sorted. */
  latenciesMs: number[];
}

/**
 * `clients` concurrent loops share `ops` operations; each call of `op(client, i)` returns how many
 * events it wrote. Reports throughput, per-operation latency and peak RSS.
 */
export async function measure(
  clients: number,
  ops: number,
  op: (client: number, i: number) => Promise<number>,
): Promise<Measurement> {
  const latencies: number[] = [];
  let next = 0;
  let events = 0;
  const rss = sampleRss();
  const started = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, client) => {
      for (let i = next++; i < ops; i = next++) {
        const t = performance.now();
        // Not `events += await …`: that reads `events` before the await and loses concurrent updates.
        const written = await op(client, i);
        latencies.push(performance.now() - t);
        events += written;
      }
    }),
  );
  return summarise(ops, events, (performance.now() - started) / 1000, latencies, rss.stop());
}

/**
 * Several measurements of one phase as one, e.g. rounds interleaved with a reference phase so
 * that load from elsewhere on the machine hits both alike.
 */
export function combine(ms: Measurement[]): Measurement {
  const sum = (f: (m: Measurement) => number) => ms.reduce((a, m) => a + f(m), 0);
  return summarise(
    sum((m) => m.ops),
    sum((m) => m.events),
    sum((m) => m.seconds),
    ms.flatMap((m) => m.latenciesMs),
    Math.max(...ms.map((m) => m.peakRssMb)),
  );
}

function summarise(
  ops: number,
  events: number,
  seconds: number,
  latencies: number[],
  peakRssMb: number,
): Measurement {
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0;
  return {
    ops,
    events,
    seconds,
    eventsPerSecond: events / seconds,
    p50Ms: pct(0.5),
    p99Ms: pct(0.99),
    peakRssMb,
    latenciesMs: latencies,
  };
}

/** Rounds for display: 3 significant digits below 100, integers above. */
export const fmt = (n: number): number => (Math.abs(n) >= 100 ? Math.round(n) : Number(n.toPrecision(3)));
