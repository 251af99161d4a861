/**
 * Attempt reports of ONE run, side by side (issue 14 item 6): 100,000 AttemptSucceeded reports for
 * a run of 100,000 shards, per contender, each on a fresh run of its own.
 *
 * Contenders are a list (`CONTENDERS`): the raw batched INSERT of bench/append.ts (the physical
 * reference), `reportAttempts` in batches of 1,000 from 8 callers, 64 concurrent single calls
 * (group commit; target ≥ 2,000/s), sequential single calls, and one CLI process per report (needs
 * `npm run build`), and two through `shardledger serve` (the HTTP batch endpoint from 8 clients,
 * 64 concurrent single HTTP reports): the server is the built CLI in a process of its own on the
 * same database, as it is deployed, and the bench's fetch clients talk to it over loopback.
 * Each contender is a name, how many clients, and `send(ctx, first, count)` that reports attempts
 * first…first+count-1 of the run it is given and resolves once they are stored. A contender with
 * `sample` sends only that many reports and the time for all of them is extrapolated.
 *
 *   npm run bench -- report-throughput          (PostgreSQL: BENCH_DATABASE_URL or the local server)
 *   BENCH_REPORTS_BACKEND=pglite npm run bench -- report-throughput
 *   BENCH_SCALE=0.1 …                           (10,000 reports per contender)
 *   REPORT_CONTENDERS="raw;HTTP: POST"          (only the contenders whose names start so; for A/B runs)
 *   BENCH_SERVE_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof"   (options for serve's node)
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import os, { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { PGlite } from "@electric-sql/pglite";
import pg from "pg";
import { type AttemptReport, type Ledger, openLedger } from "../src/index.js";
import { RAW_TABLE, rawInsert } from "./append.js";
import {
  type BenchReport,
  type BenchRow,
  fmt,
  isMain,
  loadNow,
  type MachineFacts,
  type Measurement,
  machineFacts,
  measure,
  printReport,
  scaled,
  withBenchDatabase,
} from "./support.js";

const execFileAsync = promisify(execFile);
const CLI = join(dirname(fileURLToPath(import.meta.url)), "..", "dist", "bin", "shardledger.js");
const REPORTS = scaled(100_000);
const BATCH = 1_000;
/** Issue 14: 64 concurrent single reports of one run ≥ 2,000/s (was ~200/s). */
const TARGET_CONCURRENT_SINGLES = 2_000;
/** REPORT_CONTENDERS: name prefixes separated by ";"; only those contenders run. */
const ONLY = process.env.REPORT_CONTENDERS?.split(";")
  .map((p) => p.trim())
  .filter((p) => p.length > 0);

/** What a contender is given: a fresh run of REPORTS shards, and the i-th report of it. */
export interface ContenderContext {
  /** The ledger on the bench database (one instance, as one writer process has). */
  ledger: Ledger;
  runId: string;
  /** The i-th report: shard i, attempt 0, succeeded, with its url. */
  report(i: number): AttemptReport & { kind: "succeeded" };
  /** The database (a `postgres://` url, or the PGlite instance) for contenders outside the ledger. */
  database: string | PGlite;
  /** The base url of `shardledger serve` on the same database, for contenders with `http`. */
  server?: string;
}

/**
 * One contender: `clients` loops share the reports; each call of `send` reports what its `first`
 * and `count` say (count > 1 for batches) and resolves once they are stored.
 */
export interface Contender {
  name: string;
  clients: number;
  /** Reports per call of `send` (1 for single calls). */
  perCall: number;
  /** Send only this many reports and extrapolate to all (for contenders too slow to wait for). */
  sample?: number;
  /** A slow baseline the other contenders are given a ratio against (sequential calls, the CLI). */
  baseline?: boolean;
  /** Not a report through the ledger: the raw reference (shown as ×1). */
  reference?: boolean;
  /** A reports/s target for this contender. */
  target?: number;
  /** Reports through `shardledger serve` (the bench starts one for them). */
  http?: boolean;
  /** Why it cannot run here (it is listed as skipped), or undefined when it can. */
  skip?: (database: string | PGlite) => string | undefined;
  send(ctx: ContenderContext, first: number, count: number): Promise<void>;
}

const single: (name: string, clients: number, extra?: Partial<Contender>) => Contender = (
  name,
  clients,
  extra = {},
) => ({
  name,
  clients,
  perCall: 1,
  ...extra,
  async send(ctx, first) {
    const { kind: _, ...input } = ctx.report(first);
    await ctx.ledger.attemptSucceeded(input);
  },
});

