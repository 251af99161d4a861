import { loserAttempts, winnerUrls } from "../adapters/postgres/maintenance-queries.js";
import { isLeaseLostError, isShardledgerError } from "../errors.js";
import type { CleanupReason } from "../events/catalogue.js";
import type { RunCommand } from "../machines/run-commands.js";
import { parseCleanupThroughput } from "../maintenance/cleanup-throughput.js";
import { coalescedCheck } from "../maintenance/coalesced-check.js";
import { planLoserCleanup } from "../maintenance/loser-planner.js";
import type { CleanupReport, PassThroughput } from "../maintenance/maintenance-reports.js";
import { deleteObject } from "../maintenance/object-deleter.js";
import { earliestRetry, isDue } from "../maintenance/pending-schedule.js";
import { ThrottledStore } from "../maintenance/throttled-store.js";
import type { DatasetView } from "../projections/views.js";
import type { ObjectStore } from "../storage/object-store.js";
import {
  deleteItem,
  type ItemOutcome,
  isObjectItem,
  itemRefusal,
  itemRefusals,
  keyOf,
  type WorkItem,
  youngObjects,
} from "./cleanup-item.js";
import { cleanConcurrently } from "./concurrent-cleanup.js";
import {
  type MaintenanceDeps,
  type Pass,
  type PassCounts,
  requireDataset,
  runRecordedPass,
} from "./maintenance-pass.js";

/**
 * Options of {@link cleanup}.
 *
 * @example
 * ```ts
 * const options: CleanupOptions = { datasetId: "sales", concurrency: 32, initialRate: 2000 }
 * ```
 */
export interface CleanupOptions {
  datasetId?: string;
  dryRun?: boolean;
  /** Every pending item that is not exhausted, due or not. */
  retryNow?: boolean;
  signal?: AbortSignal;
  /** Prefixes in flight (1: the sequential pass). Validated: an integer 1…256; default 16 (see cleanup-throughput.ts). */
  concurrency?: number;
  /** The delete rate (keys/s) the adaptive limiter starts at. Validated: > 0; default 1,000. */
  initialRate?: number;
}

/**
 * Deletes losers of published runs and drains the due part of the pending set, one pass per
 * dataset (a dataset another pass holds is skipped; one whose lease is lost midway stops).
 * @internal used through the Ledger facade.
 */
export async function cleanup(deps: MaintenanceDeps, options: CleanupOptions = {}): Promise<CleanupReport> {
  // Validated before anything is read or deleted.
  const throughput = parseCleanupThroughput({
    ...(options.concurrency !== undefined ? { concurrency: options.concurrency } : {}),
    ...(options.initialRate !== undefined ? { initialRate: options.initialRate } : {}),
  });
  options = { ...options, ...throughput };
  const report: CleanupReport = {
    deleted: [],
    failed: [],
    planned: [],
    skipped: [],
    leaseLost: [],
    pending: 0,
    nextDueAt: null,
    dryRun: options.dryRun === true,
  };
  const datasets = options.datasetId
    ? [await requireDataset(deps, options.datasetId)]
    : await deps.queries.datasets();
  for (const dataset of datasets) {
    if (options.signal?.aborted) break;
    try {
      await runRecordedPass(deps, dataset.datasetId, "cleanup", options, (pass) =>
        cleanupDataset(deps, dataset, report, options, pass),
      );
    } catch (e) {
      if (isShardledgerError(e) && e.code === "LOCKED") report.skipped.push(dataset.datasetId);
      else if (isLeaseLostError(e)) {
        // Fenced off mid-pass: nothing more was sent or appended; another pass owns the dataset.
        report.leaseLost.push(dataset.datasetId);
        deps.log?.({
          level: "error",
          msg: "maintenance lease lost; the pass stopped",
          datasetId: dataset.datasetId,
          error: e.message,
        });
      } else throw e;
    }
  }
  // Counted after the pass, over every selected dataset (skipped ones too): an item that was not
  // due, or whose dataset another pass held, is still work left, and exit 4 must say so.
  const pending = await deps.queries.pendingCleanup(
    options.datasetId ? { datasetId: options.datasetId } : {},
  );
  report.pending = pending.length;
  report.nextDueAt = earliestRetry(pending);
  return report;
}

