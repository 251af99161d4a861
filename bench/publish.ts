import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { openObjectStore } from "../src/adapters/objectstore/open-object-store.js";
import { openDatabase, type PostgresPoolLike } from "../src/adapters/postgres/database.js";
import { createPgEventLog, PgEventLog } from "../src/adapters/postgres/pg-event-log.js";
import { ledgerProjection } from "../src/adapters/postgres/projection-store.js";
import { WINNERS_PER_EVENT } from "../src/events/catalogue.js";
import type { NewEvent } from "../src/events/envelope.js";
import { EventCatalogue } from "../src/events/event-catalogue.js";
import type { EventLog } from "../src/events/event-log.js";
import { runStream } from "../src/events/streams.js";
import { openLedger } from "../src/ledger/open-ledger.js";
import { RunExecutor } from "../src/ledger/run-executor.js";
import { attemptEventId } from "../src/machines/run-commands.js";
import {
  type AttemptOutcome,
  type SelectableAttempt,
  selectWinners,
} from "../src/machines/winner-selection.js";
import { manifestKey } from "../src/storage/object-layout.js";
import type { ObjectStore } from "../src/storage/object-store.js";
import {
  type BenchReport,
  type BenchRow,
  benchJob,
  finishJob,
  fmt,
  isMain,
  loadNow,
  type MachineFacts,
  machineFacts,
  Probes,
  printReport,
  prng,
  runInChild,
  sampleRss,
  scaled,
  serverActiveMs,
  timedPool,
  withBenchDatabase,
} from "./support.js";

/*
 * Publish of one big run: 100,000 shards with 1–3 attempts each (≈200,000 attempt events, seeded
 * in big batches straight through the event log and its inline projection), then
 * `ledger.publish(runId)` end to end, with a breakdown taken by wrapping the ledger's own classes
 * (nothing in src/ changes). Then `selectWinners` alone on 10k, 100k and 1M attempts.
 */

const SCHEMA = "shardledger";
const SHARDS = scaled(100_000);
const SEED_BATCH = 10_000;
const PUBLISH_TARGET_S = 3;
const SELECT_SIZES = [10_000, 100_000, 1_000_000].map(scaled);
const SELECT_REPS = 5;
const RUN_ID = "2026-11-23T10.00-sales";
const DATASET = "sales";
const ACTOR = "bench-publish";

// ---------------------------------------------------------------------------------------------
// The workload.

export interface PlannedAttempt extends SelectableAttempt {
  readonly taskAttemptId: string;
  readonly url: string;
  /** The "round" it is reported in: 0 for first attempts, 1 for retries and duplicates, 2 … */
  readonly round: number;
}

const pad = (n: number, width: number) => String(n).padStart(width, "0");

/**
 * 1–3 attempts per shard, ≈2 on average, every shard with at least one success: 30% a single
 * success; 25% a failure then a retry; 15% a speculative duplicate (two successes of attempt 0);
 * 10% two failures then a success; 10% a failure then a success and its speculative duplicate;
 * 10% a success, a duplicate still running (AttemptStarted only) and a failed duplicate.
 */
export function planAttempts(
  runId: string,
  numShards: number,
  root: string,
  seed = 20261123,
): PlannedAttempt[] {
  const random = prng(seed);
  let tid = 9_007_199_254_740_993n;
  const out: PlannedAttempt[] = [];
  for (let shard = 0; shard < numShards; shard++) {
    const r = random();
    const shape: [attempt: number, outcome: AttemptOutcome][] =
      r < 0.3
        ? [[0, "SUCCEEDED"]]
        : r < 0.55
          ? [
              [0, "FAILED"],
              [1, "SUCCEEDED"],
            ]
          : r < 0.7
            ? [
                [0, "SUCCEEDED"],
                [0, "SUCCEEDED"],
              ]
            : r < 0.8
              ? [
                  [0, "FAILED"],
                  [1, "FAILED"],
                  [2, "SUCCEEDED"],
                ]
              : r < 0.9
                ? [
                    [0, "FAILED"],
                    [1, "SUCCEEDED"],
                    [1, "SUCCEEDED"],
                  ]
                : [
                    [0, "SUCCEEDED"],
                    [0, "STARTED"],
                    [0, "FAILED"],
                  ];
    shape.forEach(([attempt, outcome], round) => {
      const taskAttemptId = (tid++).toString();
      out.push({
        shard,
        attempt,
        taskAttemptId,
        url: `${root}/data/${runId}/shard=${pad(shard, 5)}/attempt=${pad(attempt, 2)}-${taskAttemptId}`,
        outcome,
        round,
      });
    });
  }
  return out;
}

