import { AccessError } from "../http-errors.js";
import * as s from "../schemas.js";
import type { RouteContext } from "./route-context.js";

/**
 * What moves `_CURRENT` or deletes objects, all with the admin scope: publish a run, roll a
 * dataset back, and the maintenance passes (gc, retry-failed, cleanup), counted in the write,
 * deletion and retry metrics.
 *
 * @internal
 */
export function registerPublishAndMaintenanceRoutes({
  route,
  ledger,
  metrics,
  jsonBody,
  params,
  body,
  ok,
  principal,
  needDataset,
}: RouteContext) {
  route(
    "post",
    "/v1/runs/{runId}/publish",
    {
      scope: "admin",
      dataset: "run",
      summary: "Select the winners, write the manifest, then move _CURRENT (marker last)",
      request: { params: s.runParams },
      response: s.libraryResult("PublishResult"),
    },
    async (c) => {
      const result = await ledger.publish(params<{ runId: string }>(c).runId);
      metrics.writes.inc({ operation: "publish" });
      return ok(c, result);
    },
  );
  route(
    "post",
    "/v1/datasets/{datasetId}/rollback",
    {
      scope: "admin",
      dataset: "path",
      summary: "Move _CURRENT back (or forward) to a retained succeeded run",
      request: { params: s.datasetParams, ...jsonBody(s.rollbackBody) },
      response: s.libraryResult("RollbackResult"),
    },
    async (c) => {
      const { toRunId } = body(c, s.rollbackBody);
      const result = await ledger.rollback(params<{ datasetId: string }>(c).datasetId, toRunId);
      metrics.writes.inc({ operation: "rollback" });
      return ok(c, result);
    },
  );
  route(
    "post",
    "/v1/datasets/{datasetId}/gc",
    {
      scope: "admin",
      dataset: "path",
      summary: "Collect stale runs and orphans; enforce keep-runs, retention and the failed floor",
      request: { params: s.datasetParams, ...jsonBody(s.gcBody, false) },
      response: s.libraryResult("GcReport"),
    },
    async (c) => {
      const { dryRun } = body(c, s.gcBody);
      const report = await ledger.gc(params<{ datasetId: string }>(c).datasetId, dryRun ? { dryRun } : {});
      metrics.gc(report);
      return ok(c, report);
    },
  );
  route(
    "post",
    "/v1/datasets/{datasetId}/retry-failed",
    {
      scope: "admin",
      dataset: "path",
      summary: "Reopen failed runs and re-queue exhausted cleanup items inside the failed floor",
      request: { params: s.datasetParams, ...jsonBody(s.retryFailedBody, false) },
      response: s.libraryResult("RetryFailedReport"),
    },
    async (c) => {
      const { runId } = body(c, s.retryFailedBody);
      const report = await ledger.retryFailed({
        datasetId: params<{ datasetId: string }>(c).datasetId,
        ...(runId !== undefined ? { runId } : {}),
      });
      metrics.retryFailed(report);
      return ok(c, report);
    },
  );
  route(
    "post",
    "/v1/cleanup",
    {
      scope: "admin",
      summary: "Delete losers of published runs and drain the due pending-cleanup items",
      request: jsonBody(s.cleanupBody, false),
      response: s.libraryResult("CleanupReport"),
    },
    async (c) => {
      const input = body(c, s.cleanupBody);
      if (input.datasetId !== undefined) needDataset(c, input.datasetId);
      else if (principal(c).datasets !== "*") {
        throw new AccessError(
          403,
          "FORBIDDEN",
          'a cleanup of every dataset needs a token for all datasets ("*"); name datasetId',
        );
      }
      const result = await ledger.cleanup({
        ...(input.datasetId !== undefined ? { datasetId: input.datasetId } : {}),
        ...(input.dryRun ? { dryRun: true } : {}),
        ...(input.retryNow ? { retryNow: true } : {}),
      });
      metrics.cleanup(result);
      return ok(c, result);
    },
  );
}
