import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { openObjectStore } from "../adapters/objectstore/open-object-store.js";
import type { AuditReport } from "../adapters/postgres/rebuild.js";
import { isShardCoverageError } from "../errors.js";
import { type Ledger, openLedger } from "../ledger/open-ledger.js";
import type { PublishResult } from "../ledger/publish.js";
import type { CleanupReport } from "../maintenance/maintenance-reports.js";
import type { PendingCleanupItem, RunView } from "../projections/views.js";
import type { ObjectStore } from "../storage/object-store.js";

/** What the demo did, for the CLI to print (and `--json` to emit). */
export interface DemoSummary {
  database: string;
  datasetId: string;
  root: string;
  runs: RunView[];
  published: PublishResult[];
  coverageFailure: { runId: string; missingShards: number[] } | null;
  lateLosers: number;
  pendingAfterFirstCleanup: PendingCleanupItem[];
  firstCleanup: CleanupReport;
  drainingCleanup: CleanupReport;
  pendingAtEnd: number;
  audit: AuditReport;
}

/** Options of {@link runDemo}. */
export interface DemoOptions {
  /** Where the embedded state lives (default `./.shardledger`). */
  home?: string;
  /** The database (default `pglite:<home>/db`). */
  database?: string;
  /** The schema in it (default `shardledger`). */
  schema?: string;
  shards?: number;
  onProgress?: (step: string, done: number, total: number) => void;
}

/**
 * A simulated multi-engine write on the embedded defaults: three engines (Spark-like ids near
 * 2^63, Ray-like small ids, Dask-like none) write a dataset to the local filesystem, with engine
 * retries, speculative duplicates that both succeed, failed attempts, a run that fails its
 * coverage check, late attempts after publish, and transient cleanup failures that land in the
 * pending set and are drained by a later pass (the demo shortens the between-pass backoff to a
 * second and waits for it). Safe to run again: every invocation writes new runs.
 *
 * @example
 * ```ts
 * const summary = await runDemo({ home: "./.shardledger" })
 * console.log(summary.audit.match)
 * ```
 */