/** The attempt reports as the ledger would record them (same event ids), in report order. */
export function attemptEvents(runId: string, attempts: readonly PlannedAttempt[], actor: string): NewEvent[] {
  const ordered = [...attempts].sort((a, b) => a.round - b.round || a.shard - b.shard);
  return ordered.map((a) => {
    const data = { runId, shard: a.shard, attempt: a.attempt, taskAttemptId: a.taskAttemptId, url: a.url };
    const type =
      a.outcome === "SUCCEEDED"
        ? "AttemptSucceeded"
        : a.outcome === "FAILED"
          ? "AttemptFailed"
          : "AttemptStarted";
    return {
      eventId: attemptEventId(runId, a.shard, a.attempt, a.taskAttemptId, a.outcome),
      type,
      data: a.outcome === "FAILED" ? { ...data, error: "ExecutorLostFailure (executor 17 exited)" } : data,
      metadata: { actor },
    };
  });
}

/** Appends `events` to one stream in batches of `batch` (one transaction each). */
export async function appendInBatches(
  log: EventLog,
  stream: string,
  events: readonly NewEvent[],
  batch: number,
): Promise<void> {
  for (let i = 0; i < events.length; i += batch) {
    await log.append(stream, events.slice(i, i + batch), { expectedVersion: "any" });
  }
}

/**
 * Seeds a started run's attempt reports in bulk through an event log of its own (with the ledger
 * projection, so the projection tables are what the reports one by one would have made).
 */
export async function seedAttemptReports(
  url: string | PostgresPoolLike,
  runId: string,
  events: readonly NewEvent[],
  batch = SEED_BATCH,
): Promise<void> {
  const database = await openDatabase(url, { schema: SCHEMA, poolSize: 2 });
  try {
    const log = createPgEventLog({ db: database.db, schema: SCHEMA, projections: [ledgerProjection] });
    await appendInBatches(log, runStream(runId), events, batch);
  } finally {
    await database.close();
  }
}

/**
 * Seeds as {@link seedAttemptReports}, with the run snapshot the ledger would have taken on the
 * way: reports recorded through the ledger snapshot their run each time its stream grew by a
 * tenth (see RunExecutor), so at any time a snapshot covers at least ~90% of the stream. Seeds
 * 90% of the reports, lets a ledger load the run (which snapshots it, at close at the latest),
 * then seeds the rest: the publish reads the snapshot and a tail of ~10%, the worst case.
 */
export async function seedWithSnapshot(
  url: string,
  runId: string,
  events: readonly NewEvent[],
  batch = SEED_BATCH,
): Promise<void> {
  const cut = Math.ceil(events.length * 0.9);
  await seedAttemptReports(url, runId, events.slice(0, cut), batch);
  const ledger = await openLedger({
    database: url,
    schema: SCHEMA,
    actor: ACTOR,
    cleanupAfterPublish: false,
  });
  try {
    await (ledger as unknown as { loadRunState(runId: string): Promise<unknown> }).loadRunState(runId);
  } finally {
    await ledger.close();
  }
  await seedAttemptReports(url, runId, events.slice(cut), batch);
}

