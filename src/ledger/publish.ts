import type { Database } from "../adapters/postgres/database.js";
import { withDatasetLock } from "../adapters/postgres/dataset-lock.js";
import type { ProjectionQueries } from "../adapters/postgres/projection-queries.js";
import {
  IllegalTransitionError,
  isIllegalTransitionError,
  NotFoundError,
  ShardCoverageError,
} from "../errors.js";
import type { PointerMoveReason } from "../events/catalogue.js";
import type { EventMetadata } from "../events/envelope.js";
import type { EventLog } from "../events/event-log.js";
import { datasetStream } from "../events/streams.js";
import type { RunState } from "../machines/run-state.js";
import type { DatasetView } from "../projections/views.js";
import { keyUnderRoot, urlForKey } from "../storage/dataset-url.js";
import { CURRENT_KEY, manifestKey, runDataPrefix } from "../storage/object-layout.js";
import type { ObjectStore } from "../storage/object-store.js";
import type { RunExecutor } from "./run-executor.js";
import { storePointerRunId } from "./store-pointer.js";

/**
 * One winner as the manifest and `publish --json` show it; `taskAttemptId` is a decimal string.
 *
 * @example
 * ```ts
 * const { winners } = await ledger.publish(runId)
 * const byShard = new Map(winners.map((w: PublishedWinner) => [w.shard, w.url]))
 * ```
 */
export interface PublishedWinner {
  shard: number;
  attempt: number;
  taskAttemptId: string | null;
  url: string | null;
}

/**
 * The result of a publish, as `publish --json` prints it.
 *
 * @example
 * ```ts
 * const { manifestUrl, winners } = await ledger.publish("2026-11-23")
 * ```
 */
export interface PublishResult {
  runId: string;
  status: "SUCCEEDED";
  winners: PublishedWinner[];
  manifestUrl: string;
}

/**
 * The manifest written to `<root>/manifests/<runId>.json`.
 *
 * @example
 * ```ts
 * const bytes = await store.get("manifests/r1.json")
 * const manifest = bytes && (JSON.parse(new TextDecoder().decode(bytes)) as Manifest)
 * const urls = manifest?.winners.map((w) => w.url) ?? []
 * ```
 */
export interface Manifest {
  format: "shardledger.manifest/1";
  runId: string;
  datasetId: string;
  numShards: number;
  createdAt: string;
  winners: PublishedWinner[];
}

/**
 * What `_CURRENT` holds: the run readers should read and its manifest.
 *
 * @example
 * ```ts
 * const bytes = await store.get("_CURRENT")
 * const current = bytes && (JSON.parse(new TextDecoder().decode(bytes)) as CurrentPointer)
 * console.log(current?.runId, current?.manifestUrl)
 * ```
 */
export interface CurrentPointer {
  format: "shardledger.current/1";
  runId: string;
  manifest: string;
  manifestUrl: string;
}

/**
 * What publish and rollback need from the ledger.
 *
 * @internal
 * @example
 * ```ts
 * const deps: PublishDeps = { database, log, executor, queries, storeFor: (d) => store, clock: () => new Date() }
 * ```
 */
export interface PublishDeps {
  database: Database;
  log: EventLog;
  executor: RunExecutor;
  queries: ProjectionQueries;
  storeFor(dataset: DatasetView): ObjectStore;
  clock(): Date;
}

/**
 * Publishes a run: select winners (or fail the run on missing shards), write the manifest, mark
 * the run SUCCEEDED, then write `_CURRENT` LAST and record the move. Serialised per dataset by the
 * publish lock; each step is recorded before the next begins, so a publish that crashed anywhere
 * is finished by the next call. `_CURRENT` never names a manifest that does not exist or a run
 * that is not SUCCEEDED, and never moves back to a run older than the current one.
 *
 * @internal use `ledger.publish`.
 */
export async function publishRun(deps: PublishDeps, runId: string): Promise<PublishResult> {
  try {
    // No run snapshot is serialised between its steps; one that falls due is taken afterwards.
    return await deps.executor.withoutSnapshots(() => publish(deps, runId));
  } catch (e) {
    throw asPublishRefusal(e);
  }
}

