import { sql } from "kysely";
import pg from "pg";
import { openDatabase } from "../src/adapters/postgres/database.js";
import { createPgEventLog } from "../src/adapters/postgres/pg-event-log.js";
import { createProjectionTables } from "../src/adapters/postgres/projection-schema.js";
import { applyLedgerEvents } from "../src/adapters/postgres/projection-store.js";
import { REPLAY_LIMITS } from "../src/adapters/postgres/replay-store.js";
import type { NewEvent } from "../src/events/envelope.js";
import { datasetStream, runStream } from "../src/events/streams.js";
import { openLedger } from "../src/ledger/open-ledger.js";
import { type SelectableAttempt, selectWinners } from "../src/machines/winner-selection.js";
import {
  type BenchReport,
  type BenchRow,
  benchJob,
  finishJob,
  fmt,
  isMain,
  loadNow,
  machineFacts,
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
 * Replay of a 1,000,000-event log: `ledger.rebuild()` and `ledger.audit()` timed in a fresh
 * process (so its RSS is the replay's, not the seeding's), with the SQL time split by statement
 * kind, then a profile of the pieces: reading the log raw (server scan, transfer, jsonb parsing)
 * and the same fold with other page sizes.
 */

const SCHEMA = "shardledger";
const TARGET_EVENTS = scaled(1_000_000);
const DATASETS = 4;
const SHARDS_PER_RUN = 50;
const KEEP_RUNS = 20;
const RATE_TARGET = 100_000;
const RSS_TARGET_MB = 300;
const RSS_SAMPLE_MS = 50;
const PROFILE_EVENTS = scaled(300_000);
const PROFILE_PAGES = [1_000, 5_000, 20_000];
const ACTOR = "bench-replay";

/** One run's events: its own stream's, and the pointer move for the dataset stream (if it published). */
interface RunPlan {
  runId: string;
  events: NewEvent[];
  published: boolean;
  manifestUrl: string;
}

/**
 * A run as a writer and the ledger record it: RunStarted, heartbeats, ≈150 attempt events for 50
 * shards (started + outcome; a quarter retried after a failure, a quarter with a speculative
 * duplicate), then one WinnerSelected naming the 50 winners (as publish records them since
 * WinnerSelected v2), ManifestPublished, RunSucceeded, and the loser cleanup
 * (CleanupPlanned + CleanupSucceeded, one in ten failing once first). One run in 25 is aborted by
 * its writer instead (RunFailed).
 */
function planRun(
  runId: string,
  datasetId: string,
  root: string,
  random: () => number,
  tid: { n: bigint },
): RunPlan {
  const meta = { metadata: { actor: ACTOR, correlationId: runId } };
  const e = (type: string, data: unknown): NewEvent => ({ type, data, ...meta });
  const events: NewEvent[] = [e("RunStarted", { runId, datasetId, numShards: SHARDS_PER_RUN })];
  const attempts: (SelectableAttempt & { url: string; taskAttemptId: string })[] = [];
  const url = (shard: number, attempt: number, t: string) =>
    `${root}/data/${runId}/shard=${String(shard).padStart(5, "0")}/attempt=${String(attempt).padStart(2, "0")}-${t}`;
  const report = (shard: number, attempt: number, outcome: "SUCCEEDED" | "FAILED") => {
    const taskAttemptId = (tid.n++).toString();
    const ref = { runId, shard, attempt, taskAttemptId, url: url(shard, attempt, taskAttemptId) };
    events.push(e("AttemptStarted", ref));
    if (events.length % 20 === 0) events.push(e("RunHeartbeat", { runId }));
    events.push(
      outcome === "SUCCEEDED"
        ? e("AttemptSucceeded", ref)
        : e("AttemptFailed", { ...ref, error: "java.lang.OutOfMemoryError: Java heap space" }),
    );
    attempts.push({ ...ref, outcome });
  };
  for (let shard = 0; shard < SHARDS_PER_RUN; shard++) {
    const r = random();
    if (r < 0.5) report(shard, 0, "SUCCEEDED");
    else if (r < 0.75) {
      report(shard, 0, "FAILED");
      report(shard, 1, "SUCCEEDED");
    } else {
      report(shard, 0, "SUCCEEDED");
      report(shard, 0, "SUCCEEDED");
    }
  }
  const manifestUrl = `${root}/manifests/${runId}.json`;
  if (random() < 0.04) {
    events.push(e("RunFailed", { runId, cause: "writer_abort", reason: "driver lost" }));
    return { runId, events, published: false, manifestUrl };
  }
  const { winners } = selectWinners(SHARDS_PER_RUN, attempts);
  events.push(
    e("WinnerSelected", {
      runId,
      winners: [...winners.values()].map((w) => ({
        shard: w.shard,
        attempt: w.attempt,
        taskAttemptId: w.taskAttemptId,
        url: w.url,
      })),
    }),
  );
  events.push(e("ManifestPublished", { runId, manifestUrl, createdAt: new Date().toISOString() }));
  events.push(e("RunSucceeded", { runId }));
  const winnerUrls = new Set([...winners.values()].map((w) => w.url));
  for (const a of attempts) {
    if (winnerUrls.has(a.url)) continue;
    events.push(e("CleanupPlanned", { runId, url: a.url, reason: "loser" }));
    if (random() < 0.1) {
      events.push(
        e("CleanupFailed", {
          runId,
          url: a.url,
          errorCode: "SlowDown",
          errorMessage: "Please reduce your request rate.",
          transient: true,
          tries: 1,
          exhausted: false,
          nextRetryAt: new Date(Date.now() + 30_000).toISOString(),
        }),
      );
    }
    events.push(e("CleanupSucceeded", { runId, url: a.url, deletedObjects: 4 }));
  }
  return { runId, events, published: true, manifestUrl };
}

/**
 * Seeds the log without projections (rebuild builds them): one append per run stream (its ~260
 * events), one per pointer move, a prune of each dataset's runs beyond the newest KEEP_RUNS, one
 * writer per dataset, all four at once so streams interleave in the log.
 */
async function seed(url: string): Promise<{ events: number; runs: number; seconds: number }> {
  const started = performance.now();
  const ledger = await openLedger({
    database: url,
    schema: SCHEMA,
    actor: ACTOR,
    cleanupAfterPublish: false,
  });
  const roots: string[] = [];
  try {
    for (let d = 0; d < DATASETS; d++) {
      const root = `s3://lake/warehouse/ds-${d}`;
      roots.push(root);
      await ledger.createDataset({ datasetId: `ds-${d}`, root, keepRuns: KEEP_RUNS });
    }
  } finally {
    await ledger.close();
  }
  const database = await openDatabase(url, { schema: SCHEMA, poolSize: DATASETS });
  let events = DATASETS;
  let runs = 0;
  try {
    const log = createPgEventLog({ db: database.db, schema: SCHEMA });
    const tid = { n: 4_611_686_018_427_387_904n };
    await Promise.all(
      roots.map(async (root, d) => {
        const datasetId = `ds-${d}`;
        const random = prng(1000 + d);
        const published: string[] = [];
        let previous: string | null = null;
        for (let i = 0; events < TARGET_EVENTS; i++) {
          const runId = `${datasetId}-run-${String(i).padStart(5, "0")}`;
          const plan = planRun(runId, datasetId, root, random, tid);
          await log.append(runStream(runId), plan.events, { expectedVersion: "no_stream" });
          events += plan.events.length;
          runs++;
          if (!plan.published) continue;
          await log.append(
            datasetStream(datasetId),
            [
              {
                type: "CurrentPointerMoved",
                data: {
                  datasetId,
                  runId,
                  manifestUrl: plan.manifestUrl,
                  previousRunId: previous,
                  reason: "publish",
                },
                metadata: { actor: ACTOR },
              },
            ],
            { expectedVersion: "any" },
          );
          events++;
          previous = runId;
          published.push(runId);
          if (published.length > KEEP_RUNS) {
            const old = published.shift() as string;
            await log.append(
              runStream(old),
              [
                {
                  type: "Pruned",
                  data: { runId: old, datasetId, reason: "keep_runs", attempts: 75, failedItems: 0 },
                  metadata: { actor: ACTOR },
                },
              ],
              { expectedVersion: "any" },
            );
            events++;
          }
        }
      }),
    );
  } finally {
    await database.close();
  }
  return { events, runs, seconds: (performance.now() - started) / 1000 };
}

interface Timed {
  label: string;
  events: number;
  seconds: number;
  peakRssMb: number;
  rssBeforeMb: number;
  load: string;
  sql: [string, { calls: number; ms: number; rows: number }][];
  sqlMs: number;
  serverMs: number;
  detail: string;
}

/**
 * Child process: rebuild, then audit, then a rebuild that folds every event (no skip of pruned
 * runs' history), each on a ledger of its own with RSS sampled every 50 ms,
 * its SQL by kind, and the server's execution time (read after the ledger disconnects).
 */
async function timedReplays(url: string): Promise<Timed[]> {
  const out: Timed[] = [];
  const measure = async (
    label: string,
    f: (ledger: Awaited<ReturnType<typeof openLedger>>) => Promise<{ events: number; detail: string }>,
  ) => {
    const timed = timedPool(url, 4);
    const ledger = await openLedger({ database: timed.pool, schema: SCHEMA, actor: ACTOR, migrate: false });
    let result: { events: number; detail: string };
    const serverBefore = await serverActiveMs(url);
    const load = loadNow();
    const rssBeforeMb = Math.round(process.memoryUsage.rss() / 2 ** 20);
    const rss = sampleRss(RSS_SAMPLE_MS);
    const started = performance.now();
    try {
      result = await f(ledger);
    } finally {
      await ledger.close();
      await timed.end();
    }
    const seconds = (performance.now() - started) / 1000;
    const peakRssMb = rss.stop();
    out.push({
      label,
      events: result.events,
      seconds,
      peakRssMb,
      rssBeforeMb,
      load,
      sql: [...timed.stats.byKind.entries()].sort((a, b) => b[1].ms - a[1].ms),
      sqlMs: timed.stats.totalMs(),
      serverMs: (await serverActiveMs(url)) - serverBefore,
      detail: result.detail,
    });
  };
  await measure("ledger.rebuild()", async (ledger) => {
    const r = await ledger.rebuild();
    return { events: r.events, detail: `projection version ${r.version}` };
  });
  await measure("ledger.audit()", async (ledger) => {
    const r = await ledger.audit();
    return { events: r.events, detail: `match ${r.match}, ${r.differences.length} differences` };
  });
  // The same rebuild folding every event, as for a log whose runs are never pruned: the replay's
  // general case, without the skip of pruned runs' history.
  await measure("ledger.rebuild(), every event folded", async (ledger) => {
    REPLAY_LIMITS.skipPrunedHistory = false;
    try {
      const r = await ledger.rebuild();
      return {
        events: r.events,
        detail: "pruned runs' history folded too (REPLAY_LIMITS.skipPrunedHistory off)",
      };
    } finally {
      REPLAY_LIMITS.skipPrunedHistory = true;
    }
  });
  return out;
}

/** Child process: reading the log raw, and the fold with other page sizes. */
async function profile(url: string, total: number): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const page = 5_000;
  const columns = "global_position, event_id, stream_id, stream_version, type, schema_version";
  const scan = async (label: string, select: string, wrap: (q: string) => string) => {
    const load = loadNow();
    const started = performance.now();
    let after = 0;
    let events = 0;
    for (;;) {
      const q = `SELECT ${select} FROM ${SCHEMA}.events WHERE global_position > $1 ORDER BY global_position LIMIT ${page}`;
      const { rows: got } = await client.query(wrap(q), [after]);
      const last = got.at(-1) as { last?: string; global_position?: string } | undefined;
      const n =
        got.length === 1 && "n" in (got[0] as object) ? Number((got[0] as { n: string }).n) : got.length;
      if (n === 0 || !last) break;
      events += n;
      after = Number(last.last ?? last.global_position);
    }
    const seconds = (performance.now() - started) / 1000;
    rows.push({
      phase: label,
      events,
      seconds: fmt(seconds),
      "events/s": fmt(events / seconds),
      detail: `pages of ${page}; load ${load}`,
    });
  };
  try {
    await scan(
      "profile: server scan only (page query wrapped in count(*), no jsonb output)",
      `${columns}, data, metadata, recorded_at`,
      (q) => `SELECT count(*) AS n, max(global_position) AS last FROM (${q}) p`,
    );
    await scan(
      "profile: + transfer, jsonb as text (no JSON.parse)",
      `${columns}, data::text AS data, metadata::text AS metadata, recorded_at`,
      (q) => q,
    );
    await scan(
      "profile: + pg parses jsonb (what readVisible gets)",
      `${columns}, data, metadata, recorded_at`,
      (q) => q,
    );
  } finally {
    await client.end();
  }

  // The fold itself with other page sizes, on the first PROFILE_EVENTS events, into a scratch schema.
  for (const size of PROFILE_PAGES) {
    const timed = timedPool(url, 2);
    const database = await openDatabase(timed.pool, { schema: SCHEMA });
    const scratch = `bench_profile_${size}`;
    try {
      const log = createPgEventLog({ db: database.db, schema: SCHEMA });
      await sql`CREATE SCHEMA ${sql.id(scratch)}`.execute(database.db);
      await createProjectionTables(database.db, scratch);
      timed.stats.reset();
      const load = loadNow();
      const rss = sampleRss(RSS_SAMPLE_MS);
      let readMs = 0;
      let applyMs = 0;
      let events = 0;
      const started = performance.now();
      await database.db
        .transaction()
        .setIsolationLevel("repeatable read")
        .execute(async (trx) => {
          let after = 0;
          while (events < Math.min(total, PROFILE_EVENTS)) {
            const t0 = performance.now();
            const pageEvents = await log.readVisible(trx, after, size);
            const t1 = performance.now();
            if (pageEvents.length === 0) break;
            await applyLedgerEvents(trx, scratch, pageEvents);
            applyMs += performance.now() - t1;
            readMs += t1 - t0;
            events += pageEvents.length;
            after = pageEvents.at(-1)?.globalPosition as number;
          }
        });
      const seconds = (performance.now() - started) / 1000;
      const by = (prefix: string) =>
        [...timed.stats.byKind.entries()]
          .filter(([k]) => k.startsWith(prefix))
          .reduce((a, [, s]) => a + s.ms, 0) / 1000;
      const applySql = by("projection");
      rows.push({
        phase: `profile: fold, pages of ${size}`,
        events,
        seconds: fmt(seconds),
        "events/s": fmt(events / seconds),
        "peak RSS MB": rss.stop(),
        detail:
          `read ${fmt(readMs / 1000)} s (SQL+parse ${fmt(by("read page"))} s); apply ${fmt(applyMs / 1000)} s ` +
          `(load SQL ${fmt(by("projection load"))} s, upsert/delete SQL ${fmt(applySql - by("projection load"))} s, ` +
          `JS ${fmt(applyMs / 1000 - applySql)} s); load ${load}`,
      });
    } finally {
      await sql`DROP SCHEMA IF EXISTS ${sql.id(scratch)} CASCADE`.execute(database.db).catch(() => {});
      await database.close();
      await timed.end();
    }
  }
  return rows;
}

