import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { isConcurrencyError } from "../src/errors.js";
import { type Ledger, openLedger } from "../src/ledger/open-ledger.js";
import {
  type BenchReport,
  type BenchRow,
  combine,
  fmt,
  loadNow,
  type MachineFacts,
  type Measurement,
  machineFacts,
  measure,
  scaled,
  withBenchDatabase,
} from "./support.js";

/*
 * Attempt reports through the ledger's API (ledger.attemptSucceeded: read/fold the run, decide,
 * append with the inline projection) — the path every writer's report takes, and the bulk of a
 * run's events (see bench/capacity-sim.ts). For the capacity model (docs/scaling.md): how many
 * reports/s one server takes, and what one run stream's serialisation costs.
 *
 * Phases, interleaved in rounds so the machine's load hits them alike:
 * - 16 callers on 16 runs (one run each), one ledger (one process, one pool);
 * - 16 callers on ONE run, one ledger: the ledger queues a run's commands in process;
 * - 16 callers on ONE run spread over 4 ledgers (4 pools, as 4 processes would be): appends to the
 *   run stream conflict on its expected version and are decided again;
 * - 1 caller on one run: one report's latency without queueing.
 *
 * RUN_REPORTS_PHASES=<phase names separated by ";"> runs only those phases (e.g. "1 run, 4 ledgers"
 * for a before/after of the multi-process contender against another checkout, run alternately).
 */

const ROUNDS = 3;
const REPORTS = scaled(2_000);
const SHARDS = 100_000;
const SCHEMA = "reports";

type Phase = "16 runs, 1 ledger" | "1 run, 1 ledger" | "1 run, 4 ledgers" | "1 run, 1 caller";
const ONLY = process.env.RUN_REPORTS_PHASES?.split(";").map((p) => p.trim());
const runs = (phase: Phase) => ONLY === undefined || ONLY.includes(phase);

export async function run(): Promise<BenchReport> {
  const rows: BenchRow[] = [];
  let machine: MachineFacts | undefined;
  const notes: string[] = [];
  await withBenchDatabase(async (url) => {
    machine = await machineFacts(url);
    const dir = await mkdtemp(path.join(os.tmpdir(), "shardledger-bench-reports-"));
    const ledgers: Ledger[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        ledgers.push(
          await openLedger({
            database: url,
            schema: SCHEMA,
            actor: `bench-${i}`,
            cleanupAfterPublish: false,
            poolSize: 16,
            migrate: i === 0,
          }),
        );
      }
      const first = ledgers[0] as Ledger;
      await first.createDataset({ datasetId: "rep", root: `file://${dir}` });
      let runCount = 0;
      const newRun = async () => {
        const runId = `r${runCount++}`;
        await first.startRun({ datasetId: "rep", numShards: SHARDS, runId });
        return runId;
      };
      let task = 0;
      // Reports the ledger gave up on (CONCURRENCY after its 50 decide-again retries); the caller
      // sends them again, as a writer would.
      let refused = 0;
      const report = async (ledger: Ledger, runId: string, shard: number): Promise<number> => {
        const id = task++;
        const input = {
          runId,
          shard,
          attempt: 0,
          taskAttemptId: id,
          url: `file://${dir}/data/${runId}/shard=${shard}/attempt=0-${id}`,
        };
        for (;;) {
          try {
            await ledger.attemptSucceeded(input);
            return 1;
          } catch (e) {
            if (!isConcurrencyError(e)) throw e;
            refused++;
          }
        }
      };
      const refusedBy = new Map<Phase, number>();

      const results = new Map<Phase, Measurement[]>();
      const keep = (phase: Phase, m: Measurement) => {
        results.set(phase, [...(results.get(phase) ?? []), m]);
        refusedBy.set(phase, (refusedBy.get(phase) ?? 0) + refused);
        refused = 0;
      };
      const loads: string[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        loads.push(loadNow());
        if (runs("16 runs, 1 ledger")) {
          const own = await Promise.all(Array.from({ length: 16 }, newRun));
          keep(
            "16 runs, 1 ledger",
            await measure(16, REPORTS, (client, i) => report(first, own[client] as string, i)),
          );
        }
        if (runs("1 run, 1 ledger")) {
          const one = await newRun();
          keep("1 run, 1 ledger", await measure(16, REPORTS, (_c, i) => report(first, one, i)));
        }
        if (runs("1 run, 4 ledgers")) {
          const shared = await newRun();
          keep(
            "1 run, 4 ledgers",
            await measure(16, REPORTS, (client, i) => report(ledgers[client % 4] as Ledger, shared, i)),
          );
        }
        if (runs("1 run, 1 caller")) {
          const alone = await newRun();
          keep(
            "1 run, 1 caller",
            await measure(1, Math.ceil(REPORTS / 4), (_c, i) => report(first, alone, i)),
          );
        }
      }
      const reference = combine(results.get("16 runs, 1 ledger") ?? []).eventsPerSecond || Number.NaN;
      for (const [phase, ms] of results) {
        const m = combine(ms);
        rows.push({
          phase,
          reports: m.events,
          "reports/s": fmt(m.eventsPerSecond),
          "min–max per round": `${fmt(Math.min(...ms.map((x) => x.eventsPerSecond)))}–${fmt(Math.max(...ms.map((x) => x.eventsPerSecond)))}`,
          "p50 ms": fmt(m.p50Ms),
          "p99 ms": fmt(m.p99Ms),
          "× 16 runs": Number.isNaN(reference) ? "n/a" : fmt(m.eventsPerSecond / reference),
          "refused (CONCURRENCY), sent again": refusedBy.get(phase) ?? 0,
        });
      }
      notes.push(
        `${ROUNDS} interleaved rounds of ${REPORTS} AttemptSucceeded reports per phase (the single caller ${Math.ceil(REPORTS / 4)}), runs of ${SHARDS} shards, file:// root, default inline projection. Load (1/5/15 min) at each round's start: ${loads.join(" | ")}; at the end ${loadNow()}.`,
      );
    } finally {
      for (const l of ledgers) await l.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
  return { name: "run-reports", machine: machine as MachineFacts, rows, notes };
}