/** The contenders, in the order they run; add HTTP ones here (see the file's comment). */
export const CONTENDERS: Contender[] = [
  {
    name: `raw batched INSERT, ${BATCH} rows (physical reference)`,
    clients: 8,
    perCall: BATCH,
    reference: true,
    async send(ctx, first, count) {
      await rawAppend(ctx, first, count);
    },
  },
  {
    name: `reportAttempts, batches of ${BATCH}`,
    clients: 8,
    perCall: BATCH,
    async send(ctx, first, count) {
      const results = await ctx.ledger.reportAttempts(
        Array.from({ length: count }, (_, k) => ctx.report(first + k)),
      );
      const failed = results.find((r) => !r.ok);
      if (failed && !failed.ok) throw new Error(`report ${failed.index}: ${failed.error.message}`);
    },
  },
  {
    name: `HTTP: POST /v1/runs/{runId}/attempts/batch, ${BATCH} per request, 8 clients`,
    clients: 8,
    perCall: BATCH,
    http: true,
    skip: needsBuiltServer,
    async send(ctx, first, count) {
      const reports = Array.from({ length: count }, (_, k) => {
        const { runId: _r, ...report } = ctx.report(first + k);
        return report;
      });
      const { results } = (await post(ctx, `/v1/runs/${ctx.runId}/attempts/batch`, { reports })) as {
        results: { ok: boolean; index: number; error?: { message: string } }[];
      };
      const failed = results.find((r) => !r.ok);
      if (failed) throw new Error(`report ${failed.index}: ${failed.error?.message}`);
    },
  },
  {
    name: "HTTP: POST /v1/runs/{runId}/attempts/succeeded, 64 concurrent clients",
    clients: 64,
    perCall: 1,
    http: true,
    target: TARGET_CONCURRENT_SINGLES,
    skip: needsBuiltServer,
    async send(ctx, first) {
      const { kind: _k, runId: _r, ...report } = ctx.report(first);
      await post(ctx, `/v1/runs/${ctx.runId}/attempts/succeeded`, report);
    },
  },
  {
    name: "HTTP: the same single reports from Node's fetch, 64 concurrent clients",
    clients: 64,
    perCall: 1,
    http: true,
    sample: scaled(10_000),
    skip: needsBuiltServer,
    async send(ctx, first) {
      const { kind: _k, runId: _r, ...report } = ctx.report(first);
      await postWithFetch(ctx, `/v1/runs/${ctx.runId}/attempts/succeeded`, report);
    },
  },
  single("attemptSucceeded, 64 concurrent callers (group commit)", 64, {
    target: TARGET_CONCURRENT_SINGLES,
  }),
  single("attemptSucceeded, sequential", 1, { sample: scaled(3_000), baseline: true }),
  {
    name: "CLI: one `shardledger attempt succeed` process per report",
    clients: 1,
    perCall: 1,
    sample: Math.max(5, scaled(20)),
    baseline: true,
    skip: (database) =>
      typeof database !== "string"
        ? "PGlite on disk is held by this process; the CLI cannot open it beside it"
        : existsSync(CLI)
          ? undefined
          : `${CLI} is missing: run \`npm run build\` first`,
    async send(ctx, first) {
      const { kind: _, runId, shard, attempt, url } = ctx.report(first);
      await execFileAsync(process.execPath, [
        CLI,
        "--database",
        ctx.database as string,
        "attempt",
        "succeed",
        runId,
        "--shard",
        String(shard),
        "--attempt",
        String(attempt),
        "--url",
        url as string,
        "--json",
      ]);
    },
  },
];

function needsBuiltServer(database: string | PGlite): string | undefined {
  if (typeof database !== "string")
    return "PGlite on disk is held by this process; a server process cannot open it beside it";
  return existsSync(CLI) ? undefined : `${CLI} is missing: run \`npm run build\` first`;
}

/**
 * The load generator's HTTP client: `node:http` with a keep-alive agent (64 sockets), as a JVM or
 * Python driver's pooled client talks to `serve`. Not Node's `fetch`: on Node 20 its WHATWG
 * streams cost the bench process 0.86-1.57 ms of CPU per request on the 2026-12-01 host against
 * 0.17-0.39 ms for `node:http` (a trivial server: fetch capped at 0.8-1.4k requests/s), CPU the
 * server under test then did not get. The fetch contender below shows what such a client gets.
 */
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