/** An object store that times its operations. */
function timedStore(store: ObjectStore, probes: Probes): ObjectStore {
  const time = async <T>(label: string, f: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    try {
      return await f();
    } finally {
      probes.add(label, performance.now() - started);
    }
  };
  return {
    rootUrl: store.rootUrl,
    list: (prefix, options) => time("store list", () => store.list(prefix, options)),
    deleteMany: (keys) => time("store deleteMany", () => store.deleteMany(keys)),
    put: (key, body, options) =>
      time(key.startsWith("manifests/") ? "store put manifest" : "store put _CURRENT", () =>
        store.put(key, body, options),
      ),
    get: (key) => time("store get", () => store.get(key)),
  };
}

// ---------------------------------------------------------------------------------------------

interface PublishOutcome {
  ok: boolean;
  seconds: number;
  peakRssMb: number;
  rssBeforeMb: number;
  load: number;
  rows: BenchRow[];
  notes: string[];
  error?: string;
}

/**
 * `ledger.publish(runId)` of the seeded run on a ledger of its own, with probes on the ledger's
 * classes. Never throws for a failed publish: the outcome says what happened.
 */
async function timedPublish(url: string, dir: string, label: string): Promise<PublishOutcome> {
  const before = { ms: 0 };
  const outcome = await timedPublishOnce(url, dir, label, before);
  // Read after the ledger disconnected (sessions report their statistics then).
  const serverMs = (await serverActiveMs(url)) - before.ms;
  const first = outcome.rows[0];
  if (first) first.detail = `${first.detail}; server executing ${fmt(serverMs / 1000)} s`;
  return outcome;
}