async function cleanupDataset(
  deps: MaintenanceDeps,
  dataset: DatasetView,
  report: CleanupReport,
  options: CleanupOptions,
  pass: Pass,
): Promise<PassCounts> {
  const now = deps.clock();
  const items = await cleanupWork(deps, dataset, now, options.retryNow === true);
  if (options.dryRun) {
    // Exactly what a real pass would delete: the same fresh-state check, nothing recorded.
    for (const i of items) if ((await itemRefusal(pass, dataset, i)) === null) report.planned.push(i.url);
    return { deleted: 0, failed: 0, pruned: 0 };
  }
  const store = deps.storeFor(dataset);
  let deleted = 0;
  let failed = 0;
  const outcomes =
    (options.concurrency ?? 1) > 1 && items.length > 0
      ? await cleanWithThroughput(deps, dataset, store, items, pass, options, report)
      : cleanItemsSequentially(deps, dataset, store, items, pass, options.signal);
  for await (const { item, outcome } of outcomes) {
    if (!item.planned && outcome.refused === undefined) report.planned.push(item.url);
    if (outcome.deleted) {
      report.deleted.push(item.url);
      deleted++;
    } else {
      report.failed.push({ url: item.url, error: outcome.error ?? "unknown", tries: outcome.tries });
      failed++;
    }
  }
  const pending = (await deps.queries.pendingCleanup({ datasetId: dataset.datasetId })).length;
  deps.metric?.({ name: "cleanup.deleted", value: deleted, datasetId: dataset.datasetId });
  deps.metric?.({ name: "cleanup.failed", value: failed, datasetId: dataset.datasetId });
  deps.metric?.({ name: "cleanup.pending", value: pending, datasetId: dataset.datasetId });
  deps.log?.({
    level: failed > 0 ? "warn" : "info",
    msg: "cleanup pass",
    datasetId: dataset.datasetId,
    deleted,
    failed,
    pending,
  });
  return { deleted, failed, pruned: 0 };
}

/** Today's pass: one item at a time, each planned, deleted and recorded before the next. */
async function* cleanItemsSequentially(
  deps: MaintenanceDeps,
  dataset: DatasetView,
  store: ObjectStore,
  items: readonly WorkItem[],
  pass: Pass,
  signal: AbortSignal | undefined,
): AsyncGenerator<{ item: WorkItem; outcome: ItemOutcome }> {
  for (const item of items) {
    if (signal?.aborted) break;
    yield { item, outcome: await deleteItem(deps, dataset, store, item, pass, signal) };
  }
}

/**
 * The concurrent pass (ledger/concurrent-cleanup.ts): `concurrency` prefixes in flight through an
 * adaptive rate limiter for the store's root, batched planning and outcome appends, the guard on
 * fresh state per batch, the coalesced fencing check before every request.
 */
