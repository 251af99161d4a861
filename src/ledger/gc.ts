import { runUrls } from "../adapters/postgres/maintenance-queries.js";
import { effectiveSafetyWindowMs } from "../datasets/safety-window.js";
import { isShardledgerError } from "../errors.js";
import type { CleanupReason, PruneReason } from "../events/catalogue.js";
import { parseCleanupThroughput } from "../maintenance/cleanup-throughput.js";
import { fenceRefusalAsError } from "../maintenance/fenced-store.js";
import { type GcAction, planGc } from "../maintenance/gc-planner.js";
import type { GcReport } from "../maintenance/maintenance-reports.js";
import {
  keysUnderRoot,
  orphanCollectionRefusal,
  orphanPredicate,
  writerAtWork,
} from "../maintenance/orphan-planner.js";
import { ThrottledStore } from "../maintenance/throttled-store.js";
import { cleanItemsConcurrently } from "./cleanup.js";

/**
 * Orphan objects deleted at once (each is one small request: the root's limiter bounds the rate).
 * As many as cleanup's prefixes: fencing is strict at any concurrency (fenced-store.ts).
 */
const ORPHAN_CONCURRENCY = 16;

import type { DatasetView } from "../projections/views.js";
import { urlForKey } from "../storage/dataset-url.js";
import { runDataPrefix } from "../storage/object-layout.js";
import type { ListPage, ObjectStore } from "../storage/object-store.js";
import { deleteItem, itemRefusal, type WorkItem } from "./cleanup-item.js";
import {
  type MaintenanceDeps,
  type Pass,
  type PassCounts,
  requireDataset,
  runRecordedPass,
} from "./maintenance-pass.js";
import { storePointerRunId } from "./store-pointer.js";

/** Options of {@link gc}. @internal */
export interface GcOptions {
  dryRun?: boolean;
  signal?: AbortSignal;
  /** Orphan deletions in flight. Validated: an integer 1…256; default ORPHAN_CONCURRENCY. */
  concurrency?: number;
}

/**
 * Stale runs, keep-runs, retention, the failed floor and orphans for one dataset, in one pass
 * under its maintenance lease (another holder makes it throw `LOCKED`).
 * @internal used through the Ledger facade.
 */
export async function gc(
  deps: MaintenanceDeps,
  datasetId: string,
  options: GcOptions = {},
): Promise<GcReport> {
  // Validated before anything is read or deleted.
  const { concurrency } = parseCleanupThroughput({
    concurrency: options.concurrency ?? ORPHAN_CONCURRENCY,
  });
  options = { ...options, concurrency };
  const dataset = await requireDataset(deps, datasetId);
  const { report } = await runRecordedPass(deps, datasetId, "gc", options, (pass) =>
    gcPass(deps, dataset, pass, options),
  );
  return report;
}

/**
 * The `kind` a gc action shows: the reason its run is pruned with (so `gc --json`, the `Pruned`
 * event and `rollups` say the same word), or what it does when it prunes nothing.
 */
function reportedKind(action: GcAction): string {
  return action.pruneReason ?? action.kind;
}