async function post(ctx: ContenderContext, path: string, body: unknown): Promise<unknown> {
  const text = JSON.stringify(body);
  const target = new URL(path, ctx.server);
  const { status, answer } = await new Promise<{ status: number; answer: string }>((resolve, reject) => {
    const request = http.request(
      {
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(text) },
      },
      (response) => {
        let data = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => {
          data += chunk;
        });
        response.on("end", () => resolve({ status: response.statusCode ?? 0, answer: data }));
        response.on("error", reject);
      },
    );
    request.on("error", reject);
    request.end(text);
  });
  const parsed: unknown = JSON.parse(answer);
  if (status < 200 || status >= 300) throw new Error(`${path}: HTTP ${status} ${answer}`);
  return parsed;
}

async function postWithFetch(ctx: ContenderContext, path: string, body: unknown): Promise<unknown> {
  const response = await fetch(`${ctx.server}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status} ${JSON.stringify(answer)}`);
  return answer;
}

/** `shardledger serve` on the bench database, in a process of its own (no tokens: loopback). */
async function startServe(database: string): Promise<{ url: string; child: ChildProcess }> {
  // BENCH_SERVE_NODE_ARGS: extra options for serve's node (e.g. "--cpu-prof --cpu-prof-dir=/tmp/p").
  const nodeArgs = (process.env.BENCH_SERVE_NODE_ARGS ?? "").split(" ").filter((a) => a !== "");
  const args = [...nodeArgs, CLI, "--database", database, "serve", "--listen", "127.0.0.1:0"];
  const child = spawn(process.execPath, args, {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let buffered = "";
    child.once("exit", (code) => reject(new Error(`serve exited with ${code} before listening`)));
    child.stdout?.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      const line = buffered.split("\n")[0];
      if (buffered.includes("\n") && line) {
        const first = JSON.parse(line) as { msg?: string; url?: string };
        if (first.msg === "listening" && first.url) resolve(first.url);
        else reject(new Error(`serve's first line is not "listening": ${line}`));
      }
    });
  });
  child.stdout?.resume(); // one log line per request follows: drain it
  child.stdout?.removeAllListeners("data");
  child.stdout?.on("data", () => {});
  return { url, child };
}

// The raw reference writes the same events (AttemptSucceeded of the same shape) into a plain table
// with the events table's columns and indexes, as bench/append.ts does; one stream, versions
// handed out here.
let rawVersion = 0;
let rawPool: pg.Pool | undefined;
async function rawAppend(ctx: ContenderContext, first: number, count: number): Promise<void> {
  const version = rawVersion;
  rawVersion += count;
  const rows = Array.from({ length: count }, (_, k) => {
    const r = ctx.report(first + k);
    return [
      randomUUID(),
      `raw-${ctx.runId}`,
      version + k + 1,
      "AttemptSucceeded",
      1,
      JSON.stringify({ runId: r.runId, shard: r.shard, attempt: r.attempt, taskAttemptId: null, url: r.url }),
      JSON.stringify({ actor: "bench" }),
      new Date(),
    ];
  });
  const [text, values] = rawInsert(rows);
  if (typeof ctx.database === "string") {
    if (!rawPool) {
      rawPool = new pg.Pool({ connectionString: ctx.database, max: 8 });
      // An idle client's session ended by the server is the pool's to drop, not a crash.
      rawPool.on("error", (e) => console.error(`raw reference pool: ${e.message}`));
    }
    await rawPool.query(text, values);
  } else {
    await ctx.database.query(text, values);
  }
}

export async function run(): Promise<BenchReport> {
  if (process.env.BENCH_REPORTS_BACKEND === "pglite") return runOnPglite();
  return withBenchDatabase(async (url) => {
    const machine = await machineFacts(url);
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await admin.query(RAW_TABLE);
    await admin.end();
    try {
      return await compare(url, machine, "PostgreSQL");
    } finally {
      await rawPool?.end();
      rawPool = undefined;
    }
  });
}

