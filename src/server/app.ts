import { randomUUID } from "node:crypto";
import { createRoute, OpenAPIHono, type RouteConfig } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import { routePath } from "hono/route";
import type { Logger } from "pino";
import type { z } from "zod";
import type { AuditReport } from "../adapters/postgres/rebuild.js";
import { toJsonLine } from "../cli/json-output.js";
import {
  describeError,
  errorBody,
  httpStatusFor,
  isShardledgerError,
  NotFoundError,
  ValidationError,
} from "../errors.js";
import { envelopeToJson } from "../events/envelope.js";
import { datasetJson, statusJson } from "../ledger/json-shapes.js";
import type {
  AttemptInput,
  AttemptReport,
  AttemptReportResult,
  AttemptResult,
  Ledger,
} from "../ledger/open-ledger.js";
import {
  authenticate,
  datasetAllowed,
  OPEN_PRINCIPAL,
  type Principal,
  type Scope,
  scopeAllows,
  type TokenEntry,
} from "./auth.js";
import { ServerMetrics } from "./metrics.js";
import * as s from "./schemas.js";
import { findDashboardDir, readDashboardFile } from "./static-files.js";

/**
 * Options of {@link createServerApp}.
 *
 * @internal
 */
export interface ServerAppOptions {
  /** Configured tokens; empty or absent: the server is open (every request is admin). */
  tokens?: readonly TokenEntry[];
  /** One JSON line per request (and errors); default: silent. */
  logger?: Logger;
  /** The dashboard folder (default: the package's `dashboard/`). */
  dashboardDir?: string;
  /** True once the server is stopping: new requests are answered 503 INTERRUPTED. */
  isStopping?: () => boolean;
  /** The package version, in the OpenAPI document. */
  version?: string;
}

/** HTTP-only refusals: no or unknown token (401), a scope or dataset the token does not cover (403). */
class AccessError extends Error {
  constructor(
    readonly status: 401 | 403,
    readonly code: "UNAUTHENTICATED" | "FORBIDDEN",
    message: string,
  ) {
    super(message);
  }
}

/** The largest request body the API reads. */
const MAX_BODY_BYTES = 32 * 1024 * 1024;

interface Vars {
  requestId: string;
  principal: Principal;
}
type Env = { Variables: Vars };
type Ctx = Context<Env>;

/**
 * Each endpoint's `operationId`: the library method it calls, so a generated client has the same
 * operation names as the TypeScript library (`status(id)` is `datasetStatus`, the batch is
 * `reportAttempts`, the last audit `lastAudit`).
 */
const OPERATION_IDS: Readonly<Record<string, string>> = {
  "get /v1/status": "status",
  "get /v1/datasets": "datasets",
  "post /v1/datasets": "createDataset",
  "get /v1/datasets/{datasetId}": "dataset",
  "patch /v1/datasets/{datasetId}": "updateDataset",
  "get /v1/datasets/{datasetId}/status": "datasetStatus",
  "get /v1/datasets/{datasetId}/runs": "runs",
  "get /v1/datasets/{datasetId}/floors": "retentionFloors",
  "get /v1/datasets/{datasetId}/rollups": "rollups",
  "post /v1/datasets/{datasetId}/rollback": "rollback",
  "post /v1/datasets/{datasetId}/gc": "gc",
  "post /v1/datasets/{datasetId}/retry-failed": "retryFailed",
  "post /v1/runs": "startRun",
  "get /v1/runs/{runId}": "run",
  "post /v1/runs/{runId}/heartbeat": "heartbeat",
  "post /v1/runs/{runId}/fail": "failRun",
  "post /v1/runs/{runId}/attempts/started": "attemptStarted",
  "post /v1/runs/{runId}/attempts/succeeded": "attemptSucceeded",
  "post /v1/runs/{runId}/attempts/failed": "attemptFailed",
  "post /v1/runs/{runId}/attempts/batch": "reportAttempts",
  "post /v1/runs/{runId}/publish": "publish",
  "get /v1/pending": "pendingCleanup",
  "post /v1/cleanup": "cleanup",
  "get /v1/events": "events",
  "post /v1/audit": "audit",
  "get /v1/audit/last": "lastAudit",
};

/** The OpenAPI document's header (the routes and schemas are added from the app). @internal */
export const OPENAPI_INFO = (version: string) => ({
  openapi: "3.1.0",
  info: {
    title: "shardledger",
    version,
    description:
      "HTTP API of `shardledger serve`: the same operations and JSON shapes as the CLI's `--json`. Errors are `{ error: { code, message, field?, …details } }` with the HTTP status of their code. See docs/http-api.md.",
  },
});

