import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openDatabase } from "../src/adapters/postgres/database.js";
import { createPgEventLog } from "../src/adapters/postgres/pg-event-log.js";
import { ledgerProjection } from "../src/adapters/postgres/projection-store.js";
import type { NewEvent } from "../src/events/envelope.js";
import { runStream } from "../src/events/streams.js";
import { openLedger } from "../src/ledger/open-ledger.js";
import {
  type BenchReport,
  type BenchRow,
  fmt,
  isMain,
  loadNow,
  machineFacts,
  printReport,
  scaled,
  withBenchDatabase,
} from "./support.js";

/*
 * Archiving one pruned run of N shards (issue 16 item 1): the time `archive` takes to write its
 * stream to the filesystem store (content, marker, read-back verification) and move it out of the
 * hot log in one transaction, then reading it back through the archive (`events --stream`) and a
 * deep audit of it. The run is written with one append per 1,000 attempt reports, failed, and
 * pruned by gc past its failed-retention floor.
 */

const SCHEMA = "shardledger";
const SIZES = [scaled(1_000), scaled(10_000), scaled(50_000)];
const DAY = 86_400_000;

export async function run(): Promise<BenchReport> {
  return withBenchDatabase(async (url) => {
    const machine = await machineFacts(url);
    const rows: BenchRow[] = [];
    for (const shards of SIZES) rows.push(await archiveOne(url, shards));
    return {
      name: "archive",
      machine,
      rows,
      notes: [
        `started ${loadNow()}; one run per size, filesystem store on local disk; a run of N shards has about N + 5 events (RunStarted, N AttemptSucceeded, RunFailed, gc's cleanup of its data area, Pruned)`,
      ],
    };
  });
}

async function archiveOne(url: string, shards: number): Promise<BenchRow> {
  let now = Date.parse("2026-01-01T00:00:00Z");
  const clock = () => new Date(now);
  const dir = mkdtempSync(join(tmpdir(), "shardledger-bench-archive-"));
  const schema = `${SCHEMA}_a${shards}`;
  const ledger = await openLedger({ database: url, schema, clock });
  const database = await openDatabase(url, { schema });
  try {
    const log = createPgEventLog({ db: database.db, schema, projections: [ledgerProjection], clock });
    await ledger.createDataset({ datasetId: "ds", root: `file://${dir}`, safetyWindow: "0s" });
    const runId = `r${shards}`;
    await ledger.startRun({ datasetId: "ds", numShards: shards, runId });
    let version = 1;
    for (let from = 0; from < shards; from += 1000) {
      const batch: NewEvent[] = [];
      for (let shard = from; shard < Math.min(shards, from + 1000); shard++) {
        batch.push({
          type: "AttemptSucceeded",
          data: {
            runId,
            shard,
            attempt: 0,
            taskAttemptId: null,
            url: `file://${dir}/data/${runId}/shard=${String(shard).padStart(5, "0")}/attempt=00`,
          },
        });
      }
      const { nextExpectedVersion } = await log.append(runStream(runId), batch, { expectedVersion: version });
      version = nextExpectedVersion;
    }
    await ledger.failRun(runId, "bench");
    now += 8 * DAY;
    await ledger.gc("ds");

    const t0 = performance.now();
    const report = await ledger.archive({ datasetId: "ds", after: "0s" });
    const archiveMs = performance.now() - t0;
    const events = report.archived[0]?.events;
    if (report.archived.length !== 1 || events === undefined)
      throw new Error(`archive: ${JSON.stringify(report)}`);
    const t1 = performance.now();
    const back = await ledger.events({ stream: runId, limit: shards + 10 });
    const readMs = performance.now() - t1;
    if (back.length !== events) throw new Error(`read ${back.length} of ${events}`);
    const t2 = performance.now();
    const audit = await ledger.audit({ deep: true });
    const auditMs = performance.now() - t2;
    if (!audit.match) throw new Error("audit after archive does not match");
    return {
      shards,
      events,
      "archive ms": fmt(archiveMs),
      "archived events/s": fmt((events / archiveMs) * 1000),
      "read-through ms": fmt(readMs),
      "deep audit ms": fmt(auditMs),
    };
  } finally {
    await ledger.close();
    await database.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (isMain(import.meta.url)) printReport(await run());
