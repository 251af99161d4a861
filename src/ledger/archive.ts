import type { ArchiveCommit, HotLogArchive, PrunedRun } from "../adapters/postgres/archive-queries.js";
import type { Database } from "../adapters/postgres/database.js";
import { withDatasetLock } from "../adapters/postgres/dataset-lock.js";
import { type MaintenanceLease, withMaintenanceLease } from "../adapters/postgres/maintenance-lease.js";
import type { ProjectionQueries } from "../adapters/postgres/projection-queries.js";
import { ArchiveError, isLeaseLostError, isLockedError, isShardledgerError } from "../errors.js";
import type { EventData } from "../events/catalogue.js";
import type { EventMetadata, RecordedEvent } from "../events/envelope.js";
import { runStream } from "../events/streams.js";
import { archiveCutoff, archiveRefusal } from "../maintenance/archive-planner.js";
import type {
  ArchiveAuditReport,
  ArchiveProblem,
  ArchiveReport,
  LogRecord,
} from "../maintenance/maintenance-reports.js";
import type { DatasetView } from "../projections/views.js";
import {
  type ArchiveDefect,
  archiveContentKey,
  archiveMarkerKey,
  encodeArchive,
  isArchiveDefect,
  parseArchiveMarker,
  type StoredEvent,
  sha256Hex,
  verifyArchive,
} from "../storage/archive-format.js";
import { urlForKey } from "../storage/dataset-url.js";
import type { ObjectStore } from "../storage/object-store.js";

/**
 * The steps of archiving one run, in order; a test hook may throw after any of them to stand for a
 * crash there (`deleted` runs inside the transaction, before it commits).
 *
 * @internal
 */
export type ArchiveStep = "content" | "marker" | "verified" | "deleted" | "committed";

/** What the archive use-case needs from the ledger. @internal */
export interface ArchiveDeps {
  database: Database;
  hot: HotLogArchive;
  queries: ProjectionQueries;
  storeFor(dataset: DatasetView): ObjectStore;
  clock(): Date;
  /** Default delay between a run's prune and its archiving (the ledger's `archiveAfter`). */
  afterMs: number;
  metadata: Partial<EventMetadata>;
  /** Upcasts a stored event as the hot log's readers do. */
  upcast(e: StoredEvent): RecordedEvent;
  log?: (record: LogRecord) => void;
  /** @internal test hook: a throw after a step stands for a crash there. */
  hook?: (step: ArchiveStep, runId: string) => void | Promise<void>;
}

/** Options of {@link archive}. @internal */
export interface ArchiveOptions {
  /** One dataset; every dataset when absent. */
  datasetId?: string;
  /** List what is due and change nothing. */
  dryRun?: boolean;
  /** Overrides the ledger's `archiveAfter` for this pass (milliseconds, validated by the caller). */
  afterMs?: number;
  signal?: AbortSignal;
}

/** Runs archived per dataset and pass at most; the rest wait for the next pass. */
const MAX_RUNS_PER_PASS = 1000;

/**
 * Moves the events of pruned runs out of the hot log: for each run of the dataset pruned at least
 * `afterMs` ago, under the dataset's maintenance lease (another holder: the dataset is `skipped`),
 *
 * 1. writes the run stream's events, exactly as stored, to `_archive/run-<runId>.jsonl`;
 * 2. writes the `.complete` marker (sha256 and count) last — an existing marker that does not
 *    match is removed first, so "marker present ⇒ content complete" holds at every instant;
 * 3. reads both back and verifies them;
 * 4. in one transaction, fenced by the lease and under the dataset's publish lock (the dataset
 *    stream's writers), appends `Archived` to the dataset stream and deletes the run stream's
 *    events from the hot log.
 *
 * A crash between any two steps leaves a state the next pass resumes from: before 4 the run's
 * `Pruned` is still in the hot log, so it is due again and its content is rewritten byte for byte
 * (or kept when marker and content verify); 4 is atomic.
 *
 * @internal used through the Ledger facade.
 */