/**
 * The HTTP API over one ledger, as a Hono app (see docs/http-api.md): serve it with
 * {@link startServer}, or call `app.request()` in tests.
 *
 * @internal
 */
export function createServerApp(ledger: Ledger, options: ServerAppOptions = {}) {
  const tokens = options.tokens ?? [];
  const open = tokens.length === 0;
  const metrics = new ServerMetrics(ledger);
  const logger = options.logger;
  const dashboardDir = options.dashboardDir ?? findDashboardDir();
  /** A run's dataset never changes: looked up once per run for the write checks. */
  const runDatasets = new Map<string, string>();
  let lastAudit: (AuditReport & { at: string }) | undefined;

  const app = new OpenAPIHono<Env>({
    defaultHook: (result) => {
      if (!result.success) throw validationErrorOf(result.error, result.target);
    },
  });
  app.openAPIRegistry.registerComponent("securitySchemes", "bearerAuth", {
    type: "http",
    scheme: "bearer",
    description: "A token from the server's tokens file (scope read, write or admin)",
  });

  // Request id, access log, metrics, and the stopping gate: around everything.
  app.use("*", async (c, next) => {
    const started = performance.now();
    const incoming = c.req.header("x-request-id");
    const requestId =
      incoming !== undefined && /^[\x21-\x7e]{1,200}$/.test(incoming) ? incoming : randomUUID();
    c.set("requestId", requestId);
    if (options.isStopping?.() && !c.req.path.startsWith("/healthz")) {
      c.res = sendJson(
        c,
        { error: { code: "INTERRUPTED", message: "the server is stopping; try again on another instance" } },
        503,
      );
    } else {
      await next();
    }
    c.res.headers.set("x-request-id", requestId);
    const status = c.res.status;
    const ms = performance.now() - started;
    const route = routeLabel(c);
    metrics.requests.inc({ method: c.req.method, route, status: String(status) });
    metrics.latency.observe({ method: c.req.method, route, status: String(status) }, ms / 1000);
    logger?.info(
      { method: c.req.method, path: c.req.path, route, status, ms: Math.round(ms * 10) / 10, requestId },
      "request",
    );
  });

  // Authentication for the API; the service endpoints and the dashboard's files need no token.
  app.use("/v1/*", async (c, next) => {
    if (open) c.set("principal", OPEN_PRINCIPAL);
    else {
      const principal = authenticate(tokens, c.req.header("authorization"));
      if (!principal) {
        throw new AccessError(
          401,
          "UNAUTHENTICATED",
          c.req.header("authorization") === undefined
            ? "no bearer token: send Authorization: Bearer <token>"
            : "unknown or malformed bearer token",
        );
      }
      c.set("principal", principal);
    }
    await next();
  });

  // After authentication: a body is read only for a known token. 10,000 batch reports with long
  // urls fit well inside the limit.
  app.use(
    "/v1/*",
    bodyLimit({
      maxSize: MAX_BODY_BYTES,
      onError: (c) =>
        sendJson(
          c as Ctx,
          errorBody(new ValidationError("body", `is larger than ${MAX_BODY_BYTES / 1024 / 1024} MiB`)),
          400,
        ),
    }),
  );

  app.onError((e, c) => {
    const ctx = c as Ctx;
    if (e instanceof AccessError) {
      return sendJson(ctx, { error: { code: e.code, message: e.message } }, e.status);
    }
    if (e instanceof HTTPException) {
      const error =
        e.status === 415
          ? new ValidationError("content-type", "send the body as application/json")
          : new ValidationError("body", e.message || "invalid request");
      return sendJson(ctx, errorBody(error), 400);
    }
    if (isShardledgerError(e)) {
      const status = httpStatusFor(e);
      if (status >= 500) logError(ctx, e);
      return sendJson(ctx, errorBody(e), status);
    }
    logError(ctx, e);
    return sendJson(ctx, errorBody(e), 500);
  });

  app.notFound((c) =>
    sendJson(
      c as Ctx,
      errorBody(
        new NotFoundError("route", `${c.req.method} ${c.req.path}`, {
          message: `no endpoint ${c.req.method} ${c.req.path} (see /openapi.json)`,
        }),
      ),
      404,
    ),
  );

  function logError(c: Ctx, e: unknown) {
    logger?.error(
      {
        requestId: c.get("requestId"),
        method: c.req.method,
        path: c.req.path,
        err: { message: describeError(e), stack: e instanceof Error ? e.stack : undefined },
      },
      "request failed",
    );
  }

  // --- access checks (route middleware: they run before the body is even read) ---------------

  const principal = (c: Ctx): Principal => c.get("principal");
  const needScope = (c: Ctx, scope: Scope) => {
    const p = principal(c);
    if (!scopeAllows(p, scope)) {
      throw new AccessError(
        403,
        "FORBIDDEN",
        `this endpoint needs the ${scope} scope (the token has ${p.scope})`,
      );
    }
  };
  const needDataset = (c: Ctx, datasetId: string) => {
    const p = principal(c);
    if (!datasetAllowed(p, datasetId)) {
      throw new AccessError(403, "FORBIDDEN", `the token may not change dataset ${datasetId}`);
    }
  };
  const runDataset = async (runId: string): Promise<string> => {
    const known = runDatasets.get(runId);
    if (known !== undefined) return known;
    const { run } = await ledger.run(runId);
    if (runDatasets.size >= 100_000) runDatasets.clear();
    runDatasets.set(runId, run.datasetId);
    return run.datasetId;
  };
  /** The scope, and for write/admin the dataset named by the path (`datasetId`, or the run's). */
  const access =
    (scope: Scope, dataset?: "path" | "run"): MiddlewareHandler<Env> =>
    async (c, next) => {
      needScope(c, scope);
      if (dataset === "path") needDataset(c, c.req.param("datasetId") ?? "");
      if (dataset === "run") {
        const runId = c.req.param("runId") ?? "";
        // An id that cannot name a run is the validator's (400), not a lookup's.
        if (s.runParams.safeParse({ runId }).success) needDataset(c, await runDataset(runId));
      }
      await next();
    };

  // --- routes -----------------------------------------------------------------------------------

  const errorResponses = {
    400: errorResponse("Invalid input (the body names the field)"),
    401: errorResponse("No or unknown bearer token"),
    403: errorResponse("The token's scope or datasets do not cover this"),
    404: errorResponse("Not found"),
    409: errorResponse("Refused by a rule, or a conflict"),
    423: errorResponse("Another pass holds the lock"),
    500: errorResponse("A bug"),
    502: errorResponse("The object store failed"),
    503: errorResponse("The server is stopping"),
  };

  type Method = "get" | "post" | "patch";
  const route = (
    method: Method,
    path: string,
    config: {
      scope: Scope;
      dataset?: "path" | "run";
      summary: string;
      request?: RouteConfig["request"];
      status?: 200 | 201;
      response: z.ZodType;
    },
    handler: (c: Ctx) => Promise<Response>,
  ) => {
    const operationId = OPERATION_IDS[`${method} ${path}`];
    if (operationId === undefined) throw new Error(`no operationId for ${method} ${path}`);
    const definition = createRoute({
      method,
      path,
      operationId,
      summary: config.summary,
      description: `Scope: ${config.scope}${config.dataset ? " (of the dataset)" : ""}.`,
      security: [{ bearerAuth: [] }],
      middleware: [access(config.scope, config.dataset)] as never,
      ...(config.request ? { request: config.request } : {}),
      responses: {
        [config.status ?? 200]: {
          description: config.summary,
          content: { "application/json": { schema: config.response } },
        },
        ...errorResponses,
      },
    });
    app.openapi(definition, handler as never);
  };

  const jsonBody = (schema: z.ZodType, required = true) => ({
    body: { required, content: { "application/json": { schema } } },
  });
  const params = <T>(c: Ctx) => c.req.valid("param" as never) as T;
  const body = <S extends z.ZodType>(c: Ctx, _schema: S) =>
    (c.req.valid("json" as never) ?? {}) as z.output<S>;
  const query = <S extends z.ZodType>(c: Ctx, _schema: S) => c.req.valid("query" as never) as z.output<S>;
  /** The body exactly as sent, for library calls that validate (and normalise) themselves. */
  const rawBody = async (c: Ctx) => (await c.req.json()) as Record<string, unknown>;
  const ok = (c: Ctx, value: unknown, status = 200) => sendJson(c, value, status);
  /** A body `runId` must equal the path's (the path wins; a different one is a mistake). */
  const samePathRun = (runId: string, bodyRunId: string | undefined) => {
    if (bodyRunId !== undefined && bodyRunId !== runId) {
      throw new ValidationError("runId", `the body names run ${bodyRunId} but the path names run ${runId}`);
    }
  };

  // Datasets
  route(
    "get",
    "/v1/status",
    { scope: "read", summary: "Every dataset at a glance", response: s.libraryList("DatasetStatus[]") },
    async (c) => ok(c, (await ledger.status()).map(statusJson)),
  );
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

  // Runs
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
      runDatasets.set(started.runId, started.datasetId);
      metrics.writes.inc({ operation: "startRun" });
      return ok(c, started, 201);
    },
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
  const report = async (
    kind: "started" | "succeeded" | "failed",
    input: AttemptInput & { error?: string },
  ): Promise<AttemptResult> => {
    try {
      const result =
        kind === "started"
          ? await ledger.attemptStarted(input)
          : kind === "succeeded"
            ? await ledger.attemptSucceeded(input)
            : await ledger.attemptFailed(input);
      metrics.attemptReports.inc({ kind, outcome: "ok" });
      metrics.writes.inc({ operation: `attempt_${kind}` });
      return result;
    } catch (e) {
      metrics.attemptReports.inc({ kind, outcome: isShardledgerError(e) ? e.code : "INTERNAL" });
      throw e;
    }
  };
  for (const kind of ["started", "succeeded", "failed"] as const) {
    const schema = kind === "failed" ? s.attemptFailedBody : s.attemptBody;
    route(
      "post",
      `/v1/runs/{runId}/attempts/${kind}`,
      {
        scope: "write",
        dataset: "run",
        summary: `Report that an attempt of a shard ${kind === "started" ? "started writing" : kind === "succeeded" ? "finished writing (a candidate winner)" : "failed"}`,
        request: { params: s.runParams, ...jsonBody(schema) },
        response: s.attemptResult,
      },
      async (c) => {
        const { runId } = params<{ runId: string }>(c);
        const input = body(c, schema) as z.output<typeof s.attemptFailedBody>;
        samePathRun(runId, input.runId);
        return ok(
          c,
          await report(kind, {
            ...input,
            runId,
            taskAttemptId: input.taskAttemptId ?? null,
            url: input.url ?? null,
          }),
        );
      },
    );
  }
  route(
    "post",
    "/v1/runs/{runId}/attempts/batch",
    {
      scope: "write",
      dataset: "run",
      summary:
        "Many attempt reports in one request (1..10000): each validated and applied on its own, idempotent like single reports; always 200 when the envelope is valid",
      request: { params: s.runParams, ...jsonBody(s.batchBody) },
      response: s.batchResult,
    },
    async (c) => {
      const { runId } = params<{ runId: string }>(c);
      const { reports } = body(c, s.batchBody);
      // The path's run and the kind/error pairing are checked here; everything else (and the
      // group commit that stores the valid ones in as few appends as possible) is the library's
      // `reportAttempts`, so a batch behaves exactly like the same reports made one by one.
      const results: AttemptReportResult[] = new Array(reports.length);
      const valid: { index: number; report: AttemptReport }[] = [];
      reports.forEach((item, index) => {
        try {
          valid.push({ index, report: { ...parseBatchItem(item, runId), runId } as AttemptReport });
        } catch (e) {
          const kind = (item as { kind?: unknown } | null)?.kind;
          metrics.attemptReports.inc({
            kind: typeof kind === "string" ? kind : "unknown",
            outcome: "VALIDATION",
          });
          results[index] = { index, ok: false, error: errorBody(e).error };
        }
      });
      const outcomes = await ledger.reportAttempts(valid.map((v) => v.report));
      outcomes.forEach((outcome, i) => {
        const { index, report } = valid[i] as { index: number; report: AttemptReport };
        metrics.attemptReports.inc({ kind: report.kind, outcome: outcome.ok ? "ok" : outcome.error.code });
        if (outcome.ok) metrics.writes.inc({ operation: `attempt_${report.kind}` });
        results[index] = outcome.ok
          ? { index, ok: true, attempt: outcome.attempt }
          : { index, ok: false, error: outcome.error };
      });
      return ok(c, { results });
    },
  );
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

  // Maintenance and the log
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
  route(
    "get",
    "/v1/events",
    {
      scope: "read",
      summary:
        "Read the log: one stream from a version (`stream`, `from` inclusive, default 1), or the global log after a position (`from` exclusive, default 0)",
      request: { query: s.eventsQuery },
      response: s.libraryList("RecordedEvent[] (envelopeToJson)"),
    },
    async (c) => {
      const q = query(c, s.eventsQuery);
      const events = await ledger.events({
        ...(q.stream !== undefined ? { stream: q.stream } : {}),
        ...(q.from !== undefined ? { from: q.from } : {}),
        ...(q.limit !== undefined ? { limit: q.limit } : {}),
      });
      return ok(c, events.map(envelopeToJson));
    },
  );
  route(
    "post",
    "/v1/audit",
    {
      scope: "read",
      summary: "Replay the log into scratch projections and compare them with the live ones",
      response: s.libraryResult("AuditReport & { at }"),
    },
    async (c) => {
      const result = await ledger.audit();
      lastAudit = { ...result, at: new Date().toISOString() };
      return ok(c, lastAudit);
    },
  );
  route(
    "get",
    "/v1/audit/last",
    {
      scope: "read",
      summary: "The last audit this server ran (404 before the first)",
      response: s.libraryResult("AuditReport & { at }"),
    },
    async (c) => {
      if (!lastAudit)
        throw new NotFoundError("audit", "last", { message: "this server has run no audit yet" });
      return ok(c, lastAudit);
    },
  );

  // Service endpoints (no token)
  app.get("/healthz", (c) => sendJson(c as Ctx, { status: "ok" }, 200));
  app.get("/readyz", async (c) => {
    try {
      await ledger.datasets();
      return sendJson(c as Ctx, { status: "ready" }, 200);
    } catch (e) {
      return sendJson(c as Ctx, { status: "unavailable", error: errorBody(e).error }, 503);
    }
  });
  app.get("/metrics", async (c) => {
    const text = await metrics.registry.metrics();
    return c.body(text, 200, { "content-type": metrics.registry.contentType });
  });
  app.get("/openapi.json", (c) =>
    sendJson(c as Ctx, app.getOpenAPI31Document(OPENAPI_INFO(options.version ?? "0.0.0")), 200),
  );

  // The dashboard's static files (no token: the page asks for one for its data calls).
  const serveDashboard = async (c: Ctx, relative: string) => {
    if (!dashboardDir) {
      throw new NotFoundError("file", relative, { message: "this installation has no dashboard/ folder" });
    }
    const file = await readDashboardFile(dashboardDir, relative);
    if (!file) throw new NotFoundError("file", relative, { message: `no dashboard file ${relative}` });
    return c.body(file.body as Uint8Array<ArrayBuffer>, 200, {
      "content-type": file.contentType,
      "cache-control": "no-cache",
      "x-content-type-options": "nosniff",
    });
  };
  app.get("/", (c) => serveDashboard(c as Ctx, ""));
  app.get("/ui", (c) => c.redirect("/ui/"));
  app.get("/ui/*", (c) => serveDashboard(c as Ctx, c.req.path.slice("/ui/".length)));

  return app;
}