async function runOnPglite(): Promise<BenchReport> {
  const dir = mkdtempSync(join(tmpdir(), "shardledger-bench-"));
  const pglite = new PGlite(join(dir, "db"));
  try {
    await pglite.exec(RAW_TABLE);
    const { rows } = await pglite.query<{ version: string }>("SELECT version()");
    const machine: MachineFacts = {
      cpu: os.cpus()[0]?.model ?? "unknown",
      cores: os.availableParallelism(),
      memoryGb: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
      postgres: `PGlite (${rows[0]?.version ?? "?"}), on disk`,
      loadAverage: os.loadavg()[0] ?? 0,
    };
    return await compare(pglite, machine, "PGlite");
  } finally {
    await pglite.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function compare(
  database: string | PGlite,
  machine: MachineFacts,
  backend: string,
): Promise<BenchReport> {
  const dataDir = mkdtempSync(join(tmpdir(), "shardledger-bench-root-"));
  const root = `file://${dataDir}`;
  const ledger = await openLedger({ database, cleanupAfterPublish: false, poolSize: 16, actor: "bench" });
  const rows: BenchRow[] = [];
  const notes: string[] = [];
  let serve: { url: string; child: ChildProcess } | undefined;
  try {
    await ledger.createDataset({ datasetId: "bench", root });
    const results: { contender: Contender; m: Measurement; sent: number }[] = [];
    serve =
      typeof database === "string" &&
      CONTENDERS.some(
        (c) =>
          c.http && c.skip?.(database) === undefined && (!ONLY || ONLY.some((p) => c.name.startsWith(p))),
      )
        ? await startServe(database)
        : undefined;
    for (const [k, contender] of CONTENDERS.entries()) {
      if (ONLY && !ONLY.some((prefix) => contender.name.startsWith(prefix))) continue;
      const skipped = contender.skip?.(database);
      if (skipped !== undefined) {
        notes.push(`${contender.name}: skipped (${skipped}).`);
        continue;
      }
      const runId = `bench-${k}`;
      await ledger.startRun({ datasetId: "bench", numShards: REPORTS, runId });
      const ctx: ContenderContext = {
        ledger,
        runId,
        database,
        ...(serve ? { server: serve.url } : {}),
        report: (i) => ({
          kind: "succeeded",
          runId,
          shard: i,
          attempt: 0,
          url: `${root}/data/${runId}/shard=${String(i).padStart(6, "0")}/attempt=00`,
        }),
      };
      const sent = Math.min(REPORTS, contender.sample ?? REPORTS);
      const calls = Math.ceil(sent / contender.perCall);
      const load = loadNow();
      const m = await measure(contender.clients, calls, async (_, call) => {
        const first = call * contender.perCall;
        const count = Math.min(contender.perCall, sent - first);
        await contender.send(ctx, first, count);
        return count;
      });
      if (!contender.reference) {
        // Every report stored, once: the run shows exactly the attempts sent.
        const stored = (await ledger.run(runId)).attempts.length;
        if (stored !== sent) throw new Error(`${contender.name}: ${stored} attempts stored, ${sent} sent`);
      }
      results.push({ contender, m, sent });
      notes.push(`${contender.name}: load average ${load} before, ${loadNow()} after.`);
    }
    const reference = results.find((r) => r.contender.reference);
    for (const { contender, m, sent } of results) {
      const row: BenchRow = {
        contender: contender.name,
        clients: contender.clients,
        "reports sent": sent,
        "reports/s": fmt(m.eventsPerSecond),
        [`s for ${REPORTS}`]: fmt(REPORTS / m.eventsPerSecond) + (sent < REPORTS ? " (extrapolated)" : ""),
        "p50 ms/call": fmt(m.p50Ms),
        "p99 ms/call": fmt(m.p99Ms),
      };
      if (reference && !contender.reference)
        row["×raw"] = fmt(m.eventsPerSecond / reference.m.eventsPerSecond);
      if (contender.target !== undefined) {
        row.target = `≥ ${contender.target}/s ${m.eventsPerSecond >= contender.target ? "pass" : "MISS"}`;
      }
      rows.push(row);
    }
    // Ratios against the slow baselines: sequential single calls, and a CLI process per report.
    for (const base of CONTENDERS.filter((c) => c.baseline)) {
      const against = results.find((r) => r.contender === base);
      if (!against) continue;
      for (const { contender, m } of results) {
        if (contender === base || contender.reference) continue;
        notes.push(`${contender.name}: ${fmt(m.eventsPerSecond / against.m.eventsPerSecond)}× ${base.name}.`);
      }
    }
    notes.unshift(
      `${backend}; ${REPORTS} AttemptSucceeded reports of one run (of ${REPORTS} shards) per contender, each contender on a run of its own, ` +
        "one after another, one ledger instance (pool of 16). Raw = multi-row INSERT of the same events into a plain table with the events table's columns and indexes (bench/append.ts).",
    );
    return { name: "report-throughput", machine, rows, notes };
  } finally {
    serve?.child.kill("SIGTERM");
    agent.destroy();
    await ledger.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

if (isMain(import.meta.url)) printReport(await run());