export async function archive(deps: ArchiveDeps, options: ArchiveOptions = {}): Promise<ArchiveReport> {
  const report: ArchiveReport = {
    archived: [],
    failed: [],
    deferred: [],
    skipped: [],
    dryRun: options.dryRun === true,
  };
  const datasets =
    options.datasetId !== undefined
      ? [await deps.queries.dataset(options.datasetId)].filter((d): d is DatasetView => d !== null)
      : await deps.queries.datasets();
  const cutoff = archiveCutoff(deps.clock(), options.afterMs ?? deps.afterMs);
  for (const dataset of datasets) {
    if (options.signal?.aborted) break;
    const due = await deps.hot.prunedRuns(dataset.datasetId, cutoff, MAX_RUNS_PER_PASS);
    if (due.length === 0) continue;
    if (options.dryRun) {
      for (const run of due) {
        const stored = await deps.hot.storedStream(runStream(run.runId));
        const refused = archiveRefusal(run.runId, runStream(run.runId), stored);
        if (refused !== null) {
          report.failed.push({ datasetId: dataset.datasetId, runId: run.runId, error: refused });
          continue;
        }
        const { marker } = encodeArchive(run.runId, runStream(run.runId), stored);
        report.archived.push({
          datasetId: dataset.datasetId,
          runId: run.runId,
          archiveUrl: urlForKey(dataset.root, archiveContentKey(run.runId)),
          events: marker.events,
          checksum: marker.checksum,
        });
      }
      continue;
    }
    try {
      await withMaintenanceLease(
        deps.database,
        dataset.datasetId,
        async (lease) => {
          const store = deps.storeFor(dataset);
          for (const run of due) {
            if (options.signal?.aborted) break;
            try {
              const done = await archiveRun(deps, dataset, store, lease, run);
              if ("deferred" in done)
                report.deferred.push({ datasetId: dataset.datasetId, runId: run.runId, why: done.deferred });
              else report.archived.push({ datasetId: dataset.datasetId, runId: run.runId, ...done });
            } catch (e) {
              // A lost lease ends the pass: another pass owns the dataset now.
              if (isLeaseLostError(e)) throw e;
              report.failed.push({
                datasetId: dataset.datasetId,
                runId: run.runId,
                error: e instanceof Error ? e.message : String(e),
              });
            }
          }
        },
        { wait: false },
      );
    } catch (e) {
      if (isLockedError(e)) report.skipped.push(dataset.datasetId);
      else if (isLeaseLostError(e)) report.skipped.push(dataset.datasetId);
      else throw e;
    }
  }
  deps.log?.({
    level: "info",
    msg: "archive pass",
    archived: report.archived.length,
    failed: report.failed.length,
    deferred: report.deferred.length,
    dryRun: report.dryRun,
  });
  return report;
}

async function archiveRun(
  deps: ArchiveDeps,
  dataset: DatasetView,
  store: ObjectStore,
  lease: MaintenanceLease,
  run: PrunedRun,
): Promise<{ archiveUrl: string; events: number; checksum: string } | { deferred: string }> {
  const streamId = runStream(run.runId);
  const stored = await deps.hot.storedStream(streamId);
  const refused = archiveRefusal(run.runId, streamId, stored);
  if (refused !== null)
    throw new ArchiveError("ARCHIVE_CORRUPT", `run ${run.runId} is not archived: ${refused}`);
  const { body, marker } = encodeArchive(run.runId, streamId, stored);
  const contentKey = archiveContentKey(run.runId);
  const markerKey = archiveMarkerKey(run.runId);
  const archiveUrl = urlForKey(dataset.root, contentKey);

  // Resume: an earlier pass may have written both (a crash before its transaction). Kept only
  // when the marker names exactly this content and the content verifies.
  await lease.assertHeld();
  const existing = parseArchiveMarker(await store.get(markerKey));
  let intact = false;
  if (
    !isArchiveDefect(existing) &&
    existing.checksum === marker.checksum &&
    existing.events === marker.events
  ) {
    const content = await store.get(contentKey);
    intact = content !== null && sha256Hex(content) === marker.checksum;
  }
  if (!intact) {
    if (!(isArchiveDefect(existing) && existing.kind === "missing")) {
      // The marker goes before what it vouches for is touched.
      await lease.assertHeld();
      const { errors } = await store.deleteMany([markerKey]);
      if (errors.length > 0)
        throw new Error(
          `cannot remove the stale marker ${markerKey}: ${errors[0]?.code} ${errors[0]?.message}`,
        );
    }
    await lease.assertHeld();
    await store.put(contentKey, body, { contentType: "application/x-ndjson" });
    await deps.hook?.("content", run.runId);
    await lease.assertHeld();
    await store.put(markerKey, `${JSON.stringify(marker)}\n`, { contentType: "application/json" });
    await deps.hook?.("marker", run.runId);
  }

  // Nothing leaves the hot log before the archive reads back whole: marker, then content.
  const check = await readVerified(store, run.runId, { checksum: marker.checksum, events: marker.events });
  if (isArchiveDefect(check)) throw archiveError(run.runId, archiveUrl, check);
  await deps.hook?.("verified", run.runId);

  await lease.assertHeld();
  const commit: ArchiveCommit = {
    run,
    version: marker.events,
    archiveUrl,
    checksum: marker.checksum,
    fence: lease.fence,
    metadata: deps.metadata,
    beforeCommit: () => deps.hook?.("deleted", run.runId),
  };
  try {
    // The dataset stream's writers (publish, rollback, policy changes) hold this lock; it is taken
    // without waiting (rollback takes it before the maintenance lease this pass holds), and a
    // held lock defers the run to the next pass.
    await withDatasetLock(deps.database, "publish", dataset.datasetId, () => deps.hot.commit(commit), {
      wait: false,
    });
  } catch (e) {
    if (isLockedError(e)) return { deferred: "a publish or rollback holds the dataset's pointer lock" };
    throw e;
  }
  await deps.hook?.("committed", run.runId);
  return { archiveUrl, events: marker.events, checksum: marker.checksum };
}

