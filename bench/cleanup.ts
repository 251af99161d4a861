import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { DeleteObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { createS3ObjectStore } from "../src/adapters/objectstore/s3-object-store.js";
import { PgEventLog } from "../src/adapters/postgres/pg-event-log.js";
import type { NewEvent } from "../src/events/envelope.js";
import { type Ledger, openLedger } from "../src/ledger/open-ledger.js";
import type { ObjectStore } from "../src/storage/object-store.js";
import {
  DEFAULT_S3_MODEL,
  type S3ModelHandle,
  type S3ModelOptions,
  type S3ModelStats,
  s3ModelClient,
  startS3Model,
} from "../test/support/s3-model.js";
import { attemptEvents, type PlannedAttempt, seedAttemptReports } from "./publish.js";
import {
  type BenchReport,
  type BenchRow,
  fmt,
  isMain,
  loadNow,
  machineFacts,
  Probes,
  printReport,
  SCALE,
  sampleRss,
  scaled,
  withBenchDatabase,
} from "./support.js";

/*
 * Deleting 100,000 loser objects (2,000 loser prefixes × 50 objects) on the S3 model
 * (test/support/s3-model.ts: log-normal latency, median 25 ms / p99 150 ms; 3,500 deletes/s per
 * partition, 503 SlowDown beyond; the model runs in a child process of its own), side by side:
 * (1) the concurrent cleanup, (2) today's sequential cleanup (`concurrency: 1`, the same code path
 * as before), (3) a naive sequential loop of one DeleteObject per key on a sample, extrapolated.
 * Each ledger phase cleans its own dataset (a published run of its own), so each starts from the
 * same state; after each, a safety check: winners, the current run's manifest and pointer, and
 * sentinels outside the root are untouched, and every loser is deleted or pending.
 */

const SCHEMA = "shardledger";
const BUCKET = "lake";
const PREFIXES = scaled(2_000);
const OBJECTS_PER_PREFIX = 50;
/** The default of `cleanup --concurrency` (cleanup-throughput.ts). */
const CONCURRENCY = Number(process.env.BENCH_CLEANUP_CONCURRENCY ?? 16);
const NAIVE_SAMPLE = Math.min(scaled(2_000), PREFIXES * OBJECTS_PER_PREFIX);
const BODY = "x".repeat(256);
const ACTOR = "bench-cleanup";
/** The model's parameters for this bench: S3's documented per-prefix rates, unscaled. */
const MODEL: Omit<S3ModelOptions, "buckets"> = { ...DEFAULT_S3_MODEL };
/** The limit of phase (1b), scaled to below what this machine's client drives, so that it binds. */
const BOUND_LIMIT = Number(process.env.BENCH_CLEANUP_BOUND_LIMIT ?? 1_000);
/** The limiter's start, below the documented 3,500 deletes/s. */
const INITIAL_RATE = 1_000;
/** Objects under the one prefix gc collects at scale, and orphans beside a live run's winner. */
const GC_OBJECTS = Math.round(100_000 * Math.min(1, SCALE * 4));
const GC_ORPHANS = Math.min(200, scaled(200));
const bucketKeyOf = (url: string) => url.slice(`s3://${BUCKET}/`.length);
/** Seconds at the start of the concurrent pass counted as ramp-up. */
const RAMP_SECONDS = 5;

const progress = (what: string) =>
  process.stderr.write(`[bench cleanup ${new Date().toISOString()}] ${what}\n`);
const pad = (n: number, width: number) => String(n).padStart(width, "0");
const TID_BASE = 7_000_000_000_000n;

/** Shard s: attempt 0 twice (a speculative duplicate); the smaller taskAttemptId wins, the other loses. */
function plannedAttempts(root: string, runId: string): PlannedAttempt[] {
  const out: PlannedAttempt[] = [];
  for (let shard = 0; shard < PREFIXES; shard++) {
    for (const k of [0n, 1n]) {
      const taskAttemptId = (TID_BASE + 2n * BigInt(shard) + k).toString();
      out.push({
        shard,
        attempt: 0,
        taskAttemptId,
        url: `${root}/data/${runId}/shard=${pad(shard, 5)}/attempt=00-${taskAttemptId}`,
        outcome: "SUCCEEDED",
        round: Number(k),
      });
    }
  }
  return out;
}

/** Bucket keys of a prefix's objects (the url's path under the bucket, then part files). */
const objectKeys = (url: string, n: number) => {
  const base = url.slice(`s3://${BUCKET}/`.length);
  return Array.from({ length: n }, (_, i) => `${base}/part-${pad(i, 5)}.parquet`);
};

// ---------------------------------------------------------------------------------------------
// The S3 model in a child process, driven over IPC.

type ModelRequest =
  | { op: "seed"; keys: string[] }
  | { op: "count"; prefix: string }
  | { op: "stats"; reset: boolean }
  | { op: "limit"; deletesPerSecond: number }
  | { op: "stop" };
type ModelReply =
  | { op: "ready"; endpoint: string }
  | { op: "done" }
  | { op: "count"; n: number }
  | { op: "stats"; stats: S3ModelStats };

class ModelProcess {
  readonly #child: ChildProcess;
  #waiting: { resolve: (m: ModelReply) => void; reject: (e: Error) => void }[] = [];

  private constructor(child: ChildProcess) {
    this.#child = child;
    child.on("message", (m) => this.#waiting.shift()?.resolve(m as ModelReply));
    child.on("exit", (code) => {
      for (const w of this.#waiting.splice(0)) w.reject(new Error(`model child exited with ${code}`));
    });
  }

  static async start(): Promise<{ model: ModelProcess; endpoint: string }> {
    const child = fork(fileURLToPath(import.meta.url), [], {
      execArgv: process.execArgv,
      env: { ...process.env, SHARDLEDGER_BENCH_S3_MODEL: JSON.stringify(MODEL) },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    const model = new ModelProcess(child);
    const ready = await model.#next();
    if (ready.op !== "ready") throw new Error("model child did not start");
    return { model, endpoint: ready.endpoint };
  }

  #next(): Promise<ModelReply> {
    return new Promise((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }

  async #request(r: ModelRequest): Promise<ModelReply> {
    const reply = this.#next();
    this.#child.send(r);
    return reply;
  }

  async seed(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 20_000) {
      await this.#request({ op: "seed", keys: keys.slice(i, i + 20_000) });
    }
  }

  async count(prefix: string): Promise<number> {
    const r = await this.#request({ op: "count", prefix });
    return r.op === "count" ? r.n : Number.NaN;
  }

  async stats(reset = false): Promise<S3ModelStats> {
    const r = await this.#request({ op: "stats", reset });
    if (r.op !== "stats") throw new Error("no stats");
    return r.stats;
  }

  async setDeleteRate(deletesPerSecond: number): Promise<void> {
    await this.#request({ op: "limit", deletesPerSecond });
  }

  async stop(): Promise<void> {
    if (this.#child.exitCode !== null || !this.#child.connected) return;
    const exited = new Promise((resolve) => this.#child.once("exit", resolve));
    this.#child.send({ op: "stop" } satisfies ModelRequest);
    await exited;
  }
}

async function serveModel(): Promise<void> {
  const options = JSON.parse(process.env.SHARDLEDGER_BENCH_S3_MODEL as string) as S3ModelOptions;
  const model: S3ModelHandle = await startS3Model({ ...options, buckets: [BUCKET] });
  process.on("message", async (m: ModelRequest) => {
    if (m.op === "seed") {
      model.seed(BUCKET, m.keys, BODY);
      process.send?.({ op: "done" } satisfies ModelReply);
    } else if (m.op === "count") {
      process.send?.({ op: "count", n: model.keys(BUCKET, m.prefix).length } satisfies ModelReply);
    } else if (m.op === "limit") {
      model.setDeleteRate(m.deletesPerSecond);
      process.send?.({ op: "done" } satisfies ModelReply);
    } else if (m.op === "stats") {
      process.send?.({ op: "stats", stats: structuredClone(model.stats) } satisfies ModelReply);
      if (m.reset) model.resetStats();
    } else {
      await model.stop();
      process.exit(0);
    }
  });
  process.send?.({ op: "ready", endpoint: model.endpoint } satisfies ModelReply);
}

// ---------------------------------------------------------------------------------------------

/** Counts and times the store's requests, as the client sees them. */
function countingStore(store: ObjectStore, counts: Map<string, { n: number; ms: number }>): ObjectStore {
  const time = async <T>(op: string, f: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    try {
      return await f();
    } finally {
      const c = counts.get(op) ?? { n: 0, ms: 0 };
      c.n++;
      c.ms += performance.now() - started;
      counts.set(op, c);
    }
  };
  return {
    rootUrl: store.rootUrl,
    list: (prefix, options) => time("ListObjectsV2", () => store.list(prefix, options)),
    deleteMany: (keys) => time("DeleteObjects", () => store.deleteMany(keys)),
    put: (key, body, options) => time("PutObject", () => store.put(key, body, options)),
    get: (key) => time("GetObject", () => store.get(key)),
  };
}

const requestsText = (counts: Map<string, { n: number; ms: number }>) =>
  [...counts.entries()].map(([op, c]) => `${c.n} ${op} (${fmt(c.ms / c.n)} ms avg)`).join(", ");

/** A published run of its own dataset: `PREFIXES` winners and as many losers, all seeded. */
async function publishedRun(ledger: Ledger, url: string, model: ModelProcess, datasetId: string) {
  const root = `s3://${BUCKET}/${datasetId}`;
  const runId = `2026-11-30T13.00-${datasetId}`;
  const attempts = plannedAttempts(root, runId);
  await ledger.createDataset({ datasetId, root });
  await ledger.startRun({ datasetId, numShards: PREFIXES, runId });
  await seedAttemptReports(url, runId, attemptEvents(runId, attempts, ACTOR));
  const losers = attempts.filter((a) => a.round === 1).map((a) => a.url);
  const winners = attempts.filter((a) => a.round === 0).map((a) => a.url);
  // One object per winner prefix, then the losers' objects.
  await model.seed(winners.flatMap((u) => objectKeys(u, 1)));
  await model.seed(losers.flatMap((u) => objectKeys(u, OBJECTS_PER_PREFIX)));
  await ledger.publish(runId);
  return { datasetId, root, runId, losers, winners, objects: losers.length * OBJECTS_PER_PREFIX };
}

/**
 * The safety oracle of a bench run: every winner's object, the current run's manifest and
 * `_CURRENT`, and the sentinels outside the root are still there; every loser is deleted (no
 * object left under it) or pending in the ledger.
 */
async function checkSafety(
  ledger: Ledger,
  model: ModelProcess,
  run: Awaited<ReturnType<typeof publishedRun>>,
): Promise<string> {
  const bucketKey = (url: string) => url.slice(`s3://${BUCKET}/`.length);
  const problems: string[] = [];
  const winnersLeft = await model.count(`${run.datasetId}/data/`);
  const pending = new Set((await ledger.pendingCleanup({ datasetId: run.datasetId })).map((p) => p.url));
  let losersLeft = 0;
  for (const u of run.losers) {
    const n = await model.count(`${bucketKey(u)}/`);
    if (n > 0 && !pending.has(u)) problems.push(`loser ${u} has ${n} objects and is not pending`);
    losersLeft += n;
  }
  if (winnersLeft - losersLeft !== run.winners.length)
    problems.push(`${winnersLeft - losersLeft} winner objects left, expected ${run.winners.length}`);
  for (const u of run.winners) {
    if ((await model.count(`${bucketKey(u)}/`)) !== 1) problems.push(`winner ${u} lost its object`);
  }
  if ((await model.count(`${run.datasetId}/_CURRENT`)) !== 1) problems.push("_CURRENT is gone");
  if ((await model.count(`${run.datasetId}/manifests/${run.runId}.json`)) !== 1)
    problems.push("manifest is gone");
  for (const s of SENTINELS) if ((await model.count(s)) !== 1) problems.push(`sentinel ${s} is gone`);
  if (problems.length > 0) throw new Error(`safety oracle: ${problems.slice(0, 5).join("; ")}`);
  return `safety oracle held (${run.winners.length} winners, pointer, manifest, ${SENTINELS.length} sentinels; ${run.losers.length - pending.size} losers deleted, ${pending.size} pending)`;
}

/** Objects outside every dataset root, next to them: a cleanup must never reach them. */
const SENTINELS = [
  "bound-sentinel/data/x",
  "conc-sentinel/data/x",
  "seq-sentinel/data/x",
  "outside/conc/data/x",
  // A sibling root with the very same layout: a prefix match without its "/" would reach it.
  `concx/data/2026-11-30T13.00-conc/shard=00000/attempt=00-${TID_BASE + 1n}/part-00000.parquet`,
];

/** Keys deleted per second after the ramp-up, and its mean, from the model's per-second counts. */
function sustained(stats: S3ModelStats, seconds: number): { mean: number; perSecond: number[] } {
  // Whole seconds after the ramp-up, before the last partial second.
  const whole = stats.deletesPerSecond.slice(RAMP_SECONDS, Math.max(RAMP_SECONDS, Math.floor(seconds)));
  const mean = whole.length === 0 ? Number.NaN : whole.reduce((a, b) => a + b, 0) / whole.length;
  return { mean, perSecond: whole };
}

export async function run(): Promise<BenchReport> {
  return withBenchDatabase(async (url) => {
    const machine = await machineFacts(url);
    const { model, endpoint } = await ModelProcess.start();
    const client: S3Client = s3ModelClient(endpoint, { requestTimeoutMs: 60_000 });
    const counts = new Map<string, { n: number; ms: number }>();
    const rows: BenchRow[] = [];
    const notes: string[] = [];
    const ledger = await openLedger({
      database: url,
      schema: SCHEMA,
      actor: ACTOR,
      cleanupAfterPublish: false,
      objectStore: (root) => countingStore(createS3ObjectStore(root, { client }), counts),
    });
    try {
      progress("seeding");
      await model.seed(SENTINELS);
      const conc = await publishedRun(ledger, url, model, "conc");
      const seq = await publishedRun(ledger, url, model, "seq");
      const bound = await publishedRun(ledger, url, model, "bound");
      const total = conc.objects;
      const result = (phase: string, objects: number, seconds: number, detail: string): BenchRow => ({
        phase,
        objects,
        seconds: fmt(seconds),
        "objects/s": fmt(objects / seconds),
        detail,
      });

      const ledgerPhase = async (
        label: string,
        dataset: Awaited<ReturnType<typeof publishedRun>>,
        concurrency: number,
        initialRate = INITIAL_RATE,
      ) => {
        progress(`${label}: start`);
        counts.clear();
        await model.stats(true);
        const probes = new Probes();
        probes.wrap(PgEventLog.prototype, "append", (a) => `append ${(a[1] as NewEvent[])[0]?.type ?? "?"}`);
        const load = loadNow();
        const rss = sampleRss();
        const started = performance.now();
        let report: Awaited<ReturnType<typeof ledger.cleanup>>;
        try {
          report = await ledger.cleanup({
            datasetId: dataset.datasetId,
            concurrency,
            initialRate,
          });
        } finally {
          probes.restore();
        }
        const seconds = (performance.now() - started) / 1000;
        const peak = rss.stop();
        const stats = await model.stats();
        const safety = await checkSafety(ledger, model, dataset);
        if (report.deleted.length !== dataset.losers.length || report.failed.length > 0) {
          throw new Error(
            `${label}: deleted ${report.deleted.length} prefixes, ${report.failed.length} failed`,
          );
        }
        const appendMs = [...probes.ms.values()].reduce((a, s) => a + s.ms, 0);
        const appends = [...probes.ms.values()].reduce((a, s) => a + s.calls, 0);
        const requests = Object.values(stats.requests).reduce((a, b) => a + b, 0);
        const t = report.throughput?.[0];
        rows.push(
          result(
            label,
            total,
            seconds,
            `${requestsText(counts)}; ${appends} appends ${fmt(appendMs / 1000)} s; ` +
              `throttled ${stats.throttled}/${requests} requests (${fmt((stats.throttled / requests) * 100)}%)` +
              (t ? `; limiter settled at ${t.settledRate} keys/s` : "") +
              `; peak RSS ${peak} MB; load ${load}`,
          ),
        );
        notes.push(`${label}: ${safety}.`);
        return { rate: total / seconds, seconds, stats, requests };
      };

      // (1) The concurrent cleanup against the documented limit.
      const c = await ledgerPhase(`(1) cleanup, ${CONCURRENCY} prefixes in flight`, conc, CONCURRENCY);
      const s = sustained(c.stats, c.seconds);
      rows.push({
        phase: `(1) sustained after ${RAMP_SECONDS} s ramp-up`,
        "objects/s": fmt(s.mean),
        detail: `${fmt(s.mean / MODEL.deletesPerSecond)}× the limit of ${MODEL.deletesPerSecond} deletes/s; per second: ${s.perSecond.join(", ")}`,
      });

      // (1b) The same with the limit scaled down to what this machine's client can exceed, so it
      // binds; the limiter's start is scaled alike.
      await model.setDeleteRate(BOUND_LIMIT);
      const b = await ledgerPhase(
        `(1b) cleanup, ${CONCURRENCY} in flight, limit ${BOUND_LIMIT}/s`,
        bound,
        CONCURRENCY,
        Math.round((INITIAL_RATE * BOUND_LIMIT) / MODEL.deletesPerSecond),
      );
      await model.setDeleteRate(MODEL.deletesPerSecond);
      const sb = sustained(b.stats, b.seconds);
      rows.push({
        phase: `(1b) sustained after ${RAMP_SECONDS} s ramp-up`,
        "objects/s": fmt(sb.mean),
        detail: `${fmt(sb.mean / BOUND_LIMIT)}× the limit of ${BOUND_LIMIT} deletes/s; per second: ${sb.perSecond.join(", ")}`,
      });

      // (2) Today's sequential cleanup: the same pass with one prefix at a time.
      const q = await ledgerPhase("(2) cleanup, sequential (concurrency 1)", seq, 1);

      // (3) The naive loop: one DeleteObject per key, sequential, on a sample.
      progress("naive loop");
      const sample = conc.losers.flatMap((u) => objectKeys(u, OBJECTS_PER_PREFIX)).slice(0, NAIVE_SAMPLE);
      await model.seed(sample);
      const loadNaive = loadNow();
      const t0 = performance.now();
      for (const key of sample) await client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: key }));
      const naiveSeconds = (performance.now() - t0) / 1000;
      await checkSafety(ledger, model, conc);
      const naive = NAIVE_SAMPLE / naiveSeconds;
      rows.push(
        result(
          "(3) naive DeleteObject per key, sequential",
          NAIVE_SAMPLE,
          naiveSeconds,
          `${NAIVE_SAMPLE} DeleteObject (${fmt((naiveSeconds * 1000) / NAIVE_SAMPLE)} ms avg); ${fmt(total / naive)} s for ${total} extrapolated; load ${loadNaive}`,
        ),
        { phase: "ratio (1) / (3) naive", "objects/s": fmt(c.rate / naive), detail: "target ≥ 20" },
        { phase: "ratio (1) / (2) sequential", "objects/s": fmt(c.rate / q.rate), detail: "target ≥ 5" },
        {
          phase: "ratio (1) sustained / limit",
          "objects/s": fmt(s.mean / MODEL.deletesPerSecond),
          detail: `the limit binds only if the client exceeds it; throttled ${fmt((c.stats.throttled / c.requests) * 100)}%`,
        },
        {
          phase: "ratio (1b) sustained / limit (binding)",
          "objects/s": fmt(sb.mean / BOUND_LIMIT),
          detail: `target ≥ 0.7, throttled ${fmt((b.stats.throttled / b.requests) * 100)}% of requests (target < 5%)`,
        },
      );
      // (4) gc at scale: a run pruned by keepRuns takes its whole area (GC_OBJECTS objects under one
      // prefix) through the same limiter, its listing pipelined with its deletes; plus orphans.
      progress("gc at scale");
      const gcRoot = `s3://${BUCKET}/gcscale`;
      await ledger.createDataset({ datasetId: "gcscale", root: gcRoot, keepRuns: 1, safetyWindow: "0s" });
      const gcRun = async (runId: string, objects: number) => {
        await ledger.startRun({ datasetId: "gcscale", numShards: 1, runId });
        const url = `${gcRoot}/data/${runId}/shard=00000/attempt=00`;
        await model.seed(
          Array.from({ length: objects }, (_, i) => `${bucketKeyOf(url)}/part-${pad(i, 6)}.parquet`),
        );
        await ledger.attemptSucceeded({ runId, shard: 0, attempt: 0, url });
        await ledger.publish(runId);
        return url;
      };
      await gcRun("old", GC_OBJECTS);
      const keptUrl = await gcRun("new", 1);
      const orphans = Array.from(
        { length: GC_ORPHANS },
        (_, i) => `gcscale/data/new/shard=00001/stray-${pad(i, 4)}`,
      );
      await model.seed(orphans);
      await model.stats(true);
      const gcLoad = loadNow();
      const gcRss = sampleRss();
      const g0 = performance.now();
      const gcReport = await ledger.gc("gcscale");
      const gcSeconds = (performance.now() - g0) / 1000;
      const gcPeak = gcRss.stop();
      const gcStats = await model.stats();
      const leftOld = await model.count("gcscale/data/old/");
      const leftOrphans = await model.count("gcscale/data/new/shard=00001/");
      const keptLeft = await model.count(`${bucketKeyOf(keptUrl)}/`);
      // The safety part throws; what gc could not delete is a measurement, shown in the row.
      if (keptLeft !== 1) throw new Error(`gc: the kept run's winner has ${keptLeft}/1 objects left`);
      const gcLeft = `${leftOld} of the pruned area and ${leftOrphans} orphans left${
        gcReport.failed.length > 0
          ? ` (${gcReport.failed
              .map((f) => f.error)
              .join("; ")
              .slice(0, 200)})`
          : ""
      }`;
      const gt = gcReport.throughput;
      rows.push(
        result(
          `(4) gc: pruned run area + ${GC_ORPHANS} orphans`,
          GC_OBJECTS + GC_ORPHANS,
          gcSeconds,
          `${gcLeft}; ${gt?.listRequests} ListObjectsV2 (${gt?.listSeconds} s summed), ${gt?.deleteRequests} DeleteObjects; ` +
            `throttled ${gcStats.throttled}; limiter settled at ${gt?.settledRate} keys/s; peak RSS ${gcPeak} MB; load ${gcLoad}`,
        ),
      );
      notes.push(
        `(4) gc: the kept run's winner survived, the pruned run's area (${GC_OBJECTS} objects) and ${GC_ORPHANS} orphans are gone.`,
      );
      notes.push(
        `S3 model (test/support/s3-model.ts) in a child process: latency log-normal, median ${MODEL.latency?.medianMs} ms, ` +
          `p99 ${MODEL.latency?.p99Ms} ms, +${MODEL.latency?.perKeyMs} ms per key of a DeleteObjects; ` +
          `${MODEL.deletesPerSecond} deletes/s and ${MODEL.readsPerSecond} reads/s per partition (bucket + first key segment: one dataset), ` +
          `${MODEL.burstSeconds} s of burst, 503 SlowDown beyond. BENCH_SCALE=${SCALE}: ${PREFIXES} prefixes × ${OBJECTS_PER_PREFIX} objects. ` +
          `The limiter starts at ${INITIAL_RATE} keys/s.`,
      );
      return { name: "cleanup", machine, rows, notes };
    } finally {
      await ledger.close();
      client.destroy();
      await model.stop();
    }
  });
}

if (process.env.SHARDLEDGER_BENCH_S3_MODEL && process.send) await serveModel();
else if (isMain(import.meta.url)) printReport(await run());
