import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import pg from "pg";
import { openLedger } from "../src/ledger/open-ledger.js";
import { attemptEvents, planAttempts, seedWithSnapshot } from "./publish.js";
import { benchJob, finishJob, fmt, isMain, runInChild, scaled, withBenchDatabase } from "./support.js";

/*
 * Publish of one big run by several checkouts, side by side in one run, each publish on an
 * identical database: the run is seeded once (this checkout's `seedWithSnapshot`: the attempt
 * reports of bench/publish.ts, with a run snapshot after 90% of them), then every round copies the
 * seeded database once per checkout (`CREATE DATABASE … TEMPLATE`) and runs `ledger.publish` of
 * each checkout's own code in a fresh process on its copy, rotating which checkout goes first. A
 * checkout without run snapshots ignores the `run_snapshots` table and folds the whole stream, as
 * it always did.
 *
 * Usage: BENCH_CHECKOUTS=previous=/work/wt-prev[,label=dir…] [BENCH_SCALE=1] [BENCH_ROUNDS=4] node
 * --openssl-legacy-provider --import tsx bench/publish-checkouts.ts (this checkout is "this").
 */

const SHARDS = scaled(100_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? "4");
const SCHEMA = "shardledger";
const RUN_ID = "2026-11-23T10.00-sales";
const ACTOR = "bench-publish-checkouts";

interface Job {
  checkout: string;
  url: string;
}
interface Outcome {
  seconds: number;
  closeSeconds: number;
  winners: number;
  load: number;
}

/** In a child: `ledger.publish` with the checkout's code on the given database. */
async function publishJob(job: Job): Promise<Outcome> {
  const { openLedger: open } = (await import(
    pathToFileURL(path.join(job.checkout, "src/ledger/open-ledger.ts")).href
  )) as { openLedger: typeof openLedger };
  const ledger = await open({
    database: job.url,
    schema: SCHEMA,
    actor: ACTOR,
    cleanupAfterPublish: false,
    // The copy was migrated by this checkout; an older one must not see a migration it lacks.
    migrate: false,
  });
  await ledger.dataset("sales");
  (globalThis as { gc?: () => void }).gc?.();
  const load = os.loadavg()[0] ?? 0;
  const started = performance.now();
  const result = await ledger.publish(RUN_ID);
  const seconds = (performance.now() - started) / 1000;
  const closing = performance.now();
  await ledger.close();
  return {
    seconds,
    closeSeconds: (performance.now() - closing) / 1000,
    winners: result.winners.length,
    load,
  };
}

async function main(): Promise<void> {
  const checkouts: [string, string][] = [
    ...(process.env.BENCH_CHECKOUTS ?? "")
      .split(",")
      .filter(Boolean)
      .map((s) => {
        const [label, dir] = s.split("=");
        return [label, dir] as [string, string];
      }),
    ["this", path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")],
  ];
  const dir = await mkdtemp(path.join(os.tmpdir(), "shardledger-publish-checkouts-"));
  const root = `file://${dir}`;
  const seconds = new Map<string, number[]>(checkouts.map(([l]) => [l, []]));
  console.log(
    `${SHARDS} shards, ${ROUNDS} rounds, checkouts ${checkouts.map(([l, d]) => `${l}=${d}`).join(", ")}`,
  );
  console.log(
    `load at start ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );
  try {
    await withBenchDatabase(async (url) => {
      // Seeded in a child of its own: this process then holds none of the ~200k events while the
      // publishes run (their garbage, collected here, took CPU from the first round's publish).
      await runInChild<true>(import.meta.url, { bench: "publish-checkouts-seed", url, root });
      const seeded = new URL(url).pathname.slice(1);
      const admin = new pg.Client({ connectionString: url });
      await admin.connect();
      await admin.query("VACUUM ANALYZE");
      await admin.query("CHECKPOINT");
      await admin.end();
      const server = new URL(url);
      server.pathname = "/postgres";
      const control = new pg.Client({ connectionString: server.toString() });
      await control.connect();
      try {
        for (let round = 1; round <= ROUNDS; round++) {
          const order = round % 2 === 1 ? checkouts : [...checkouts].reverse();
          for (const [label, checkout] of order) {
            const copy = `${seeded}_${label.replace(/\W/g, "_")}`;
            await control.query(`DROP DATABASE IF EXISTS ${copy} WITH (FORCE)`);
            await control.query(`CREATE DATABASE ${copy} TEMPLATE ${seeded}`);
            const copyUrl = new URL(url);
            copyUrl.pathname = `/${copy}`;
            try {
              const o = await runInChild<Outcome>(
                import.meta.url,
                { bench: "publish-checkouts", checkout, url: copyUrl.toString() },
                [
                  // --expose-gc: the publish starts after a full collection.
                  "--expose-gc",
                ],
              );
              if (o.winners !== SHARDS) throw new Error(`${label} chose ${o.winners} winners`);
              seconds.get(label)?.push(o.seconds);
              console.log(
                `round ${round} ${label}: publish ${fmt(o.seconds)} s (close ${fmt(o.closeSeconds)} s; load ${o.load.toFixed(2)})`,
              );
            } finally {
              await control.query(`DROP DATABASE IF EXISTS ${copy} WITH (FORCE)`);
            }
          }
        }
      } finally {
        await control.end();
      }
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  console.log(
    `load at end ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}\n`,
  );
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const mine = median(seconds.get("this") ?? []);
  console.log("| checkout | s per round | median s | this is faster by |");
  console.log("| --- | --- | ---: | ---: |");
  for (const [label] of checkouts) {
    const xs = seconds.get(label) ?? [];
    console.log(`| ${label} | ${xs.map(fmt).join(", ")} | ${fmt(median(xs))} | ${fmt(median(xs) / mine)}× |`);
  }
}

/** In a child: the dataset, the run and its attempt reports, on the database to copy from. */
async function seedJob(job: { url: string; root: string }): Promise<true> {
  const ledger = await openLedger({
    database: job.url,
    schema: SCHEMA,
    actor: ACTOR,
    cleanupAfterPublish: false,
  });
  try {
    await ledger.createDataset({ datasetId: "sales", root: job.root });
    await ledger.startRun({ datasetId: "sales", numShards: SHARDS, runId: RUN_ID });
  } finally {
    await ledger.close();
  }
  await seedWithSnapshot(
    job.url,
    RUN_ID,
    attemptEvents(RUN_ID, planAttempts(RUN_ID, SHARDS, job.root), ACTOR),
  );
  return true;
}

const job = benchJob<Job & { bench: string }>("publish-checkouts");
const seed = benchJob<{ bench: string; url: string; root: string }>("publish-checkouts-seed");
if (job) finishJob(await publishJob(job));
else if (seed) finishJob(await seedJob(seed));
else if (isMain(import.meta.url)) await main();