/** Reads the marker then the content of a run's archive and verifies them. */
async function readVerified(
  store: ObjectStore,
  runId: string,
  expected?: { checksum: string | null; events: number },
): Promise<StoredEvent[] | ArchiveDefect> {
  const marker = parseArchiveMarker(await store.get(archiveMarkerKey(runId)));
  if (isArchiveDefect(marker)) return marker;
  return verifyArchive(runId, runStream(runId), marker, await store.get(archiveContentKey(runId)), expected);
}

/** What to do about a damaged archive (docs/operations.md, "Archiving pruned runs"). */
const RESTORE_HINT =
  "restore it from the bucket's versioning or a backup (its content must hash to the checksum of the run's Archived event; `shardledger audit --deep` checks every archive)";

function archiveError(runId: string, archiveUrl: string, defect: ArchiveDefect): ArchiveError {
  return new ArchiveError(
    defect.kind === "missing" ? "ARCHIVE_MISSING" : "ARCHIVE_CORRUPT",
    `the archive of run ${runId} at ${archiveUrl} is ${defect.kind}: ${defect.reason}; ${RESTORE_HINT}`,
    { details: { runId, archiveUrl, reason: defect.reason } },
  );
}

/** Where an `Archived` event says a run's archive is, or a problem that says why it cannot be found. */
async function locate(
  deps: Pick<ArchiveDeps, "queries" | "storeFor">,
  event: RecordedEvent,
): Promise<{ data: EventData<"Archived">; store: ObjectStore } | ArchiveProblem> {
  const data = event.data as EventData<"Archived">;
  const base = { runId: data.runId, datasetId: data.datasetId, archiveUrl: data.archiveUrl };
  if (data.datasetId === null || data.checksum === null)
    return {
      ...base,
      kind: "unverifiable",
      reason: "an Archived event of version 1 names no dataset or checksum",
    };
  const dataset = await deps.queries.dataset(data.datasetId);
  if (!dataset) return { ...base, kind: "missing", reason: `dataset ${data.datasetId} is not registered` };
  return { data, store: deps.storeFor(dataset) };
}

/**
 * The events of an archived run, read through its archive: the `Archived` event says where and
 * what (checksum, count); the marker and the content must agree with it. Null when the run has no
 * `Archived` event. A missing or mismatching archive throws {@link ArchiveError}.
 *
 * @internal the ledger's `events({ stream })`.
 */
export async function readArchivedRun(
  deps: Pick<ArchiveDeps, "hot" | "queries" | "storeFor" | "upcast">,
  runId: string,
): Promise<RecordedEvent[] | null> {
  const event = await deps.hot.archivedEvent(runId);
  if (!event) return null;
  const located = await locate(deps, event);
  if (!("store" in located)) {
    throw new ArchiveError(
      "ARCHIVE_MISSING",
      `the archive of run ${runId} cannot be read: ${located.reason}; ${RESTORE_HINT}`,
      {
        details: { runId, archiveUrl: located.archiveUrl, reason: located.reason },
      },
    );
  }
  const events = await readVerified(located.store, runId, {
    checksum: located.data.checksum,
    events: located.data.events,
  });
  if (isArchiveDefect(events)) throw archiveError(runId, located.data.archiveUrl, events);
  return events.map((e) => deps.upcast(e));
}

/**
 * Checks every archive the hot log records (`Archived` events) against its event: marker present,
 * content present, checksums and counts equal, the content parses as the run's stream, and the hot
 * log holds none of that stream any more. Every problem is reported; none is skipped.
 *
 * @internal the ledger's `audit({ deep: true })`.
 */
export async function auditArchives(
  deps: Pick<ArchiveDeps, "hot" | "queries" | "storeFor">,
): Promise<ArchiveAuditReport> {
  const report: ArchiveAuditReport = { checked: 0, events: 0, problems: [] };
  for (const event of await deps.hot.archivedEvents()) {
    report.checked++;
    const data = event.data as EventData<"Archived">;
    const base = { runId: data.runId, datasetId: data.datasetId, archiveUrl: data.archiveUrl };
    const remaining = await deps.hot.hotEvents(runStream(data.runId));
    if (remaining > 0)
      report.problems.push({
        ...base,
        kind: "hot_events_remain",
        reason: `the hot log still holds ${remaining} event(s) of ${runStream(data.runId)}`,
      });
    const located = await locate(deps, event);
    if (!("store" in located)) {
      report.problems.push(located);
      continue;
    }
    let result: StoredEvent[] | ArchiveDefect;
    try {
      result = await readVerified(located.store, data.runId, {
        checksum: data.checksum,
        events: data.events,
      });
    } catch (e) {
      report.problems.push({
        ...base,
        kind: "unreadable",
        reason: isShardledgerError(e) || e instanceof Error ? e.message : String(e),
      });
      continue;
    }
    if (isArchiveDefect(result)) report.problems.push({ ...base, kind: result.kind, reason: result.reason });
    else report.events += result.length;
  }
  return report;
}
