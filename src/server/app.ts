import { randomUUID } from "node:crypto";
import { createRoute, OpenAPIHono } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import { routePath } from "hono/route";
import type { Logger } from "pino";
import type { z } from "zod";
import { toJsonLine } from "../cli/json-output.js";
import {
  describeError,
  errorBody,
  httpStatusFor,
  isShardledgerError,
  NotFoundError,
  ValidationError,
} from "../errors.js";
import type { Ledger } from "../ledger/open-ledger.js";
import {
  authenticate,
  datasetAllowed,
  OPEN_PRINCIPAL,
  type Principal,
  type Scope,
  scopeAllows,
  type TokenEntry,
} from "./auth.js";
import { AccessError, validationErrorOf } from "./http-errors.js";
import { ServerMetrics } from "./metrics.js";
import { registerAttemptRoutes } from "./routes/attempts.js";
import { registerDatasetRoutes } from "./routes/datasets.js";
import { registerLogRoutes } from "./routes/log.js";
import { registerPublishAndMaintenanceRoutes } from "./routes/publish-and-maintenance.js";
import type { Ctx, Env, RouteContext } from "./routes/route-context.js";
import { registerRunRoutes } from "./routes/runs.js";
import { registerViewRoutes } from "./routes/views.js";
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

/** The largest request body the API reads. */
const MAX_BODY_BYTES = 32 * 1024 * 1024;

/**
 * Each endpoint's `operationId`: the library method it calls, so a generated client has the same
 * operation names as the TypeScript library (`status(id)` is `datasetStatus`, the batch is
 * `reportAttempts`, the last audit `lastAudit`). Its order is the order of the router and of the
 * OpenAPI document's paths, whichever file under routes/ declares an endpoint.
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
        // RFC 6750 §3: a 401 says how to authenticate; a token that was sent is invalid_token.
        const missing = c.req.header("authorization") === undefined;
        throw new AccessError(
          401,
          "UNAUTHENTICATED",
          missing
            ? "no bearer token: send Authorization: Bearer <token>"
            : "unknown or malformed bearer token",
          missing ? 'Bearer realm="shardledger"' : 'Bearer realm="shardledger", error="invalid_token"',
        );
      }
      c.set("principal", principal);
    }
    await next();
  });

  // After authentication: a body is read only for a known token. 10,000 batch reports with long
  // urls fit well inside the limit.
  const limitBody = bodyLimit({
    maxSize: MAX_BODY_BYTES,
    onError: (c) =>
      sendJson(
        c as Ctx,
        errorBody(new ValidationError("body", `is larger than ${MAX_BODY_BYTES / 1024 / 1024} MiB`)),
        400,
      ),
  });
  app.use("/v1/*", (c, next) => {
    // What bodyLimit decides from the headers (no body on GET/HEAD; a declared length, not
    // chunked) is decided here without it: its first question, `c.req.raw.body`, makes
    // @hono/node-server wrap the socket in a full web Request and read the JSON through a web
    // stream instead of straight off the socket (0.19 ms of CPU per request, 13% of a single
    // report's). A chunked body still goes through bodyLimit, which counts it as it streams.
    if (c.req.method === "GET" || c.req.method === "HEAD") return next();
    const length = c.req.header("content-length");
    if (length !== undefined && c.req.header("transfer-encoding") === undefined) {
      return Number.parseInt(length, 10) > MAX_BODY_BYTES ? limitBody(c, next) : next();
    }
    return limitBody(c, next);
  });

  app.onError((e, c) => {
    const ctx = c as Ctx;
    if (e instanceof AccessError) {
      if (e.challenge !== undefined) ctx.header("WWW-Authenticate", e.challenge);
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
  /**
   * Lookups under way, by run: the first requests for a run arrive together (64 writers starting,
   * or a restarted server mid-run), and each would otherwise load the whole run (every attempt)
   * for its dataset.
   */
  const runDatasetLookups = new Map<string, Promise<string>>();
  const runDataset = async (runId: string): Promise<string> => {
    const known = runDatasets.get(runId);
    if (known !== undefined) return known;
    let lookup = runDatasetLookups.get(runId);
    if (!lookup) {
      lookup = ledger
        .run(runId)
        .then(({ run }) => {
          if (runDatasets.size >= 100_000) runDatasets.clear();
          runDatasets.set(runId, run.datasetId);
          return run.datasetId;
        })
        .finally(() => runDatasetLookups.delete(runId));
      runDatasetLookups.set(runId, lookup);
    }
    return lookup;
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

  // --- the route helper; the routes themselves are in routes/, one file per area ---------------

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

  /** Each endpoint, by operation id, as declared by its area file; registered below in table order. */
  const declared = new Map<string, () => void>();
  const route: RouteContext["route"] = (method, path, config, handler) => {
    const operationId = OPERATION_IDS[`${method} ${path}`];
    if (operationId === undefined) throw new Error(`no operationId for ${method} ${path}`);
    if (declared.has(operationId)) throw new Error(`${method} ${path} is declared twice`);
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
    declared.set(operationId, () => app.openapi(definition, handler as never));
  };

  const context: RouteContext = {
    ledger,
    metrics,
    route,
    jsonBody: (schema, required = true) => ({
      body: { required, content: { "application/json": { schema } } },
    }),
    params: <T>(c: Ctx) => c.req.valid("param" as never) as T,
    body: <S extends z.ZodType>(c: Ctx, _schema: S) => (c.req.valid("json" as never) ?? {}) as z.output<S>,
    query: <S extends z.ZodType>(c: Ctx, _schema: S) => c.req.valid("query" as never) as z.output<S>,
    rawBody: async (c) => (await c.req.json()) as Record<string, unknown>,
    ok: (c, value, status = 200) => sendJson(c, value, status),
    principal,
    needDataset,
    rememberRunDataset: (runId, datasetId) => {
      runDatasets.set(runId, datasetId);
    },
    samePathRun: (runId, bodyRunId) => {
      if (bodyRunId !== undefined && bodyRunId !== runId) {
        throw new ValidationError("runId", `the body names run ${bodyRunId} but the path names run ${runId}`);
      }
    },
  };
  registerDatasetRoutes(context);
  registerViewRoutes(context);
  registerRunRoutes(context);
  registerAttemptRoutes(context);
  registerPublishAndMaintenanceRoutes(context);
  registerLogRoutes(context);
  // Registered in the order of OPERATION_IDS, not of the calls above: the document lists its paths
  // in registration order, so moving a route between area files leaves docs/openapi.json as it is.
  for (const operationId of Object.values(OPERATION_IDS)) {
    const register = declared.get(operationId);
    if (register === undefined) throw new Error(`no route declares ${operationId}`);
    register();
  }

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