async function timedPublishOnce(
  url: string,
  dir: string,
  label: string,
  serverBefore: { ms: number },
): Promise<PublishOutcome> {
  const root = `file://${dir}`;
  const timed = timedPool(url, 10);
  const probes = new Probes();
  const ledger = await openLedger({
    database: timed.pool,
    schema: SCHEMA,
    actor: ACTOR,
    cleanupAfterPublish: false,
    objectStore: (r) => timedStore(openObjectStore(r), probes),
  });
  try {
    probes.wrap(RunExecutor.prototype, "load", () => "executor.load (read stream + fold)");
    probes.wrap(RunExecutor.prototype, "execute", (a) => `execute ${(a[0] as { type: string }).type}`);
    probes.wrap(
      PgEventLog.prototype,
      "append",
      (a) => `append ${(a[1] as NewEvent[])[0]?.type ?? "?"}`,
      (a) => (a[1] as NewEvent[]).length,
    );
    probes.wrap(PgEventLog.prototype, "readStream", () => "readStream");
    probes.wrap(EventCatalogue.prototype, "validate", () => "catalogue.validate (zod)");
    probes.wrap(
      ledgerProjection as unknown as { apply: unknown },
      "apply",
      (a) => `projection ${(a[1] as NewEvent[])[0]?.type ?? "?"}`,
      (a) => (a[1] as NewEvent[]).length,
    );
    timed.stats.reset();
    serverBefore.ms = await serverActiveMs(url);
    const load = os.loadavg()[0] ?? 0;
    const rssBeforeMb = Math.round(process.memoryUsage.rss() / 2 ** 20);
    const rss = sampleRss();
    const started = performance.now();
    let error: unknown = null;
    let winners = 0;
    try {
      winners = (await ledger.publish(RUN_ID)).winners.length;
    } catch (e) {
      error = e;
    } finally {
      probes.restore();
    }
    const seconds = (performance.now() - started) / 1000;
    const peakRssMb = rss.stop();
    const ms = (l: string) => probes.get(l);
    const sql = [...timed.stats.byKind.entries()].sort((a, b) => b[1].ms - a[1].ms).slice(0, 6);
    const sqlNote = `SQL round trips (${label}; client-side, incl. pg row parsing): ${sql
      .map(([k, s]) => `${k} ${fmt(s.ms / 1000)} s/${s.calls}`)
      .join("; ")}.`;
    if (error !== null) {
      const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      const where =
        error instanceof Error
          ? (error.stack
              ?.split("\n")
              .find((l) => l.includes("/src/"))
              ?.trim() ?? "")
          : "";
      return {
        ok: false,
        seconds,
        peakRssMb,
        rssBeforeMb,
        load,
        rows: [
          {
            phase: `publish ${SHARDS} shards (${label})`,
            seconds: fmt(seconds),
            share: "",
            detail: `FAILED after ${fmt(seconds)} s: ${message} ${where}; peak RSS ${peakRssMb} MB; load ${load.toFixed(2)}`,
          },
        ],
        notes: [sqlNote],
        error: message,
      };
    }

    // The publish did what it says: the manifest names the expected winner of every shard.
    const expected = selectWinners(SHARDS, planAttempts(RUN_ID, SHARDS, root));
    const body = readFileSync(path.join(dir, manifestKey(RUN_ID)), "utf8");
    const manifest = JSON.parse(body) as { winners: { shard: number; taskAttemptId: string }[] };
    const wrong = manifest.winners.filter(
      (w) => expected.winners.get(w.shard)?.taskAttemptId !== w.taskAttemptId,
    ).length;
    if (winners !== SHARDS || manifest.winners.length !== SHARDS || wrong > 0) {
      throw new Error(`publish produced ${manifest.winners.length} winners, ${wrong} not the expected ones`);
    }

    const total = seconds * 1000;
    const select = ms("execute selectWinners");
    const winnersAppend = ms("append WinnerSelected");
    const projection = ms("projection WinnerSelected");
    const manifestPut = ms("store put manifest");
    const firstLoad = ms("executor.load (read stream + fold)");
    const later =
      ms("execute recordManifest") + ms("execute markSucceeded") + ms("append CurrentPointerMoved");
    const pointer = ms("store put _CURRENT") + ms("store get");
    const part = (phase: string, v: number, detail: string): BenchRow => ({
      phase,
      seconds: fmt(v / 1000),
      share: `${Math.round((v / total) * 100)}%`,
      detail,
    });
    return {
      ok: true,
      seconds,
      peakRssMb,
      rssBeforeMb,
      load,
      rows: [
        {
          phase: `publish ${SHARDS} shards, end to end (${label})`,
          seconds: fmt(seconds),
          share: "100%",
          detail:
            `peak RSS ${peakRssMb} MB (${rssBeforeMb} MB before); load ${load.toFixed(2)}; ` +
            `target < ${PUBLISH_TARGET_S} s ${seconds < PUBLISH_TARGET_S ? "pass" : "MISS"}`,
        },
        part(
          "· load run state",
          firstLoad,
          `readStream (the tail after the snapshot) ${fmt(ms("readStream") / 1000)} s, the rest reading and restoring the snapshot and the fold`,
        ),
        part(
          "· select winners + decide",
          select - winnersAppend,
          `selectWinners and ${Math.ceil(SHARDS / WINNERS_PER_EVENT)} WinnerSelected events of ≤ ${WINNERS_PER_EVENT} winners`,
        ),
        part(
          "· append WinnerSelected (log)",
          winnersAppend - projection,
          `zod validation ${fmt(ms("catalogue.validate (zod)") / 1000)} s, duplicate check, insert`,
        ),
        part(
          "· inline projection",
          projection,
          "fold, upsert winners, the run row and every attempt row of the run (status stored by the fold)",
        ),
        part("· manifest put", manifestPut, `${Math.round(body.length / 1024)} KB JSON on the file:// store`),
        part("· manifest/succeeded/pointer events", later + pointer, "three small appends, _CURRENT put"),
        part(
          "· other (locks, manifest JSON, lookups)",
          total - firstLoad - select - manifestPut - later - pointer,
          "",
        ),
      ],
      notes: [sqlNote],
    };
  } finally {
    await ledger.close();
    await timed.end();
  }
}

