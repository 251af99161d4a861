import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import pg from "pg";
import {
  type BenchRow,
  benchJob,
  finishJob,
  fmt,
  isMain,
  loadNow,
  runInChild,
  SCALE,
  scaled,
} from "./support.js";

/*
 * The same phases from two or more checkouts, side by side in one run: BENCH_BEFORE=<an older
 * checkout> (its node_modules linked to this one's), any BENCH_ALSO checkouts, and this checkout
 * ("after"). Every phase of every checkout runs in a fresh child process on a fresh database, and
 * the rounds rotate which checkout goes first, so the load of a shared machine falls on all alike.
 * The table shows each checkout's median events/s over the rounds and after/<each other>, their
 * ratio (above 1: this checkout is faster).
 *
 * Phases, each the checkout's own code:
 * - replay: the checkout's bench/replay.ts run() (seed, then ledger.rebuild() and ledger.audit() in
 *   a fresh process); its rebuild and audit rows are kept.
 * - append: attempt reports through the ledger with its default inline projection — one report
 *   per call (`ledger.attemptStarted` + `ledger.attemptSucceeded`, 8 writers at once), and the
 *   publish bench's bulk seeding (`seedAttemptReports`: log.append of 100 reports per transaction
 *   with the ledger projection).
 * - publish: `ledger.publish(runId)` of one run of BENCH_PUBLISH_SHARDS shards (default 20,000,
 *   not scaled), seeded as bench/publish.ts seeds it (its `planAttempts`, `attemptEvents` and
 *   `seedAttemptReports`: ~2 attempt reports per shard, retries, duplicates, a few still running;
 *   `seedWithSnapshot` where the checkout has it: a run snapshot after 90% of the reports),
 *   then VACUUM ANALYZE + CHECKPOINT and a full GC, then the publish on a ledger of its own, end to
 *   end; its inline projection of the WinnerSelected events is timed on the side by wrapping the
 *   checkout's `ledgerProjection.apply`.
 *
 * Usage: BENCH_BEFORE=/tmp/wt-before [BENCH_ALSO=label=/tmp/wt-other,…] BENCH_SCALE=0.1 node
 * --openssl-legacy-provider --import tsx bench/before-after.ts [replay] [append] [publish]
 * (BENCH_ROUNDS, default 3).
 */

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? "3");
const SINGLE_SHARDS = scaled(10_000);
const BULK_SHARDS = scaled(50_000);
const BULK_BATCH = 100;
const PUBLISH_SHARDS = Number(process.env.BENCH_PUBLISH_SHARDS ?? "20000");
const PUBLISH_SEED_BATCH = 10_000;
const WRITERS = 8;
const SCHEMA = "shardledger";
const ACTOR = "bench-before-after";

/** "before", "after", or a BENCH_ALSO label. */
type Checkout = string;
interface Job {
  checkout: string;
  phase: string;
}
/** One child's figures: a label → events and seconds. */
type Figures = Record<string, { events: number; seconds: number }>;

const importFrom = <T>(checkout: string, file: string): Promise<T> =>
  import(pathToFileURL(path.join(checkout, file)).href) as Promise<T>;

async function replayPhase(checkout: string): Promise<Figures> {
  const { run } = await importFrom<{ run: () => Promise<{ rows: BenchRow[] }> }>(checkout, "bench/replay.ts");
  const report = await run();
  const out: Figures = {};
  for (const row of report.rows) {
    const phase = String(row.phase);
    if (phase === "ledger.rebuild()" || phase === "ledger.audit()") {
      out[phase] = { events: Number(row.events), seconds: Number(row.seconds) };
    }
  }
  return out;
}

interface LedgerLike {
  createDataset(input: { datasetId: string; root: string }): Promise<unknown>;
  startRun(input: { datasetId: string; numShards: number; runId: string }): Promise<unknown>;
  attemptStarted(input: { runId: string; shard: number; attempt: number; url: string }): Promise<unknown>;
  attemptSucceeded(input: { runId: string; shard: number; attempt: number; url: string }): Promise<unknown>;
  close(): Promise<void>;
}