/**
 * A refusal by one of publish's own steps (the run refused `selectWinners` because it FAILED, say)
 * as the caller sees it: a refusal of `publish`, the command they called; the step stays in
 * `step`. Anything else is returned as it is.
 */
function asPublishRefusal(e: unknown): unknown {
  if (!isIllegalTransitionError(e) || e.details.command === "publish") return e;
  const { command, state, ...rest } = e.details as { command: string; state: string };
  return new IllegalTransitionError("publish", state, e.message, { ...rest, step: command }, { cause: e });
}

async function publish(deps: PublishDeps, runId: string): Promise<PublishResult> {
  const initial = await deps.executor.load(runId);
  if (initial.runId === null || initial.datasetId === null) throw new NotFoundError("run", runId);
  const datasetId = initial.datasetId;
  return withDatasetLock(deps.database, "publish", datasetId, async () => {
    const dataset = await deps.queries.dataset(datasetId);
    if (!dataset) throw new NotFoundError("dataset", datasetId);
    const store = deps.storeFor(dataset);
    let state = await deps.executor.load(runId);
    if (state.status === "PRUNED") {
      throw new IllegalTransitionError(
        "publish",
        state.status,
        `run ${runId} was pruned (${state.pruneReason ?? "pruned"}); its data and manifest are gone, so _CURRENT will not point to it — publish a new run`,
        { runId, datasetId },
      );
    }
    const resuming = state.publishProgress !== "none";
    if (state.publishProgress === "succeeded" && (await pointerSettled(deps, dataset, state))) {
      throw new IllegalTransitionError(
        "publish",
        state.status,
        `run ${runId} is already published; a run publishes at most once`,
        { runId, datasetId },
      );
    }

    if (state.publishProgress === "none") {
      state = (await deps.executor.execute({ type: "selectWinners", runId })).state;
      if (state.status === "FAILED" && state.failureCause === "coverage") {
        throw new ShardCoverageError(runId, state.missingShards, { datasetId });
      }
    }

    const winners = winnersOf(state);
    const manifestUrl = urlForKey(dataset.root, manifestKey(runId));
    if (state.publishProgress === "winners_selected") {
      // The manifest's creation time is the winners' selection time, so a resumed publish writes
      // byte-for-byte the same manifest.
      const createdAt = firstSelectedAt(state);
      await store.put(manifestKey(runId), manifestBody(state, winners, createdAt), {
        contentType: "application/json",
      });
      state = (
        await recordOrWithdraw(deps, store, runId, () =>
          deps.executor.execute({ type: "recordManifest", runId, manifestUrl, createdAt }),
        )
      ).state;
    }
    if (state.publishProgress === "manifest_published") {
      // Marker rule: the run may only be marked (and pointed at) once its manifest is really there.
      if ((await store.get(manifestKey(runId))) === null) {
        await store.put(manifestKey(runId), manifestBody(state, winners, firstSelectedAt(state)), {
          contentType: "application/json",
        });
      }
      state = (await deps.executor.execute({ type: "markSucceeded", runId })).state;
    }
    if (!resuming || !(await pointerSettled(deps, dataset, state))) {
      // Marker rule at the last step: _CURRENT names only a manifest that is there, whose winners
      // are there. A resumed publish may come long after the first try (gc ran meanwhile), so it
      // also checks every winner, with one listing of the run's data area.
      await assertManifestPresent(store, state, manifestUrl, "publish");
      if (resuming) await assertWinnersPresent(store, dataset, state, "publish");
      await movePointer(deps, store, dataset, state, manifestUrl, "publish");
    }
    return { runId, status: "SUCCEEDED", winners, manifestUrl };
  });
}

/**
 * Records the manifest just put; if the run refuses it because gc pruned the run (failed it, then
 * past a short failed-retention floor deleted its data and its manifest path) while the put was on
 * its way, takes the object back before saying so. Marker rule: a manifest nobody records must not
 * outlive the data it lists, and the prune may have deleted the path before the put landed. That
 * deletion was planned: a prune plans the run's manifest path whether or not an event records it
 * (gc-planner), so the log covers it (SPEC: a deletion is planned before it happens).
 *
 * A run that is only FAILED keeps the manifest: it is inside its failed-retention floor, where a
 * failed run keeps everything, nothing has planned the path yet, and its data is all there; its
 * prune deletes the path first, planned. It was never recorded and the run is not SUCCEEDED, so
 * `_CURRENT` cannot name it. Best effort: if the delete fails, the object stays with no data.
 */