async function cleanWithThroughput(
  deps: MaintenanceDeps,
  dataset: DatasetView,
  store: ObjectStore,
  items: readonly WorkItem[],
  pass: Pass,
  options: CleanupOptions,
  report: { throughput?: PassThroughput[] },
): Promise<{ item: WorkItem; outcome: ItemOutcome }[]> {
  const concurrency = options.concurrency ?? 1;
  const throttled = new ThrottledStore(store, { initialRate: options.initialRate ?? 1_000 });
  const outcomes = await cleanItemsConcurrently(deps, dataset, throttled, items, pass, {
    concurrency,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const traffic = throttled.traffic();
  report.throughput ??= [];
  report.throughput.push({
    datasetId: dataset.datasetId,
    concurrency,
    settledRate: Math.round(traffic.deleteRate.rate),
    throttled: traffic.throttled,
    listRequests: traffic.listRequests,
    listSeconds: Math.round(traffic.listMs) / 1000,
    deleteRequests: traffic.deleteRequests,
    deletedObjects: traffic.deletedKeys,
  });
  return outcomes;
}

/**
 * Items through the concurrent engine over a store that already goes through the root's limiter
 * (cleanup's losers, gc's orphans); outcomes in item order, none for an item never reached. @internal
 */
export async function cleanItemsConcurrently(
  deps: MaintenanceDeps,
  dataset: DatasetView,
  throttled: ObjectStore,
  items: readonly WorkItem[],
  pass: Pass,
  options: { concurrency: number; signal?: AbortSignal },
): Promise<{ item: WorkItem; outcome: ItemOutcome }[]> {
  const concurrency = options.concurrency;
  const executeMany = async (runId: string, commands: readonly RunCommand[]) => {
    if (deps.executeMany) await deps.executeMany(runId, commands, { fence: pass.lease.fence });
    else for (const c of commands) await pass.execute(c);
  };
  let judgedOn = dataset;
  const results = await cleanConcurrently(
    items,
    {
      store: throttled,
      keyOf: (item) => keyOf(dataset, item),
      isObject: (item, key) => isObjectItem(item.runId, key, item.reason),
      // The window as it is when each batch is judged: a policy changed during the pass counts.
      spare: (item) => youngObjects(judgedOn, item.reason, deps.clock()),
      refusals: async (batch) => {
        judgedOn = (await deps.queries.dataset(dataset.datasetId)) ?? judgedOn;
        return itemRefusals(pass, dataset, batch);
      },
      executeMany,
      assertHeld: coalescedCheck(() => pass.lease.assertHeld()),
      deleteObject,
      policies: deps.policies,
      clock: deps.clock,
      ...(deps.sleep ? { sleep: deps.sleep } : {}),
      ...(deps.random ? { random: deps.random } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      log: (record) => deps.log?.({ ...record, datasetId: dataset.datasetId }),
    },
    { concurrency, batchSize: Math.max(32, concurrency * 4) },
  );
  return items.flatMap((item, i) => {
    const r = results[i];
    if (!r) return [];
    const outcome: ItemOutcome = { url: r.url, deleted: r.deleted, error: r.error, tries: r.tries };
    if (r.refused !== undefined) outcome.refused = r.refused;
    return [{ item, outcome }];
  });
}

/** Losers not yet planned, plus pending items that are due (or were planned and never reported). */
async function cleanupWork(
  deps: MaintenanceDeps,
  dataset: DatasetView,
  now: Date,
  retryNow: boolean,
): Promise<WorkItem[]> {
  const pending = await deps.queries.pendingCleanup({ datasetId: dataset.datasetId });
  const pendingByKey = new Map(pending.map((p) => [`${p.runId}\u0000${p.url}`, p]));
  const losers = await loserAttempts(deps.database, dataset.datasetId);
  const winners = await winnerUrls(deps.database, dataset.datasetId);
  const items: WorkItem[] = [];
  const seen = new Set<string>();
  const byRun = new Map<string, { url: string; status: "LOSER" }[]>();
  for (const l of losers) {
    const list = byRun.get(l.runId) ?? [];
    list.push({ url: l.url, status: "LOSER" });
    byRun.set(l.runId, list);
  }
  for (const [runId, attempts] of byRun) {
    const plan = planLoserCleanup({ root: dataset.root, attempts, winnerUrls: winners });
    // A loser the planner refuses is still an item: the guard refuses it again when it comes
    // up and records why, so it shows in the pending set instead of staying a LOSER forever.
    for (const url of [...plan.prefixes.map((p) => p.url), ...plan.refused.map((r) => r.url)]) {
      const key = `${runId}\u0000${url}`;
      if (seen.has(key) || pendingByKey.has(key)) continue;
      seen.add(key);
      items.push({ runId, url, reason: "loser", planned: false, priorTries: 0 });
    }
  }
  for (const p of pending) {
    if (!isDue(p, now, retryNow)) continue;
    items.push({
      runId: p.runId,
      url: p.url,
      reason: p.reason as CleanupReason,
      planned: p.state === "planned",
      priorTries: p.tries,
    });
  }
  return items;
}
