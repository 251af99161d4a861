import * as s from "../schemas.js";
import type { RouteContext } from "./route-context.js";

/**
 * A writer's run lifecycle: start a run, heartbeat, give up (`/v1/runs`, `…/heartbeat`, `…/fail`).
 * Its attempt reports are in attempts.ts, its publish in publish-and-maintenance.ts.
 *
 * @internal
 */
export function registerRunRoutes({
  route,
  ledger,
  metrics,
  jsonBody,
  params,
  body,
  ok,
  needDataset,
  rememberRunDataset,
  samePathRun,
}: RouteContext) {
  route(
    "post",
    "/v1/runs",
    {
      scope: "write",
      summary: "Start a run",
      request: jsonBody(s.startRunBody),
      status: 201,
      response: s.libraryResult("StartedRun"),
    },
    async (c) => {
      const input = body(c, s.startRunBody);
      needDataset(c, input.datasetId);
      const started = await ledger.startRun({
        datasetId: input.datasetId,
        numShards: input.numShards,
        ...(input.runId !== undefined ? { runId: input.runId } : {}),
      });
      rememberRunDataset(started.runId, started.datasetId);
      metrics.writes.inc({ operation: "startRun" });
      return ok(c, started, 201);
    },
  );
  route(
    "post",
    "/v1/runs/{runId}/heartbeat",
    {
      scope: "write",
      dataset: "run",
      summary: "Record that the run's writer is alive",
      request: { params: s.runParams },
      response: s.libraryResult("RunView"),
    },
    async (c) => {
      const run = await ledger.heartbeat(params<{ runId: string }>(c).runId);
      metrics.writes.inc({ operation: "heartbeat" });
      return ok(c, run);
    },
  );
  route(
    "post",
    "/v1/runs/{runId}/fail",
    {
      scope: "write",
      dataset: "run",
      summary: "Mark the run FAILED (the writer gave up)",
      request: { params: s.runParams, ...jsonBody(s.failRunBody) },
      response: s.libraryResult("RunView"),
    },
    async (c) => {
      const { runId } = params<{ runId: string }>(c);
      const input = body(c, s.failRunBody);
      samePathRun(runId, input.runId);
      const run = await ledger.failRun(runId, input.reason);
      metrics.writes.inc({ operation: "failRun" });
      return ok(c, run);
    },
  );
}
