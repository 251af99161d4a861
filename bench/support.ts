import { fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, realpathSync } from "node:fs";
import os from "node:os";
import { fileURLToPath, pathToFileURL } from "node:url";
import pg from "pg";
import type { PostgresPoolLike } from "../src/adapters/postgres/database.js";

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

// ---------------------------------------------------------------------------------------------
// Running, reporting and probing benchmarks (shared by every bench/<name>.ts).

/** True when `moduleUrl` is the script node was started with (`node --import tsx bench/x.ts`). */
export function isMain(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return pathToFileURL(realpathSync(script)).href === moduleUrl;
  } catch {
    return false;
  }
}

/** Prints a report as Markdown (bench/run.ts and a benchmark run on its own both use it). */
export function printReport(report: BenchReport): void {
  const m = report.machine;
  console.log(`\n## ${report.name}\n`);
  console.log(`${m.cpu}, ${m.cores} cores, ${m.memoryGb} GB, node ${m.node}, ${m.postgres}`);
  console.log(`load average ${m.loadAverage.toFixed(2)} at start\n`);
  console.log(markdownTable(report.rows));
  for (const note of report.notes ?? []) console.log(`\n${note}`);
}

/** A Markdown table, so the output can be pasted into RESULTS.md as is. */
function markdownTable(rows: BenchRow[]): string {
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cells = rows.map((r) => columns.map((c) => String(r[c] ?? "")));
  const widths = columns.map((c, i) => Math.max(3, c.length, ...cells.map((row) => row[i]?.length ?? 0)));
  const numeric = columns.map((c) => rows.every((r) => r[c] === undefined || typeof r[c] === "number"));
  const line = (values: string[]) =>
    `| ${values.map((v, i) => (numeric[i] ? v.padStart(widths[i] ?? 0) : v.padEnd(widths[i] ?? 0))).join(" | ")} |`;
  const rule = `| ${widths.map((w, i) => (numeric[i] ? `${"-".repeat(w - 1)}:` : "-".repeat(w))).join(" | ")} |`;
  return [line(columns), rule, ...cells.map(line)].join("\n");
}

/** The 1-, 5- and 15-minute load averages, as text. */
export const loadNow = (): string =>
  os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");

/** A small deterministic PRNG (mulberry32): the same seed gives the same workload. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Round-trip time of every query a pool runs, grouped by what the query does. */
export interface QueryStats {
  readonly byKind: Map<string, { calls: number; ms: number; rows: number }>;
  reset(): void;
  totalMs(): number;
}

/** What the ledger's SQL is for, from its text (schema-qualified names as kysely writes them). */
export function classifyQuery(text: string): string {
  const s = text.trimStart();
  if (/^(begin|commit|rollback|start transaction)/i.test(s)) return "transaction control";
  if (s.includes("reserve_positions")) return "reserve positions";
  if (/^SELECT event_id, global_position FROM/.test(s)) return "append: duplicate check";
  if (/^INSERT INTO "\w+"\."events"/.test(s)) return "append: insert events";
  if (/"streams"/.test(s)) return "append: stream row";
  if (/FROM "\w+"\."events"\s+WHERE stream_id/.test(s)) return "read stream";
  if (/FROM "\w+"\."events"\s+WHERE global_position/.test(s)) return "read page of log";
  const load = /^SELECT \* FROM "\w+"\."(\w+)"/.exec(s);
  if (load) return `projection load ${load[1]}`;
  const upsert = /^INSERT INTO "\w+"\."(\w+)"/.exec(s);
  if (upsert) return `projection upsert ${upsert[1]}`;
  const del = /^DELETE FROM "\w+"\."(\w+)"/.exec(s);
  if (del) return `projection delete ${del[1]}`;
  if (/FULL OUTER JOIN/.test(s)) return "audit compare";
  if (/advisory/.test(s)) return "advisory lock";
  return s.slice(0, 48).replace(/\s+/g, " ");
}

/**
 * A pg pool the ledger borrows (openLedger accepts a pool), whose clients time every query from
 * send to parsed result: server time + network + pg's row parsing (JSON.parse of jsonb included).
 */