async function recordOrWithdraw<T>(
  deps: PublishDeps,
  store: ObjectStore,
  runId: string,
  record: () => Promise<T>,
): Promise<T> {
  try {
    return await record();
  } catch (e) {
    if (!isIllegalTransitionError(e)) throw e;
    const now = await deps.executor.load(runId);
    const recorded = now.publishProgress === "manifest_published" || now.publishProgress === "succeeded";
    if (now.status === "PRUNED" && !recorded) {
      await store.deleteMany([manifestKey(runId)]).catch(() => {});
    }
    throw e;
  }
}

function winnersOf(state: RunState): PublishedWinner[] {
  return [...state.winners.values()]
    .sort((a, b) => a.shard - b.shard)
    .map((w) => ({ shard: w.shard, attempt: w.attempt, taskAttemptId: w.taskAttemptId, url: w.url }));
}

function firstSelectedAt(state: RunState): Date {
  let first: Date | null = null;
  for (const w of state.winners.values()) if (!first || w.selectedAt < first) first = w.selectedAt;
  return first ?? new Date(0);
}

function manifestBody(state: RunState, winners: PublishedWinner[], createdAt: Date): string {
  const manifest: Manifest = {
    format: "shardledger.manifest/1",
    runId: state.runId as string,
    datasetId: state.datasetId as string,
    numShards: state.numShards,
    createdAt: createdAt.toISOString(),
    winners,
  };
  return `${JSON.stringify(manifest, null, 2)}\n`;
}

/**
 * The move to the run the store's `_CURRENT` names, when the log does not know it: a succeeded run
 * of the dataset other than the one the log has current and the one being pointed at now. A
 * publish moved there if the run was never current, else a rollback. Null when there is none (no
 * pointer, or one naming nothing of this dataset the log knows as published).
 */
async function unrecordedMove(
  queries: Pick<ProjectionQueries, "runRow">,
  store: ObjectStore,
  dataset: DatasetView,
  recorded: string | null,
  target: string,
): Promise<{ runId: string; manifestUrl: string; reason: PointerMoveReason } | null> {
  const inStore = await storePointerRunId(store);
  if (inStore === null || inStore === recorded || inStore === target) return null;
  const run = await queries.runRow(inStore);
  if (!run || run.datasetId !== dataset.datasetId || run.status !== "SUCCEEDED" || run.manifestUrl === null)
    return null;
  return {
    runId: inStore,
    manifestUrl: run.manifestUrl,
    reason: run.replacedAt === null ? "publish" : "rollback",
  };
}

/**
 * Whether `_CURRENT` needs no move for this run: it already points here, it pointed here once and
 * moved on (a rollback moved it back from this run, or a later publish replaced it: only
 * `rollback` ever points it here again), or a run that succeeded later took it (a resumed publish
 * of an older run must not move the pointer backwards).
 */
async function pointerSettled(deps: PublishDeps, dataset: DatasetView, state: RunState): Promise<boolean> {
  const fresh = await deps.queries.dataset(dataset.datasetId);
  const current = fresh?.currentRunId ?? null;
  if (current === state.runId) return true;
  if ((await deps.queries.runRow(state.runId as string))?.replacedAt != null) return true;
  if (current === null || state.succeededAt === null) return false;
  const other = await deps.executor.load(current);
  return other.succeededAt !== null && other.succeededAt > state.succeededAt;
}

/**
 * Writes `_CURRENT` (the marker, after every check of what it names) and then records the move on
 * the dataset stream with its expected version. Callers hold the dataset's publish lock, so the
 * previous run read here is the one `_CURRENT` named: the log's, unless the store names another
 * succeeded run of the dataset, a move whose record never landed (the PUT reached the store and
 * its publish or rollback failed before recording it). Readers have followed that run since; the
 * move to it is recorded first, so it is the run this move replaces and keeps its safety window.
 * Returns the run replaced.
 *
 * @internal publish and rollback.
 * @example
 * ```ts
 * const previousRunId = await movePointer(deps, store, dataset, state, manifestUrl, "rollback")
 * ```
 */