async function gcPass(
  deps: MaintenanceDeps,
  dataset: DatasetView,
  pass: Pass,
  options: GcOptions,
): Promise<PassCounts & { report: GcReport }> {
  const datasetId = dataset.datasetId;
  const now = deps.clock();
  const runs = await deps.queries.runs(datasetId);
  // Deletes and listings through the adaptive limiter of the dataset's root (S3's per-prefix
  // limit applies to gc as much as to cleanup); its counts are the pass's listing cost.
  const store = new ThrottledStore(deps.storeFor(dataset), {});
  // Reads and listings too: a pass fenced off stops before its next request, whatever it is.
  const fenced = store.withFence(() => pass.lease.assertHeld());
  await pass.lease.assertHeld();
  const plan = planGc({
    now,
    dataset,
    runs,
    floors: await deps.queries.retentionFloors(datasetId),
    runUrls: await runUrls(deps.database, datasetId, dataset.root),
    pointerRunId: await fenceRefusalAsError(storePointerRunId(fenced)),
  });
  const report: GcReport = {
    actions: [],
    failed: [],
    protected: plan.protected.map((p) => ({ runId: p.runId, why: p.why })),
    dryRun: options.dryRun === true,
  };
  const sinceOf = new Map(runs.map((r) => [r.runId, r]));
  let pruned = 0;
  let failedStale = 0;

  for (const action of plan.actions) {
    if (options.signal?.aborted) break;
    if (action.kind === "fail_stale") {
      report.actions.push({ kind: reportedKind(action), runId: action.runId, urls: [] });
      if (options.dryRun) continue;
      const seen = sinceOf.get(action.runId);
      try {
        // The decision travels with the command: the decider refuses it if the run showed a
        // sign of life after gc looked (a heartbeat while the pass was listing the store).
        await pass.execute({
          type: "fail",
          runId: action.runId,
          cause: "heartbeat_timeout",
          reason: action.reason,
          ...(seen ? { silentSince: latestOf(seen.heartbeatAt, seen.updatedAt) } : {}),
          staleAfterMs: dataset.policies.staleAfterMs,
        });
        failedStale++;
      } catch (e) {
        if (!isShardledgerError(e) || e.code !== "ILLEGAL_TRANSITION") throw e;
        report.actions.pop();
        report.protected.push({ runId: action.runId, why: `not failed: ${e.message}` });
      }
      continue;
    }
    const reason: CleanupReason = action.kind;
    const entry = { kind: reportedKind(action), runId: action.runId, urls: [] as string[] };
    report.actions.push(entry);
    const pending = new Map(
      (await deps.queries.pendingCleanup({ datasetId }))
        .filter((p) => p.runId === action.runId)
        .map((p) => [p.url, p]),
    );
    let allDeleted = true;
    // In plan order, the manifest first: if the marker cannot go, the data it names stays.
    for (const [index, url] of action.urls.entries()) {
      if (options.signal?.aborted) {
        allDeleted = false;
        break;
      }
      const prior = pending.get(url);
      const item: WorkItem = {
        runId: action.runId,
        url,
        reason,
        planned: prior?.state === "planned",
        priorTries: prior?.tries ?? 0,
        ...(index > 0 ? { decisionConfirmed: true } : {}),
      };
      if (options.dryRun) {
        const refused = await itemRefusal(pass, dataset, item);
        if (refused === null) entry.urls.push(url);
        else report.protected.push({ runId: action.runId, why: `url ${url} is not deleted: ${refused}` });
        continue;
      }
      const outcome = await deleteItem(deps, dataset, store, item, pass, options.signal);
      if (outcome.refused !== undefined) {
        report.protected.push({
          runId: action.runId,
          why: `url ${url} is not deleted: ${outcome.refused}`,
        });
        allDeleted = false;
        break;
      }
      entry.urls.push(url);
      if (!outcome.deleted) {
        allDeleted = false;
        report.failed.push({ url, error: outcome.error ?? "unknown", tries: outcome.tries });
        break;
      }
    }
    if (!options.dryRun && allDeleted && action.pruneReason) {
      await prune(deps, pass, action.runId, action.pruneReason);
      pruned++;
    }
  }

  const orphans = await listOrphans(
    deps,
    dataset,
    fenced,
    now,
    new Set(plan.actions.map((a) => a.runId)),
    report,
  );
  for (const orphan of orphans) {
    const entry = { kind: "orphan", runId: orphan.runId, urls: [] as string[] };
    report.actions.push(entry);
    const items: WorkItem[] = [];
    for (const key of orphan.keys) {
      if (options.signal?.aborted) break;
      let url: string;
      try {
        url = urlForKey(dataset.root, key);
      } catch (e) {
        // A key no URL can name (a backslash, a dot segment) is never sent in a delete.
        report.protected.push({
          runId: orphan.runId,
          why: `key ${JSON.stringify(key)} is not deleted: ${String(e)}`,
        });
        continue;
      }
      const item: WorkItem = {
        runId: orphan.runId,
        url,
        key,
        reason: "orphan",
        planned: false,
        priorTries: 0,
      };
      if (options.dryRun) {
        if ((await itemRefusal(pass, dataset, item)) === null) entry.urls.push(item.url);
        continue;
      }
      items.push(item);
    }
    // Orphans are many single objects: they go through the concurrent engine (batched plan and
    // outcome appends, the guard per batch, the root's limiter), as cleanup's losers do.
    const outcomes =
      items.length === 0
        ? []
        : await cleanItemsConcurrently(deps, dataset, store, items, pass, {
            concurrency: options.concurrency ?? ORPHAN_CONCURRENCY,
            ...(options.signal ? { signal: options.signal } : {}),
          });
    for (const { item, outcome } of outcomes) {
      if (outcome.refused !== undefined) continue;
      entry.urls.push(item.url);
      if (!outcome.deleted)
        report.failed.push({ url: item.url, error: outcome.error ?? "unknown", tries: outcome.tries });
    }
    if (entry.urls.length === 0) report.actions.pop();
  }
  deps.metric?.({ name: "gc.pruned", value: pruned, datasetId });
  deps.metric?.({ name: "gc.failed_stale", value: failedStale, datasetId });
  deps.log?.({
    level: "info",
    msg: "gc pass",
    datasetId,
    actions: plan.actions.length,
    pruned,
    failed: report.failed.length,
  });
  const deleted = report.actions.reduce((n, a) => n + (a.kind === "fail_stale" ? 0 : a.urls.length), 0);
  const traffic = store.traffic();
  // A dry run's report stays as it was (`--dry-run` unchanged).
  if (!options.dryRun && traffic.listRequests + traffic.deleteRequests > 0) {
    report.throughput = {
      settledRate: Math.round(traffic.deleteRate.rate),
      throttled: traffic.throttled,
      listRequests: traffic.listRequests,
      listSeconds: Math.round(traffic.listMs) / 1000,
      deleteRequests: traffic.deleteRequests,
      deletedObjects: traffic.deletedKeys,
    };
  }
  return { report, deleted: deleted - report.failed.length, failed: report.failed.length, pruned };
}

