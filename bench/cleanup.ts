import { type ChildProcess, fork } from "node:child_process";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { DeleteObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { createS3ObjectStore } from "../src/adapters/objectstore/s3-object-store.js";
import { PgEventLog } from "../src/adapters/postgres/pg-event-log.js";
import type { NewEvent } from "../src/events/envelope.js";
import { openLedger } from "../src/ledger/open-ledger.js";
import { deletePrefix } from "../src/maintenance/prefix-deleter.js";
import { DEFAULT_RETRY_POLICY } from "../src/maintenance/retry-policy.js";
import type { ObjectStore } from "../src/storage/object-store.js";
import { createTestS3Client, type S3rverHandle, startS3rver } from "../test/support/s3rver.js";
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
  sampleRss,
  scaled,
  withBenchDatabase,
} from "./support.js";

/*
 * Deleting 100,000 loser objects (2,000 loser prefixes × 50 objects) on s3rver: (a) the ledger's
 * own `cleanup()` (sequential: plan event, deletePrefix, outcome event per prefix), and
 * `deletePrefix` alone with bounded concurrency across prefixes; (b) a naive loop of one
 * DeleteObject per key on a 10,000-key sample. Re-seeded (straight to s3rver's disk) before each.
 * s3rver runs in a child process of its own, so server and client do not share one event loop.
 */

const SCHEMA = "shardledger";
const BUCKET = "lake";
const DATASET = "sales";
const ROOT = `s3://${BUCKET}/${DATASET}`;
const RUN_ID = "2026-11-23T11.00-cleanup";
const PREFIXES = scaled(2_000);
const OBJECTS_PER_PREFIX = 50;
const CONCURRENCY = 8;
const NAIVE_SAMPLE = Math.min(scaled(10_000), PREFIXES * OBJECTS_PER_PREFIX);
const NAIVE_CONCURRENCY = 16;
const BODY = "x".repeat(256);
const ACTOR = "bench-cleanup";

const pad = (n: number, width: number) => String(n).padStart(width, "0");
const TID_BASE = 7_000_000_000_000n;