async function appendPhase(checkout: string): Promise<Figures> {
  const support = await importFrom<typeof import("./support.js")>(checkout, "bench/support.ts");
  const { openLedger } = await importFrom<{ openLedger: (o: object) => Promise<LedgerLike> }>(
    checkout,
    "src/ledger/open-ledger.ts",
  );
  const publish = await importFrom<typeof import("./publish.js")>(checkout, "bench/publish.ts");
  const dir = await mkdtemp(path.join(os.tmpdir(), "shardledger-before-after-"));
  const root = `file://${dir}`;
  try {
    return await support.withBenchDatabase(async (url) => {
      const out: Figures = {};
      const ledger = await openLedger({
        database: url,
        schema: SCHEMA,
        actor: ACTOR,
        cleanupAfterPublish: false,
      });
      try {
        await ledger.createDataset({ datasetId: "sales", root });
        const runId = "run-single";
        await ledger.startRun({ datasetId: "sales", numShards: SINGLE_SHARDS, runId });
        let next = 0;
        const started = performance.now();
        await Promise.all(
          Array.from({ length: WRITERS }, async () => {
            for (let shard = next++; shard < SINGLE_SHARDS; shard = next++) {
              const report = {
                runId,
                shard,
                attempt: 0,
                url: `${root}/data/${runId}/shard=${shard}/attempt=00`,
              };
              await ledger.attemptStarted(report);
              await ledger.attemptSucceeded(report);
            }
          }),
        );
        out[`ledger.attemptStarted + attemptSucceeded, ${WRITERS} writers`] = {
          events: 2 * SINGLE_SHARDS,
          seconds: (performance.now() - started) / 1000,
        };
        await ledger.startRun({ datasetId: "sales", numShards: BULK_SHARDS, runId: "run-bulk" });
      } finally {
        await ledger.close();
      }
      const events = publish.attemptEvents(
        "run-bulk",
        publish.planAttempts("run-bulk", BULK_SHARDS, root),
        ACTOR,
      );
      const started = performance.now();
      await publish.seedAttemptReports(url, "run-bulk", events, BULK_BATCH);
      out[`log.append of ${BULK_BATCH} reports with the ledger projection`] = {
        events: events.length,
        seconds: (performance.now() - started) / 1000,
      };
      return out;
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

interface ProjectionLike {
  apply: (...args: unknown[]) => Promise<void>;
}

/** The checkout's ledger projection object, wherever its layout keeps it. */
async function projectionOf(checkout: string): Promise<ProjectionLike> {
  for (const file of ["src/adapters/postgres/projection-store.ts", "src/projections/ledger-projection.ts"]) {
    try {
      const m = await importFrom<{ ledgerProjection?: ProjectionLike }>(checkout, file);
      if (m.ledgerProjection) return m.ledgerProjection;
    } catch {
      // not in this checkout's layout
    }
  }
  throw new Error(`no ledgerProjection in ${checkout}`);
}

async function publishPhase(checkout: string): Promise<Figures> {
  const support = await importFrom<typeof import("./support.js")>(checkout, "bench/support.ts");
  const { openLedger } = await importFrom<{
    openLedger: (
      o: object,
    ) => Promise<LedgerLike & { publish(runId: string): Promise<{ winners: unknown[] }> }>;
  }>(checkout, "src/ledger/open-ledger.ts");
  const publish = await importFrom<typeof import("./publish.js")>(checkout, "bench/publish.ts");
  const projection = await projectionOf(checkout);
  const dir = await mkdtemp(path.join(os.tmpdir(), "shardledger-before-after-"));
  const root = `file://${dir}`;
  const runId = "run-publish";
  try {
    return await support.withBenchDatabase(async (url) => {
      const seeding = await openLedger({
        database: url,
        schema: SCHEMA,
        actor: ACTOR,
        cleanupAfterPublish: false,
      });
      try {
        await seeding.createDataset({ datasetId: "sales", root });
        await seeding.startRun({ datasetId: "sales", numShards: PUBLISH_SHARDS, runId });
      } finally {
        await seeding.close();
      }
      const events = publish.attemptEvents(runId, publish.planAttempts(runId, PUBLISH_SHARDS, root), ACTOR);
      // A checkout with run snapshots seeds as its ledger would have left the run: with a snapshot
      // of at least 90% of the stream (bench/publish.ts seedWithSnapshot).
      const seed = (publish as { seedWithSnapshot?: typeof publish.seedAttemptReports }).seedWithSnapshot;
      await (seed ?? publish.seedAttemptReports)(url, runId, events, PUBLISH_SEED_BATCH);
      const admin = new pg.Client({ connectionString: url });
      await admin.connect();
      try {
        await admin.query(`VACUUM ANALYZE ${SCHEMA}.events, ${SCHEMA}.attempt_records, ${SCHEMA}.runs`);
        await admin.query("CHECKPOINT");
      } finally {
        await admin.end();
      }
      (globalThis as { gc?: () => void }).gc?.();
      const ledger = await openLedger({
        database: url,
        schema: SCHEMA,
        actor: ACTOR,
        cleanupAfterPublish: false,
      });
      const original = projection.apply;
      let projectionMs = 0;
      projection.apply = async function (this: unknown, ...args: unknown[]) {
        const started = performance.now();
        try {
          return await original.apply(this, args);
        } finally {
          const batch = args[1] as { type: string }[];
          if (batch[0]?.type === "WinnerSelected") projectionMs += performance.now() - started;
        }
      };
      try {
        const started = performance.now();
        const result = await ledger.publish(runId);
        const seconds = (performance.now() - started) / 1000;
        if (result.winners.length !== PUBLISH_SHARDS)
          throw new Error(`publish chose ${result.winners.length} winners for ${PUBLISH_SHARDS} shards`);
        return {
          [`ledger.publish, ${PUBLISH_SHARDS} shards (${events.length} attempt reports), end to end`]: {
            events: events.length,
            seconds,
          },
          "· its inline projection of the WinnerSelected events": {
            events: events.length,
            seconds: projectionMs / 1000,
          },
        };
      } finally {
        projection.apply = original;
        await ledger.close();
      }
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

async function main(): Promise<void> {
  const before = process.env.BENCH_BEFORE;
  if (!before) throw new Error("BENCH_BEFORE must name the older checkout (with node_modules linked)");
  // BENCH_ALSO=label=path[,label=path…]: more checkouts in the same rounds (say, a commit between
  // before and after), each with its own columns and after/<label>.
  const also = (process.env.BENCH_ALSO ?? "")
    .split(",")
    .filter((x) => x.length > 0)
    .map((x) => {
      const eq = x.indexOf("=");
      if (eq <= 0) throw new Error(`BENCH_ALSO: ${x} is not label=path`);
      return [x.slice(0, eq), path.resolve(x.slice(eq + 1))] as const;
    });
  const checkouts = new Map<Checkout, string>([
    ["before", path.resolve(before)],
    ...also,
    ["after", path.resolve(fileURLToPath(new URL("..", import.meta.url)))],
  ]);
  const names = [...checkouts.keys()];
  const phases = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ["append", "replay"];
  console.log(
    `BENCH_SCALE=${SCALE}, ${ROUNDS} rounds, ${[...checkouts].map(([n, p]) => `${n}=${p}`).join(", ")}`,
  );
  console.log(`load at start ${loadNow()}`);
  // Per label and checkout, each round's seconds and events/s (replay seeds stop within a run's
  // events of the target, so the counts differ slightly between rounds and checkouts).
  const rounds = new Map<string, Map<Checkout, { seconds: number; rate: number; events: number }[]>>();
  for (let round = 0; round < ROUNDS; round++) {
    // Round r starts with checkout r (mod n) and goes on in order, reversed every other cycle, so
    // each checkout runs first, last and between as often as the rounds allow.
    const rotated = names.map((_, i) => names[(i + round) % names.length] as Checkout);
    const order = Math.floor(round / names.length) % 2 === 1 ? rotated.reverse() : rotated;
    for (const phase of phases) {
      for (const which of order) {
        const load = loadNow();
        const figures = await runInChild<Figures>(
          import.meta.url,
          { bench: "before-after", checkout: checkouts.get(which) as string, phase },
          [
            // --expose-gc: the publish starts after a full collection.
            "--expose-gc",
          ],
        );
        for (const [label, f] of Object.entries(figures)) {
          const entry = rounds.get(label) ?? new Map(names.map((n) => [n, []]));
          entry.get(which)?.push({ seconds: f.seconds, rate: f.events / f.seconds, events: f.events });
          rounds.set(label, entry);
          console.log(
            `round ${round + 1} ${which} ${label}: ${f.events} events in ${fmt(f.seconds)} s (load ${load})`,
          );
        }
      }
    }
  }
  console.log(`load at end ${loadNow()}\n`);
  const rows: BenchRow[] = [...rounds.entries()].map(([label, r]) => {
    const rate = (n: Checkout) => median((r.get(n) ?? []).map((x) => x.rate));
    const events = [...r.values()].flat().map((x) => x.events);
    const row: BenchRow = {
      phase: label,
      events:
        Math.min(...events) === Math.max(...events)
          ? (events[0] ?? 0)
          : `${Math.min(...events)}–${Math.max(...events)}`,
    };
    for (const n of names) row[`${n} events/s (median)`] = fmt(rate(n));
    for (const n of names.slice(0, -1)) row[`after/${n}`] = fmt(rate("after") / rate(n));
    for (const n of names) row[`${n} s per round`] = (r.get(n) ?? []).map((x) => fmt(x.seconds)).join(", ");
    return row;
  });
  const columns = Object.keys(rows[0] ?? {});
  console.log(`| ${columns.join(" | ")} |`);
  console.log(`| ${columns.map(() => "---").join(" | ")} |`);
  for (const r of rows) console.log(`| ${columns.map((c) => String(r[c])).join(" | ")} |`);
}

const job = benchJob<Job & { bench: string }>("before-after");
if (job) {
  const figures =
    job.phase === "replay"
      ? await replayPhase(job.checkout)
      : job.phase === "publish"
        ? await publishPhase(job.checkout)
        : await appendPhase(job.checkout);
  finishJob(figures);
} else if (isMain(import.meta.url)) {
  await main();
}
