import { statusJson } from "../../ledger/json-shapes.js";
import * as s from "../schemas.js";
import type { RouteContext } from "./route-context.js";

/**
 * The read views of the projections, as the CLI's `status`, `runs`, `show`, `floors`, `rollups`
 * and `pending` print them: every dataset at a glance, one dataset's status, runs, retention
 * floors and rollups, one run with its attempts and winners, and the pending-cleanup set.
 *
 * @internal
 */
export function registerViewRoutes({ route, ledger, params, query, ok }: RouteContext) {
  route(
    "get",
    "/v1/status",
    { scope: "read", summary: "Every dataset at a glance", response: s.libraryList("DatasetStatus[]") },
    async (c) => ok(c, (await ledger.status()).map(statusJson)),
  );
  route(
    "get",
    "/v1/datasets/{datasetId}/status",
    {
      scope: "read",
      summary: "One dataset at a glance",
      request: { params: s.datasetParams },
      response: s.libraryResult("DatasetStatus"),
    },
    async (c) => ok(c, statusJson(await ledger.status(params<{ datasetId: string }>(c).datasetId))),
  );
  route(
    "get",
    "/v1/datasets/{datasetId}/runs",
    {
      scope: "read",
      summary: "The runs of a dataset, newest first",
      request: { params: s.datasetParams },
      response: s.libraryList("RunView[]"),
    },
    async (c) => ok(c, await ledger.runs(params<{ datasetId: string }>(c).datasetId)),
  );
  route(
    "get",
    "/v1/datasets/{datasetId}/floors",
    {
      scope: "read",
      summary: "What the failed-retention floor protects",
      request: { params: s.datasetParams },
      response: s.libraryList("RetentionFloor[]"),
    },
    async (c) => ok(c, await ledger.retentionFloors(params<{ datasetId: string }>(c).datasetId)),
  );
  route(
    "get",
    "/v1/datasets/{datasetId}/rollups",
    {
      scope: "read",
      summary: "Pruned counts per reason",
      request: { params: s.datasetParams },
      response: s.libraryList("Rollup[]"),
    },
    async (c) => ok(c, await ledger.rollups(params<{ datasetId: string }>(c).datasetId)),
  );
  route(
    "get",
    "/v1/runs/{runId}",
    {
      scope: "read",
      summary: "One run with its attempts and winners",
      request: { params: s.runParams },
      response: s.libraryResult("{ run, attempts, winners }"),
    },
    async (c) => ok(c, await ledger.run(params<{ runId: string }>(c).runId)),
  );
  route(
    "get",
    "/v1/pending",
    {
      scope: "read",
      summary: "The pending-cleanup set",
      request: { query: s.pendingQuery },
      response: s.libraryList("PendingCleanupItem[]"),
    },
    async (c) => {
      const { datasetId } = query(c, s.pendingQuery);
      return ok(c, await ledger.pendingCleanup(datasetId !== undefined ? { datasetId } : {}));
    },
  );
}
