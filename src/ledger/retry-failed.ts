import { prunedFailedItems } from "../adapters/postgres/maintenance-queries.js";
import { isIllegalTransitionError, NotFoundError } from "../errors.js";
import type { RetryFailedReport } from "../maintenance/maintenance-reports.js";
import { type MaintenanceDeps, requireDataset } from "./maintenance-pass.js";

/**
 * Reopens failed runs and re-queues exhausted cleanup items that are still inside the floor.
 * @internal used through the Ledger facade.
 */
export async function retryFailed(
  deps: MaintenanceDeps,
  input: { datasetId: string; runId?: string },
): Promise<RetryFailedReport> {
  const dataset = await requireDataset(deps, input.datasetId);
  const now = deps.clock();
  const floorMs = dataset.policies.failedRetentionMs;
  // An item is retryable while its floor row says so (a policy change never shortens what was
  // promised), or while the policy does.
  const floors = await deps.queries.retentionFloors(dataset.datasetId);
  const promised = new Map(floors.map((f) => [`${f.runId}\u0000${f.url ?? ""}`, f.protectedUntil.getTime()]));
  const untilOf = (runId: string, url: string | null, failedAt: Date) =>
    Math.max(failedAt.getTime() + floorMs, promised.get(`${runId}\u0000${url ?? ""}`) ?? 0);
  const inFloor = (runId: string, url: string | null, failedAt: Date | null) =>
    failedAt !== null && now.getTime() < untilOf(runId, url, failedAt);
  const report: RetryFailedReport = { matched: 0, retried: 0, prunedPastRetention: 0 };
  const runs = (await deps.queries.runs(dataset.datasetId)).filter(
    (r) => !input.runId || r.runId === input.runId,
  );
  if (input.runId && runs.length === 0) {
    // The run is gone from the registry: was it pruned past the floor, or did it never fail?
    const state = await deps.load(input.runId);
    // A run whose stream was archived has no hot events left; its Archived event still says
    // which dataset it was and what its prune counted.
    const pruned =
      state.status === "PRUNED" || state.status === "NONE"
        ? await prunedFailedItems(deps.database, input.runId)
        : null;
    const datasetId = state.status === "NONE" ? (pruned?.datasetId ?? null) : state.datasetId;
    // A run with no events, or another dataset's, is a wrong --run: answering "nothing failed"
    // would hide the typo from the operator who asked.
    if (state.status === "NONE" && pruned === null) throw new NotFoundError("run", input.runId);
    if (datasetId !== dataset.datasetId) {
      throw new NotFoundError("run", input.runId, {
        message: `run ${input.runId} belongs to dataset ${datasetId}, not ${dataset.datasetId}`,
        details: { datasetId: dataset.datasetId, runDatasetId: datasetId },
      });
    }
    if (pruned !== null) report.prunedPastRetention = pruned.failedItems;
    return report;
  }
  const items = await deps.queries.pendingCleanup({ datasetId: dataset.datasetId });
  for (const run of runs) {
    if (run.status === "FAILED") {
      report.matched++;
      if (inFloor(run.runId, null, run.failedAt)) {
        const failedAt = run.failedAt as Date;
        try {
          await deps.execute(
            { type: "reopen", runId: run.runId, reason: "retry-failed" },
            { failedRetentionMs: untilOf(run.runId, null, failedAt) - failedAt.getTime() },
          );
          report.retried++;
        } catch (e) {
          // Asked for this run, the operator gets the refusal (a prune that has begun); over the
          // whole dataset, the run is matched, not retried, and the others go on.
          if (input.runId || !isIllegalTransitionError(e)) throw e;
          deps.log?.({
            level: "warn",
            msg: "failed run not reopened",
            datasetId: dataset.datasetId,
            runId: run.runId,
            error: (e as Error).message,
          });
        }
      }
    }
    for (const item of items) {
      if (item.runId !== run.runId || item.state !== "exhausted") continue;
      report.matched++;
      if (inFloor(run.runId, item.url, item.lastFailureAt)) {
        await deps.execute({ type: "requeueCleanup", runId: run.runId, url: item.url });
        report.retried++;
      }
    }
  }
  if (!input.runId) {
    const rollups = await deps.queries.rollups(dataset.datasetId);
    report.prunedPastRetention = rollups
      .filter((r) => r.reason === "failed_retention")
      .reduce((n, r) => n + r.prunedFailedItems, 0);
  }
  return report;
}
