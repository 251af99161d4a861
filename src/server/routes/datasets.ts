import { datasetJson } from "../../ledger/json-shapes.js";
import * as s from "../schemas.js";
import type { RouteContext } from "./route-context.js";

/**
 * The dataset registry: list, register, read and change a dataset's configuration
 * (`/v1/datasets`, `/v1/datasets/{datasetId}`).
 *
 * @internal
 */
export function registerDatasetRoutes({
  route,
  ledger,
  jsonBody,
  params,
  body,
  rawBody,
  ok,
  needDataset,
}: RouteContext) {
  route(
    "get",
    "/v1/datasets",
    { scope: "read", summary: "The registered datasets", response: s.libraryList("DatasetView[]") },
    async (c) => ok(c, (await ledger.datasets()).map(datasetJson)),
  );
  route(
    "post",
    "/v1/datasets",
    {
      scope: "admin",
      summary: "Register a dataset (idempotent when identical)",
      request: jsonBody(s.createDatasetBody),
      status: 201,
      response: s.libraryResult("DatasetView"),
    },
    async (c) => {
      const input = body(c, s.createDatasetBody);
      needDataset(c, input.datasetId);
      return ok(c, datasetJson(await ledger.createDataset((await rawBody(c)) as never)), 201);
    },
  );
  route(
    "get",
    "/v1/datasets/{datasetId}",
    {
      scope: "read",
      summary: "One dataset",
      request: { params: s.datasetParams },
      response: s.libraryResult("DatasetView"),
    },
    async (c) => ok(c, datasetJson(await ledger.dataset(params<{ datasetId: string }>(c).datasetId))),
  );
  route(
    "patch",
    "/v1/datasets/{datasetId}",
    {
      scope: "admin",
      dataset: "path",
      summary: "Change a dataset's policies",
      request: { params: s.datasetParams, ...jsonBody(s.updateDatasetBody) },
      response: s.libraryResult("DatasetView"),
    },
    async (c) => {
      body(c, s.updateDatasetBody);
      return ok(
        c,
        datasetJson(
          await ledger.updateDataset(params<{ datasetId: string }>(c).datasetId, (await rawBody(c)) as never),
        ),
      );
    },
  );
}