/**
 * Lists the data areas of the dataset's live published runs (those `skip` does not act on) and
 * keeps the orphans {@link orphanPredicate} finds; a run whose orphans cannot be told apart is
 * reported as protected instead.
 */
async function listOrphans(
  deps: MaintenanceDeps,
  dataset: DatasetView,
  store: ObjectStore,
  now: Date,
  skip: ReadonlySet<string>,
  report: GcReport,
): Promise<{ runId: string; keys: string[] }[]> {
  const runs = (await deps.queries.runs(dataset.datasetId)).filter(
    (r) => r.status === "SUCCEEDED" && !skip.has(r.runId),
  );
  const pendingKeys = keysUnderRoot(
    dataset.root,
    (await deps.queries.pendingCleanup({ datasetId: dataset.datasetId })).map((p) => p.url),
  );
  const out: { runId: string; keys: string[] }[] = [];
  const safetyWindowMs = effectiveSafetyWindowMs(dataset, now);
  for (const run of runs) {
    const state = await deps.load(run.runId);
    const refused = orphanCollectionRefusal(state.winners.values()) ?? writerAtWork(state, { dataset, now });
    if (refused !== null) {
      report.protected.push({ runId: run.runId, why: refused });
      continue;
    }
    const isOrphan = orphanPredicate({
      root: dataset.root,
      attempts: state.attempts.values(),
      pendingKeys,
      now,
      safetyWindowMs,
    });
    const keys: string[] = [];
    let token: string | null = null;
    do {
      // `store` is fenced: the lease is checked after the limiter's wait, right before the listing.
      const page: ListPage = await fenceRefusalAsError(store.list(runDataPrefix(run.runId), { token }));
      for (const o of page.objects) if (isOrphan(o)) keys.push(o.key);
      token = page.nextToken;
    } while (token);
    if (keys.length > 0) out.push({ runId: run.runId, keys });
  }
  return out;
}

async function prune(deps: MaintenanceDeps, pass: Pass, runId: string, reason: PruneReason): Promise<void> {
  const state = await deps.load(runId);
  const failedItems =
    (state.status === "FAILED" ? 1 : 0) +
    [...state.cleanup.values()].filter((c) => c.exhausted && c.state !== "deleted").length;
  await pass.execute({ type: "prune", runId, reason, attempts: state.attempts.size, failedItems });
}

function latestOf(...dates: Date[]): Date {
  return new Date(Math.max(...dates.map((d) => d.getTime())));
}
