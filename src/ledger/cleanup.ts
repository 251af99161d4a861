import { loserAttempts, winnerUrls } from "../adapters/postgres/maintenance-queries.js";
import { isLeaseLostError, isShardledgerError } from "../errors.js";
import type { CleanupReason } from "../events/catalogue.js";
import { planLoserCleanup } from "../maintenance/loser-planner.js";
import type { CleanupReport } from "../maintenance/maintenance-reports.js";
import { earliestRetry, isDue } from "../maintenance/pending-schedule.js";
import type { DatasetView } from "../projections/views.js";
import { deleteItem, itemRefusal, type WorkItem } from "./cleanup-item.js";
import {
  type MaintenanceDeps,
  type Pass,
  type PassCounts,
  requireDataset,
  runRecordedPass,
} from "./maintenance-pass.js";

/** Options of {@link cleanup}. @internal */
export interface CleanupOptions {
  datasetId?: string;
  dryRun?: boolean;
  /** Every pending item that is not exhausted, due or not. */
  retryNow?: boolean;
  signal?: AbortSignal;
}

/**
 * Deletes losers of published runs and drains the due part of the pending set, one pass per
 * dataset (a dataset another pass holds is skipped; one whose lease is lost midway stops).
 * @internal used through the Ledger facade.
 */
export async function cleanup(deps: MaintenanceDeps, options: CleanupOptions = {}): Promise<CleanupReport> {
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
  for (const item of items) {
    if (options.signal?.aborted) break;
    const outcome = await deleteItem(deps, dataset, store, item, pass, options.signal);
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