export async function run(): Promise<BenchReport> {
  const rows: BenchRow[] = [];
  const notes: string[] = [];
  let machine: MachineFacts | undefined;
  await withBenchDatabase(async (url) => {
    machine = await machineFacts(url);
    const dir = await mkdtemp(path.join(os.tmpdir(), "shardledger-bench-publish-"));
    try {
      const root = `file://${dir}`;
      const ledger = await openLedger({
        database: url,
        schema: SCHEMA,
        actor: ACTOR,
        cleanupAfterPublish: false,
      });
      let seeded = 0;
      const seedStarted = performance.now();
      try {
        await ledger.createDataset({ datasetId: DATASET, root });
        await ledger.startRun({ datasetId: DATASET, numShards: SHARDS, runId: RUN_ID });
        const events = attemptEvents(RUN_ID, planAttempts(RUN_ID, SHARDS, root), ACTOR);
        seeded = events.length;
        await seedWithSnapshot(url, RUN_ID, events);
      } finally {
        await ledger.close();
      }
      const seedSeconds = (performance.now() - seedStarted) / 1000;
      const admin = new pg.Client({ connectionString: url });
      await admin.connect();
      try {
        // The steady state a real run reaches (autovacuum analyses tables this size), and no dirty
        // pages of the seeding left for the publish to flush.
        await admin.query(`VACUUM ANALYZE ${SCHEMA}.events, ${SCHEMA}.attempt_records, ${SCHEMA}.runs`);
        await admin.query("CHECKPOINT");
      } finally {
        await admin.end();
      }
      notes.push(
        `Seeded ${seeded} attempt reports (${SHARDS} shards) in ${fmt(seedSeconds)} s: appends of ${SEED_BATCH} ` +
          "events through the event log with the ledger projection, a run snapshot after 90% of them (seedWithSnapshot), " +
          "then VACUUM ANALYZE + CHECKPOINT. Phases " +
          "(·) are timed by wrapping RunExecutor/PgEventLog/EventCatalogue methods, the projection's apply and " +
          "the object store; cleanup after publish disabled.",
      );

      const shipped = await runInChild<PublishOutcome>(import.meta.url, {
        bench: "publish",
        url,
        dir,
        label: "as shipped",
      });
      rows.push(...shipped.rows);
      notes.push(...shipped.notes);
      if (!shipped.ok) {
        // A failed publish appended nothing (its transaction rolled back), so it can be repeated.
        // With a bigger stack the same code gets past a too-large spread: that times what publish
        // would cost once the spread is fixed. (3900 KB stays well inside the 8 MB thread stack.)
        const retried = await runInChild<PublishOutcome>(
          import.meta.url,
          { bench: "publish", url, dir, label: "--stack-size=3900" },
          ["--stack-size=3900"],
        );
        rows.push(...retried.rows);
        notes.push(...retried.notes);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  // selectWinners alone (no database).
  for (const size of SELECT_SIZES) {
    const numShards = Math.max(1, Math.round(size / 2));
    let attempts = planAttempts("r-select", numShards, "s3://lake/sales", 7);
    while (attempts.length < size) attempts = attempts.concat(attempts.slice(0, size - attempts.length));
    attempts = attempts.slice(0, size);
    selectWinners(numShards, attempts); // warm-up
    const times: number[] = [];
    const rss = sampleRss();
    const reps = Math.max(SELECT_REPS, Math.ceil(2_000_000 / size));
    for (let i = 0; i < reps; i++) {
      const started = performance.now();
      selectWinners(numShards, attempts);
      times.push(performance.now() - started);
    }
    const peak = rss.stop();
    times.sort((a, b) => a - b);
    const median = times[Math.floor(times.length / 2)] ?? 0;
    rows.push({
      phase: `selectWinners, ${size} attempts / ${numShards} shards`,
      seconds: fmt(median / 1000),
      share: "",
      detail: `${fmt(size / (median / 1000))} attempts/s (median of ${reps}); RSS ${peak} MB; load ${loadNow()}`,
    });
  }
  notes.push(
    "selectWinners rows: in-process, no database, median of ≥ 5 runs (≥ 2M attempts in all) after a warm-up, canonical decimal " +
      "taskAttemptIds and s3:// urls (the string comparison path).",
  );
  return { name: "publish", machine: machine as MachineFacts, rows, notes };
}

const job = benchJob<{ bench: "publish"; url: string; dir: string; label: string }>("publish");
if (job) finishJob(await timedPublish(job.url, job.dir, job.label));
else if (isMain(import.meta.url)) printReport(await run());