/** Shard s: attempt 0 twice (a speculative duplicate); the smaller taskAttemptId wins, the other loses. */
function plannedAttempts(): PlannedAttempt[] {
  const out: PlannedAttempt[] = [];
  for (let shard = 0; shard < PREFIXES; shard++) {
    for (const k of [0n, 1n]) {
      const taskAttemptId = (TID_BASE + 2n * BigInt(shard) + k).toString();
      out.push({
        shard,
        attempt: 0,
        taskAttemptId,
        url: `${ROOT}/data/${RUN_ID}/shard=${pad(shard, 5)}/attempt=00-${taskAttemptId}`,
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
// s3rver in a child process, driven over IPC.

type ServerRequest = { op: "seed"; keys: string[] } | { op: "count"; prefix: string } | { op: "stop" };
type ServerReply =
  | { op: "ready"; endpoint: string }
  | { op: "done"; seconds: number }
  | { op: "count"; n: number };

class ServerProcess {
  readonly #child: ChildProcess;
  #waiting: { resolve: (m: ServerReply) => void; reject: (e: Error) => void }[] = [];

  private constructor(child: ChildProcess) {
    this.#child = child;
    child.on("message", (m) => this.#waiting.shift()?.resolve(m as ServerReply));
    child.on("exit", (code) => {
      for (const w of this.#waiting.splice(0)) w.reject(new Error(`s3rver child exited with ${code}`));
    });
  }

  static async start(): Promise<{ server: ServerProcess; endpoint: string }> {
    const child = fork(fileURLToPath(import.meta.url), [], {
      execArgv: process.execArgv,
      env: { ...process.env, SHARDLEDGER_BENCH_S3RVER: "1" },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    const server = new ServerProcess(child);
    const ready = await server.#next();
    if (ready.op !== "ready") throw new Error("s3rver child did not start");
    return { server, endpoint: ready.endpoint };
  }

  #next(): Promise<ServerReply> {
    return new Promise((resolve, reject) => {
      this.#waiting.push({ resolve, reject });
    });
  }

  async request(r: ServerRequest): Promise<ServerReply> {
    const reply = this.#next();
    this.#child.send(r);
    return reply;
  }

  /** Writes objects straight into s3rver's directory (its `seed`); returns the seconds it took. */
  async seed(keys: string[]): Promise<number> {
    const r = await this.request({ op: "seed", keys });
    return r.op === "done" ? r.seconds : Number.NaN;
  }

  /** Keys under `prefix` of the bucket, read from disk. */
  async count(prefix: string): Promise<number> {
    const r = await this.request({ op: "count", prefix });
    return r.op === "count" ? r.n : Number.NaN;
  }

  async stop(): Promise<void> {
    if (this.#child.exitCode !== null || !this.#child.connected) return;
    const exited = new Promise((resolve) => this.#child.once("exit", resolve));
    this.#child.send({ op: "stop" } satisfies ServerRequest);
    await exited;
  }
}

async function serveS3rver(): Promise<void> {
  const s3: S3rverHandle = await startS3rver({ buckets: [BUCKET] });
  process.on("message", async (m: ServerRequest) => {
    if (m.op === "seed") {
      const started = performance.now();
      // s3rver removes the directories a delete empties, but the seed helper remembers what it
      // created once and would write into a directory that is gone: recreate them first.
      const dirs = new Set(m.keys.map((k) => path.join(s3.directory, BUCKET, path.dirname(k))));
      for (const dir of dirs) await mkdir(dir, { recursive: true });
      await s3.seed(BUCKET, m.keys, BODY);
      process.send?.({ op: "done", seconds: (performance.now() - started) / 1000 } satisfies ServerReply);
    } else if (m.op === "count") {
      const n = (await s3.keysOnDisk(BUCKET, m.prefix)).length;
      process.send?.({ op: "count", n } satisfies ServerReply);
    } else {
      await s3.stop();
      process.exit(0);
    }
  });
  process.send?.({ op: "ready", endpoint: s3.endpoint } satisfies ServerReply);
}

// ---------------------------------------------------------------------------------------------

/** Counts and times the store's requests: one per list page, one per DeleteObjects batch (≤ 1000 keys). */
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

/** Runs `work` over `items` with at most `limit` in flight. */
async function pool<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      for (let i = next++; i < items.length; i = next++) await work(items[i] as T);
    }),
  );
}

export async function run(): Promise<BenchReport> {
  return withBenchDatabase(async (url) => {
    const machine = await machineFacts(url);
    const { server, endpoint } = await ServerProcess.start();
    const client: S3Client = createTestS3Client(endpoint, { requestTimeoutMs: 60_000 });
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
      // A published run whose every shard has a winner and one speculative loser.
      const attempts = plannedAttempts();
      await ledger.createDataset({ datasetId: DATASET, root: ROOT });
      await ledger.startRun({ datasetId: DATASET, numShards: PREFIXES, runId: RUN_ID });
      await seedAttemptReports(url, RUN_ID, attemptEvents(RUN_ID, attempts, ACTOR));
      await ledger.publish(RUN_ID);
      const losers = attempts.filter((a) => a.round === 1).map((a) => a.url);
      const winners = attempts.filter((a) => a.round === 0).map((a) => a.url);
      const loserKeys = losers.flatMap((u) => objectKeys(u, OBJECTS_PER_PREFIX));
      const total = loserKeys.length;
      const dataPrefix = `${DATASET}/data/`;
      // One object per winner prefix: it must survive every cleanup below.
      await server.seed(winners.flatMap((u) => objectKeys(u, 1)));

      const result = (
        phase: string,
        objects: number,
        seconds: number,
        detail: string,
        extra: BenchRow = {},
      ): BenchRow => ({
        phase,
        objects,
        seconds: fmt(seconds),
        "objects/s": fmt(objects / seconds),
        ...extra,
        detail,
      });
      const check = async (label: string, expectedLeft: number) => {
        const left = await server.count(dataPrefix);
        if (left !== expectedLeft)
          throw new Error(`${label}: ${left} objects left under data/, expected ${expectedLeft}`);
      };

      // (a1) The ledger's own cleanup().
      let seeded = await server.seed(loserKeys);
      notes.push(
        `Seeding ${total} objects straight to s3rver's disk took ${fmt(seeded)} s (${fmt(total / seeded)}/s) each time.`,
      );
      counts.clear();
      const probes = new Probes();
      probes.wrap(PgEventLog.prototype, "append", (a) => `append ${(a[1] as NewEvent[])[0]?.type ?? "?"}`);
      let load = loadNow();
      let rss = sampleRss();
      let started = performance.now();
      let report: Awaited<ReturnType<typeof ledger.cleanup>>;
      try {
        report = await ledger.cleanup({ datasetId: DATASET });
      } finally {
        probes.restore();
      }
      let seconds = (performance.now() - started) / 1000;
      await check("ledger.cleanup()", winners.length);
      if (report.deleted.length !== losers.length || report.failed.length > 0) {
        throw new Error(`cleanup deleted ${report.deleted.length} prefixes, ${report.failed.length} failed`);
      }
      const appendMs = [...probes.ms.values()].reduce((a, s) => a + s.ms, 0);
      const appends = [...probes.ms.values()].reduce((a, s) => a + s.calls, 0);
      const ledgerRate = total / seconds;
      rows.push(
        result(
          `(a) ledger.cleanup(), ${losers.length} prefixes, sequential`,
          total,
          seconds,
          `${requestsText(counts)}; ${appends} appends ${fmt(appendMs / 1000)} s (${Math.round((appendMs / 1000 / seconds) * 100)}%); ` +
            `peak RSS ${rss.stop()} MB; load ${load}`,
        ),
      );

      // (a2) deletePrefix with bounded concurrency across prefixes, no ledger bookkeeping.
      seeded = await server.seed(loserKeys);
      counts.clear();
      const store = countingStore(createS3ObjectStore(ROOT, { client }), counts);
      const prefixes = losers.map((u) => `${u.slice(`${ROOT}/`.length)}/`);
      let deleted = 0;
      load = loadNow();
      rss = sampleRss();
      started = performance.now();
      await pool(prefixes, CONCURRENCY, async (prefix) => {
        const r = await deletePrefix(store, prefix, { policy: DEFAULT_RETRY_POLICY });
        if (r.status !== "deleted")
          throw new Error(`deletePrefix ${prefix}: ${r.error?.code} ${r.error?.message}`);
        deleted += r.deletedObjects;
      });
      seconds = (performance.now() - started) / 1000;
      await check("deletePrefix", winners.length);
      const prefixRate = total / seconds;
      rows.push(
        result(
          `(a) deletePrefix, ${CONCURRENCY} prefixes in flight`,
          deleted,
          seconds,
          `${requestsText(counts)}; peak RSS ${rss.stop()} MB; load ${load}`,
        ),
      );

      // (b) The naive loop: one DeleteObject per key, on a sample.
      const sample = loserKeys.slice(0, NAIVE_SAMPLE);
      const naive = async (label: string, inFlight: number) => {
        await server.seed(sample);
        const loadNaive = loadNow();
        const t0 = performance.now();
        await pool(sample, inFlight, async (key) => {
          await client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: key }));
        });
        const s = (performance.now() - t0) / 1000;
        await check(label, winners.length);
        const rate = NAIVE_SAMPLE / s;
        rows.push(
          result(
            label,
            NAIVE_SAMPLE,
            s,
            `${NAIVE_SAMPLE} DeleteObject (${fmt(((s * 1000) / NAIVE_SAMPLE) * inFlight)} ms avg); ${fmt(total / rate)} s for ${total} extrapolated; load ${loadNaive}`,
          ),
        );
        return rate;
      };
      const naiveSequential = await naive(`(b) naive DeleteObject per key, sequential`, 1);
      const naiveConcurrent = await naive(
        `(b) naive DeleteObject per key, ${NAIVE_CONCURRENCY} in flight`,
        NAIVE_CONCURRENCY,
      );
      rows.push(
        {
          phase: "ratio ledger.cleanup() / naive sequential",
          "objects/s": fmt(ledgerRate / naiveSequential),
          detail: "objects/s over objects/s",
        },
        {
          phase: `ratio deletePrefix×${CONCURRENCY} / naive sequential`,
          "objects/s": fmt(prefixRate / naiveSequential),
          detail: "",
        },
        {
          phase: `ratio deletePrefix×${CONCURRENCY} / naive×${NAIVE_CONCURRENCY}`,
          "objects/s": fmt(prefixRate / naiveConcurrent),
          detail: "",
        },
      );
      notes.push(
        `s3rver 3.7 (in a child process, /dev/shm when writable) is the server: absolute rates are s3rver's, ` +
          "the ratios and request counts are what carries over to S3. The naive rows delete a " +
          `${NAIVE_SAMPLE}-key sample (the first ${NAIVE_SAMPLE / OBJECTS_PER_PREFIX} prefixes) and are ` +
          `extrapolated to ${total} objects. One object per winner prefix is seeded and checked to survive.`,
      );
      return { name: "cleanup", machine, rows, notes };
    } finally {
      await ledger.close();
      client.destroy();
      await server.stop();
    }
  });
}

if (process.env.SHARDLEDGER_BENCH_S3RVER === "1" && process.send) await serveS3rver();
else if (isMain(import.meta.url)) printReport(await run());