export async function runDemo(options: DemoOptions = {}): Promise<DemoSummary> {
  const home = resolve(options.home ?? ".shardledger");
  const database = options.database ?? `pglite:${join(home, "db")}`;
  mkdirSync(home, { recursive: true });
  const lake = join(home, "lake", "clickstream");
  mkdirSync(lake, { recursive: true });
  const root = pathToFileURL(lake).href.replace(/\/$/, "");
  const faults = new FaultPlan();
  const ledger = await openLedger({
    database,
    ...(options.schema ? { schema: options.schema } : {}),
    actor: "shardledger-demo",
    cleanupAfterPublish: false,
    objectStore: (url) => faults.wrap(openObjectStore(url)),
    maintenance: {
      deletion: { maxTries: 2, baseDelayMs: 5, maxDelayMs: 20 },
      // A short between-pass backoff, so the demo can wait for the later pass that drains.
      pending: { maxTries: 10, baseDelayMs: 500, maxDelayMs: 1_000 },
    },
  });
  try {
    return await simulate(ledger, {
      database,
      root,
      lake,
      shards: options.shards ?? 48,
      faults,
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
  } finally {
    await ledger.close();
  }
}

interface SimContext {
  database: string;
  root: string;
  lake: string;
  shards: number;
  faults: FaultPlan;
  onProgress?: (step: string, done: number, total: number) => void;
}

const ENGINES = [
  {
    name: "spark",
    taskAttemptId: (shard: number, attempt: number) =>
      (9223372036854775000n + BigInt(shard * 10 + attempt)).toString(),
  },
  { name: "ray", taskAttemptId: (shard: number, attempt: number) => String(shard * 100 + attempt) },
  { name: "dask", taskAttemptId: () => null },
] as const;

async function simulate(ledger: Ledger, ctx: SimContext): Promise<DemoSummary> {
  const datasetId = "clickstream";
  await ledger.createDataset({
    datasetId,
    root: ctx.root,
    keepRuns: 3,
    safetyWindow: "0s",
    failedRetention: "7d",
  });
  const tag = `${new Date().toISOString().replace(/\D/g, "").slice(0, 14)}-${randomBytes(2).toString("hex")}`;
  const published: PublishResult[] = [];
  let coverageFailure: DemoSummary["coverageFailure"] = null;
  let lateLosers = 0;
  const total = ENGINES.length + 1;
  let done = 0;
  const progress = (step: string) => ctx.onProgress?.(step, done, total);

  for (const [e, engine] of ENGINES.entries()) {
    const runId = `${engine.name}-${tag}`;
    progress(`writing ${runId}`);
    await ledger.startRun({ datasetId, numShards: ctx.shards, runId });
    for (let shard = 0; shard < ctx.shards; shard++) {
      const attempts = plan(shard, e);
      for (const attempt of attempts) {
        const tid = engine.taskAttemptId(shard, attempt.n);
        const url = `${ctx.root}/data/${runId}/shard=${String(shard).padStart(5, "0")}/attempt=${String(attempt.n).padStart(2, "0")}${tid ? `-${tid.slice(-4)}` : ""}`;
        writeParts(ctx, url);
        await ledger.attemptStarted({ runId, shard, attempt: attempt.n, taskAttemptId: tid, url });
        if (attempt.ok)
          await ledger.attemptSucceeded({ runId, shard, attempt: attempt.n, taskAttemptId: tid, url });
        else
          await ledger.attemptFailed({
            runId,
            shard,
            attempt: attempt.n,
            taskAttemptId: tid,
            url,
            error: "executor lost (simulated)",
          });
      }
      if (shard % 8 === 0) await ledger.heartbeat(runId);
    }
    published.push(await ledger.publish(runId));
    // A speculative task that was still running reports after publish: a loser at once.
    const lateShard = 1 + e;
    const lateTid = engine.taskAttemptId(lateShard, 7);
    const lateUrl = `${ctx.root}/data/${runId}/shard=${String(lateShard).padStart(5, "0")}/attempt=07${lateTid ? `-${lateTid.slice(-4)}` : ""}`;
    writeParts(ctx, lateUrl);
    const late = await ledger.attemptSucceeded({
      runId,
      shard: lateShard,
      attempt: 7,
      taskAttemptId: lateTid,
      url: lateUrl,
    });
    if (late.status === "LOSER") lateLosers++;
    done++;
  }

  progress("a run that loses shards");
  const brokenRun = `broken-${tag}`;
  await ledger.startRun({ datasetId, numShards: 6, runId: brokenRun });
  for (const shard of [0, 1, 3, 5]) {
    const url = `${ctx.root}/data/${brokenRun}/shard=${String(shard).padStart(5, "0")}/attempt=00`;
    writeParts(ctx, url);
    await ledger.attemptSucceeded({ runId: brokenRun, shard, attempt: 0, url });
  }
  try {
    await ledger.publish(brokenRun);
  } catch (e) {
    if (!isShardCoverageError(e)) throw e;
    coverageFailure = { runId: brokenRun, missingShards: [...e.missingShards] };
  }
  done++;

  // Cleanup: some deletions hit injected transient errors and land in the pending set …
  progress("cleanup with injected faults");
  ctx.faults.failKeysDuringPass(5);
  const firstCleanup = await ledger.cleanup({ datasetId });
  const pendingAfterFirstCleanup = await ledger.pendingCleanup({ datasetId });
  // … and a later pass, once their retry time has come, drains them.
  ctx.faults.clear();
  await new Promise((resolve) => setTimeout(resolve, 1_100));
  const drainingCleanup = await ledger.cleanup({ datasetId });
  const pendingAtEnd = (await ledger.pendingCleanup({ datasetId })).length;
  progress("audit");
  const audit = await ledger.audit();
  const runs = await ledger.runs(datasetId);
  return {
    database: ctx.database,
    datasetId,
    root: ctx.root,
    runs,
    published,
    coverageFailure,
    lateLosers,
    pendingAfterFirstCleanup,
    firstCleanup,
    drainingCleanup,
    pendingAtEnd,
    audit,
  };
}

/** Per shard: engine retries, speculative duplicates that both succeed, plain successes. */
function plan(shard: number, engine: number): { n: number; ok: boolean }[] {
  const r = (shard * 31 + engine * 17) % 10;
  if (r < 2)
    return [
      { n: 0, ok: false },
      { n: 1, ok: true },
    ];
  if (r < 4)
    return [
      { n: 0, ok: true },
      { n: 1, ok: true },
    ];
  if (r === 4)
    return [
      { n: 0, ok: false },
      { n: 1, ok: false },
      { n: 2, ok: true },
    ];
  return [{ n: 0, ok: true }];
}

function writeParts(ctx: SimContext, url: string): void {
  const dir = join(ctx.lake, url.slice(ctx.root.length + 1));
  mkdirSync(dir, { recursive: true });
  for (let p = 0; p < 2; p++) writeFileSync(join(dir, `part-${p}.parquet`), `rows of ${url} part ${p}\n`);
}

/**
 * Injects transient deletion failures into the demo's filesystem store, standing in for S3
 * throttling (503 SlowDown) that a local filesystem never produces. The first `n` keys a pass
 * asks to delete fail every time until {@link FaultPlan.clear}: a pass retries a failed delete a
 * few times itself, so a fault that cleared on the next call would never reach the pending set
 * the demo is there to show.
 */
class FaultPlan {
  #budget = 0;
  readonly #failing = new Set<string>();
  failKeysDuringPass(n: number): void {
    this.#budget = n;
  }
  clear(): void {
    this.#budget = 0;
    this.#failing.clear();
  }
  wrap(store: ObjectStore): ObjectStore {
    return {
      rootUrl: store.rootUrl,
      list: (prefix, options) => store.list(prefix, options),
      put: (key, body, options) => store.put(key, body, options),
      get: (key) => store.get(key),
      deleteMany: async (keys) => {
        for (const key of keys) {
          if (this.#budget === 0) break;
          if (!this.#failing.has(key)) {
            this.#failing.add(key);
            this.#budget--;
          }
        }
        const failing = keys.filter((key) => this.#failing.has(key));
        if (failing.length === 0) return store.deleteMany(keys);
        const result = await store.deleteMany(keys.filter((key) => !this.#failing.has(key)));
        return {
          deleted: result.deleted,
          errors: [
            ...result.errors,
            ...failing.map((key) => ({
              key,
              code: "SlowDown",
              message: "Please reduce your request rate (injected by the demo)",
              transient: true,
            })),
          ],
        };
      },
    };
  }
}
