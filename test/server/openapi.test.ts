import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { OPENAPI_PATH, renderOpenApi } from "../../scripts/generate-openapi.js";

/** docs/openapi.json is generated from the server's routes and schemas; it must not drift from them. */
describe("docs/openapi.json", () => {
  it("is what the generator renders from the routes now (run `npm run generate:openapi` after changing one)", () => {
    expect(readFileSync(OPENAPI_PATH, "utf8")).toBe(renderOpenApi());
  });

  it("is OpenAPI 3.1 with the bearer scheme, every endpoint of the contract and the exact error body", () => {
    const doc = JSON.parse(renderOpenApi()) as {
      openapi: string;
      components: { securitySchemes: Record<string, unknown>; schemas: Record<string, unknown> };
      paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
    };
    expect(doc.openapi).toBe("3.1.0");
    expect(doc.components.securitySchemes.bearerAuth).toMatchObject({ type: "http", scheme: "bearer" });
    const endpoints = Object.entries(doc.paths).flatMap(([path, methods]) =>
      Object.keys(methods).map((m) => `${m.toUpperCase()} ${path}`),
    );
    expect(endpoints.sort()).toEqual(
      [
        "GET /v1/status",
        "GET /v1/datasets",
        "POST /v1/datasets",
        "GET /v1/datasets/{datasetId}",
        "PATCH /v1/datasets/{datasetId}",
        "GET /v1/datasets/{datasetId}/status",
        "GET /v1/datasets/{datasetId}/runs",
        "GET /v1/datasets/{datasetId}/floors",
        "GET /v1/datasets/{datasetId}/rollups",
        "POST /v1/datasets/{datasetId}/rollback",
        "POST /v1/datasets/{datasetId}/gc",
        "POST /v1/datasets/{datasetId}/retry-failed",
        "POST /v1/runs",
        "GET /v1/runs/{runId}",
        "POST /v1/runs/{runId}/heartbeat",
        "POST /v1/runs/{runId}/fail",
        "POST /v1/runs/{runId}/attempts/started",
        "POST /v1/runs/{runId}/attempts/succeeded",
        "POST /v1/runs/{runId}/attempts/failed",
        "POST /v1/runs/{runId}/attempts/batch",
        "POST /v1/runs/{runId}/publish",
        "GET /v1/pending",
        "POST /v1/cleanup",
        "GET /v1/events",
        "POST /v1/audit",
        "GET /v1/audit/last",
      ].sort(),
    );
    // Operation ids are the library's method names (a generated client speaks the library's words).
    const ids = Object.values(doc.paths).flatMap((methods) =>
      Object.values(methods).map((op) => (op as { operationId?: string }).operationId),
    );
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toEqual(
      expect.arrayContaining(["startRun", "attemptSucceeded", "reportAttempts", "publish"]),
    );
    const batch = doc.paths["/v1/runs/{runId}/attempts/batch"]?.post;
    expect(JSON.stringify(batch)).toContain('"maxItems":10000');
    expect(batch?.responses["400"]).toMatchObject({
      content: { "application/json": { schema: { $ref: "#/components/schemas/ErrorBody" } } },
    });
    expect(doc.components.schemas.Error).toMatchObject({
      type: "object",
      required: ["code", "message"],
      properties: { code: { type: "string" }, message: { type: "string" }, field: { type: "string" } },
    });
  });
});
