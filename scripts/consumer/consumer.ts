// A small program a user of the package writes, compiled by scripts/check-consumer.sh against the
// packed tarball (skipLibCheck: false). It is never run: the point is that the published types
// name real things and carry their shapes (nothing here may silently become `any`).
import {
  type CleanupReport,
  createPgEventLog,
  type EventLog,
  errorBody,
  isNotFoundError,
  isShardCoverageError,
  isShardledgerError,
  isValidationError,
  type Ledger,
  migrateToLatest,
  NotFoundError,
  openDatabase,
  openLedger,
  type PublishResult,
  type RunView,
  type ShardledgerError,
} from "shardledger";

export async function nightlyExport(): Promise<void> {
  const ledger: Ledger = await openLedger({ database: "pglite:memory", actor: "nightly-export" });
  try {
    await ledger.createDataset({ datasetId: "events", root: "file:///tmp/events" });
    const { runId } = await ledger.startRun({ datasetId: "events", numShards: 1 });
    await ledger.attemptSucceeded({
      runId,
      shard: 0,
      attempt: 0,
      url: `file:///tmp/events/data/${runId}/shard=00000/attempt=00`,
    });
    const published: PublishResult = await ledger.publish(runId);
    const winnerUrls: (string | null)[] = published.winners.map((w) => w.url);
    const runs: RunView[] = await ledger.runs("events");
    const newest: string | undefined = runs[0]?.runId;
    const report: CleanupReport = await ledger.cleanup({ datasetId: "events", dryRun: true });
    const planned: number = report.planned.length;
    console.log(winnerUrls, newest, planned);
  } catch (e) {
    if (isShardCoverageError(e)) console.error(e.missingShards.join(","));
    else if (isValidationError(e)) console.error(e.field);
    else if (isNotFoundError(e)) console.error(e.kind, e.id);
    else if (isShardledgerError(e)) console.error(e.code, errorBody(e).error.message);
    else throw e;
  } finally {
    await ledger.close();
  }
  const notFound: ShardledgerError = new NotFoundError("run", "r1");
  console.log(notFound.code);
}

export async function rawLog(): Promise<number> {
  const database = await openDatabase("pglite:memory");
  await migrateToLatest(database.db, database.schema);
  const log: EventLog = createPgEventLog({ db: database.db, schema: database.schema });
  const result = await log.append("run-r1", [{ type: "RunHeartbeat", data: { runId: "r1" } }], {
    expectedVersion: "any",
  });
  await database.close();
  return result.nextExpectedVersion;
}