export function timedPool(
  url: string,
  max: number,
): { pool: PostgresPoolLike; stats: QueryStats; end(): Promise<void> } {
  const inner = new pg.Pool({ connectionString: url, max });
  inner.on("error", () => {});
  const byKind = new Map<string, { calls: number; ms: number; rows: number }>();
  const patched = new WeakSet<object>();
  const record = (text: string, ms: number, rows: number) => {
    const kind = classifyQuery(text);
    const s = byKind.get(kind) ?? { calls: 0, ms: 0, rows: 0 };
    s.calls++;
    s.ms += ms;
    s.rows += rows;
    byKind.set(kind, s);
  };
  const pool: PostgresPoolLike = {
    connect: async () => {
      const client = await inner.connect();
      if (!patched.has(client)) {
        patched.add(client);
        type Query = (text: unknown, values?: unknown) => unknown;
        const c = client as unknown as { query: Query };
        const original = c.query.bind(client) as Query;
        c.query = (text: unknown, values?: unknown) => {
          const result = original(text, values);
          if (typeof text !== "string" || !(result instanceof Promise)) return result;
          const started = performance.now();
          return result.then((r: { rowCount?: number | null }) => {
            record(text, performance.now() - started, r?.rowCount ?? 0);
            return r;
          });
        };
      }
      return client as unknown as Awaited<ReturnType<PostgresPoolLike["connect"]>>;
    },
    end: async () => {},
  };
  return {
    pool,
    stats: {
      byKind,
      reset: () => byKind.clear(),
      totalMs: () => [...byKind.values()].reduce((a, s) => a + s.ms, 0),
    },
    end: () => inner.end(),
  };
}

/**
 * Milliseconds the server spent executing statements in the database of `url`, over all its
 * sessions (pg_stat_database.active_time, PostgreSQL 14+). Sessions report it when they go idle or
 * disconnect: read it after closing the pools whose work it should include.
 */
export async function serverActiveMs(url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ ms: number | null }>(
      "SELECT active_time AS ms FROM pg_stat_database WHERE datname = current_database()",
    );
    return Number(rows[0]?.ms ?? 0);
  } finally {
    await client.end();
  }
}

/** Wraps methods of the ledger's classes to time them; `restore()` puts the originals back. */
export class Probes {
  readonly ms = new Map<string, { calls: number; ms: number; items: number }>();
  readonly #restore: (() => void)[] = [];

  add(label: string, ms: number, items = 0): void {
    const s = this.ms.get(label) ?? { calls: 0, ms: 0, items: 0 };
    s.calls++;
    s.ms += ms;
    s.items += items;
    this.ms.set(label, s);
  }

  get(label: string): number {
    return this.ms.get(label)?.ms ?? 0;
  }

  /** Replaces `target[name]` (an async or sync method) by a timed one. */
  wrap<T extends object>(
    target: T,
    name: keyof T & string,
    label: (args: unknown[]) => string,
    items: (args: unknown[]) => number = () => 0,
  ): void {
    const holder = target as Record<string, unknown>;
    const original = holder[name] as (...args: unknown[]) => unknown;
    const probes = this;
    holder[name] = function (this: unknown, ...args: unknown[]) {
      const started = performance.now();
      const done = () => probes.add(label(args), performance.now() - started, items(args));
      const result = original.apply(this, args);
      if (result instanceof Promise) return result.finally(done);
      done();
      return result;
    };
    this.#restore.push(() => {
      holder[name] = original;
    });
  }

  restore(): void {
    for (const r of this.#restore.reverse()) r();
    this.#restore.length = 0;
  }
}

const JOB_ENV = "SHARDLEDGER_BENCH_JOB";

/**
 * Runs a job of a benchmark file in a child process of its own (the file, with the parent's node
 * flags plus `extraFlags`), so that its RSS is the job's alone, not the seeding's garbage. The
 * child finds the job with {@link benchJob} and answers with {@link finishJob}.
 */
export function runInChild<T>(
  moduleUrl: string,
  job: { bench: string; [key: string]: unknown },
  extraFlags: string[] = [],
): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(moduleUrl), [], {
      execArgv: [...process.execArgv, ...extraFlags],
      env: { ...process.env, [JOB_ENV]: JSON.stringify(job) },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    let answered = false;
    let result: T | undefined;
    child.once("message", (m) => {
      answered = true;
      result = m as T;
    });
    child.once("error", reject);
    child.once("exit", (code) =>
      answered
        ? resolve(result as T)
        : reject(new Error(`${job.bench} child exited with ${code} and no result`)),
    );
  });
}

/** The job this process was started for by {@link runInChild}, when it is such a child of `bench`. */
export function benchJob<T extends { bench: string }>(bench: string): T | undefined {
  const raw = process.env[JOB_ENV];
  if (raw === undefined || !process.send) return undefined;
  const job = JSON.parse(raw) as T;
  return job.bench === bench ? job : undefined;
}

/** Sends a child's result to its parent and exits. */
export function finishJob(result: unknown): void {
  process.send?.(result, () => process.exit(0));
}