export async function run(): Promise<BenchReport> {
  return withBenchDatabase(async (url) => {
    const machine = await machineFacts(url);
    const seeded = await seed(url);
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    let tableMb = 0;
    try {
      await admin.query(`VACUUM ANALYZE ${SCHEMA}.events`);
      await admin.query("CHECKPOINT");
      const { rows } = await admin.query<{ mb: string }>(
        `SELECT pg_total_relation_size('${SCHEMA}.events') / 1048576 AS mb`,
      );
      tableMb = Number(rows[0]?.mb ?? 0);
    } finally {
      await admin.end();
    }

    const replays = await runInChild<Timed[]>(import.meta.url, { bench: "replay", url });
    const rows: BenchRow[] = [];
    const notes: string[] = [];
    for (const t of replays) {
      const rate = t.events / t.seconds;
      rows.push({
        phase: t.label,
        events: t.events,
        seconds: fmt(t.seconds),
        "events/s": fmt(rate),
        "peak RSS MB": t.peakRssMb,
        detail:
          `${t.detail}; RSS before ${t.rssBeforeMb} MB; SQL round trips ${fmt(t.sqlMs / 1000)} s (server executing ${fmt(t.serverMs / 1000)} s), JS ${fmt(t.seconds - t.sqlMs / 1000)} s; ` +
          `load ${t.load}; ≥ ${RATE_TARGET}/s ${rate >= RATE_TARGET ? "pass" : "MISS"}, ` +
          `< ${RSS_TARGET_MB} MB ${t.peakRssMb < RSS_TARGET_MB ? "pass" : "MISS"}`,
      });
      notes.push(
        `${t.label} SQL by kind (client-side round trips incl. pg row parsing): ${t.sql
          .slice(0, 8)
          .map(([k, s]) => `${k} ${fmt(s.ms / 1000)} s/${s.calls}`)
          .join("; ")}.`,
      );
    }
    rows.push(
      ...(await runInChild<BenchRow[]>(import.meta.url, {
        bench: "replay-profile",
        url,
        total: seeded.events,
      })),
    );
    notes.unshift(
      `Seeded ${seeded.events} events (${seeded.runs} runs of ${SHARDS_PER_RUN} shards over ${DATASETS} datasets, ` +
        `runs beyond the newest ${KEEP_RUNS} per dataset pruned) in ${fmt(seeded.seconds)} s, one append per run ` +
        `stream, no projections; events table ${tableMb} MB; VACUUM ANALYZE + CHECKPOINT before timing. ` +
        "rebuild and audit run in a fresh child process (RSS sampled every 50 ms is that process's); " +
        "profile rows read the log with raw pg and replay a prefix with the projection code itself.",
    );
    return { name: "replay", machine, rows, notes };
  });
}

const job = benchJob<{ bench: string; url: string; total?: number }>("replay");
const profileJob = benchJob<{ bench: string; url: string; total: number }>("replay-profile");
if (job) finishJob(await timedReplays(job.url));
else if (profileJob) finishJob(await profile(profileJob.url, profileJob.total));
else if (isMain(import.meta.url)) printReport(await run());