export async function movePointer(
  deps: Pick<PublishDeps, "queries" | "log"> & { metadata?: Partial<EventMetadata> },
  store: ObjectStore,
  dataset: DatasetView,
  state: RunState,
  manifestUrl: string,
  reason: PointerMoveReason,
): Promise<string | null> {
  const runId = state.runId as string;
  const fresh = await deps.queries.dataset(dataset.datasetId);
  const recorded = fresh?.currentRunId ?? null;
  const unrecorded = await unrecordedMove(deps.queries, store, dataset, recorded, runId);
  const previousRunId = unrecorded?.runId ?? recorded;
  const pointer: CurrentPointer = {
    format: "shardledger.current/1",
    runId,
    manifest: manifestKey(runId),
    manifestUrl,
  };
  await store.put(CURRENT_KEY, `${JSON.stringify(pointer)}\n`, { contentType: "application/json" });
  const stream = datasetStream(dataset.datasetId);
  await deps.log.append(
    stream,
    [
      ...(unrecorded
        ? [
            {
              type: "CurrentPointerMoved",
              data: { datasetId: dataset.datasetId, ...unrecorded, previousRunId: recorded },
              ...(deps.metadata ? { metadata: deps.metadata } : {}),
            },
          ]
        : []),
      {
        type: "CurrentPointerMoved",
        data: { datasetId: dataset.datasetId, runId, manifestUrl, previousRunId, reason },
        ...(deps.metadata ? { metadata: deps.metadata } : {}),
      },
    ],
    { expectedVersion: await deps.log.streamVersion(stream) },
  );
  return previousRunId;
}

/**
 * Refuses (IllegalTransitionError) unless the run's manifest is in the store: `_CURRENT` never
 * names a manifest that is not there.
 *
 * @internal publish and rollback.
 * @example
 * ```ts
 * await assertManifestPresent(store, state, manifestUrl, "rollback")
 * ```
 */
export async function assertManifestPresent(
  store: ObjectStore,
  state: RunState,
  manifestUrl: string,
  command: "publish" | "rollback",
): Promise<void> {
  if ((await store.get(manifestKey(state.runId as string))) !== null) return;
  throw new IllegalTransitionError(
    command,
    state.status,
    `run ${state.runId}: its manifest ${manifestUrl} is missing, so _CURRENT will not point to it; publish a new run`,
    subject(state),
  );
}

/**
 * Refuses (IllegalTransitionError, naming the shards) unless every winner with a url has its data
 * in the store, checked with one listing of the run's data area.
 *
 * @internal publish and rollback.
 * @example
 * ```ts
 * await assertWinnersPresent(store, dataset, state, "rollback")
 * ```
 */
export async function assertWinnersPresent(
  store: ObjectStore,
  dataset: DatasetView,
  state: RunState,
  command: "publish" | "rollback",
): Promise<void> {
  const runId = state.runId as string;
  // Every listed key and each of its ancestors: a winner url names an object or a prefix.
  const present = new Set<string>();
  let token: string | null = null;
  do {
    const page = await store.list(runDataPrefix(runId), { token });
    for (const o of page.objects) {
      const parts = o.key.split("/");
      for (let i = 1; i <= parts.length; i++) present.add(parts.slice(0, i).join("/"));
    }
    token = page.nextToken;
  } while (token !== null);
  const missing: number[] = [];
  for (const w of state.winners.values()) {
    if (w.url === null) continue;
    if (!present.has(keyUnderRoot(dataset.root, w.url))) missing.push(w.shard);
  }
  if (missing.length === 0) return;
  missing.sort((a, b) => a - b);
  throw new IllegalTransitionError(
    command,
    state.status,
    `run ${runId}: the data of the winner(s) of shard(s) ${missing.slice(0, 20).join(", ")}${missing.length > 20 ? ", …" : ""} is missing, so _CURRENT will not point to it; publish a new run`,
    { ...subject(state), missingShards: missing },
  );
}

/** What a refusal about a run names besides its message (README: the ILLEGAL_TRANSITION row). */
function subject(state: RunState): { runId: string; datasetId?: string } {
  return {
    runId: state.runId as string,
    ...(state.datasetId !== null ? { datasetId: state.datasetId } : {}),
  };
}