/** The app {@link createServerApp} builds. @internal */
export type ServerApp = ReturnType<typeof createServerApp>;

/** One batch item: validated on its own; its `runId`, if any, must be the path's. */
function parseBatchItem(item: unknown, runId: string) {
  const result = s.batchReportSchema.safeParse(item);
  if (!result.success) throw validationErrorOf(result.error, "json");
  const parsed = result.data;
  if (parsed.runId !== undefined && parsed.runId !== runId) {
    throw new ValidationError(
      "runId",
      `the report names run ${parsed.runId} but the path names run ${runId}`,
    );
  }
  if (parsed.error !== undefined && parsed.kind !== "failed") {
    throw new ValidationError(
      "error",
      `only a "failed" report carries an error (this one is "${parsed.kind}")`,
    );
  }
  const { runId: _runId, ...rest } = parsed;
  return {
    ...rest,
    taskAttemptId: rest.taskAttemptId ?? null,
    url: rest.url ?? null,
  } as AttemptInput & { kind: "started" | "succeeded" | "failed"; error?: string };
}

/** A zod failure as the {@link ValidationError} that names its field (like `parseWithSchema`). */
function validationErrorOf(error: z.ZodError, target: string): ValidationError {
  const issue = error.issues[0];
  const field =
    issue?.code === "unrecognized_keys"
      ? issue.keys.join(", ")
      : issue && issue.path.length > 0
        ? issue.path.map(String).join(".")
        : target === "json"
          ? "body"
          : target;
  return new ValidationError(field, issue?.message ?? "invalid", { details: { issues: error.issues } });
}

/** JSON exactly as the CLI's `--json` prints it (dates as ISO strings, bigints as decimal text). */
function sendJson(c: Ctx, value: unknown, status: number): Response {
  return c.body(toJsonLine(value), status as 200, { "content-type": "application/json; charset=utf-8" });
}

function errorResponse(description: string) {
  return { description, content: { "application/json": { schema: s.errorBodySchema } } };
}

/** The route a request matched, as a metrics label (never the raw path: ids would explode it). */
function routeLabel(c: Context): string {
  const path = routePath(c, -1);
  if (!path || path === "*" || path === "/*") return c.res.status === 404 ? "unmatched" : c.req.path;
  return path;
}
