import type { RouteConfig } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { z } from "zod";
import type { Ledger } from "../../ledger/open-ledger.js";
import type { Principal, Scope } from "../auth.js";
import type { ServerMetrics } from "../metrics.js";

/**
 * What an area's routes get from the app (src/server/app.ts builds it): the `route` helper that
 * declares an endpoint with its scope and dataset check, the ledger, the metrics, and the helpers
 * that read a request and answer it. An area file imports no other area and nothing of the app
 * (`npm run depcheck` checks it).
 */

/** What a request carries past the middleware. */
interface Vars {
  requestId: string;
  principal: Principal;
}
/** The Hono environment of the app. @internal */
export type Env = { Variables: Vars };
/** One request's context. @internal */
export type Ctx = Context<Env>;

/** The HTTP methods the API uses. */
type Method = "get" | "post" | "patch";

/** One endpoint's declaration, besides its method and path. */
interface RouteOptions {
  /** The scope a token needs. */
  scope: Scope;
  /** For write/admin: the dataset the token must cover, named by the path (`datasetId`, or the run's). */
  dataset?: "path" | "run";
  summary: string;
  request?: RouteConfig["request"];
  status?: 200 | 201;
  response: z.ZodType;
}

/**
 * The app's helpers for one area's routes: `registerXRoutes(ctx)` declares its endpoints with
 * `ctx.route(...)`.
 *
 * @internal
 */
export interface RouteContext {
  readonly ledger: Ledger;
  readonly metrics: ServerMetrics;
  /** Declares an endpoint: its operation id, scope and dataset check, and OpenAPI entry. */
  readonly route: (
    method: Method,
    path: string,
    options: RouteOptions,
    handler: (c: Ctx) => Promise<Response>,
  ) => void;
  /** A route's `request` entry for a JSON body validated by `schema`. */
  readonly jsonBody: (
    schema: z.ZodType,
    required?: boolean,
  ) => { body: { required: boolean; content: { "application/json": { schema: z.ZodType } } } };
  /** The validated path parameters. */
  readonly params: <T>(c: Ctx) => T;
  /** The validated JSON body (`{}` when an optional body is absent). */
  readonly body: <S extends z.ZodType>(c: Ctx, schema: S) => z.output<S>;
  /** The validated query. */
  readonly query: <S extends z.ZodType>(c: Ctx, schema: S) => z.output<S>;
  /** The body exactly as sent, for library calls that validate (and normalise) themselves. */
  readonly rawBody: (c: Ctx) => Promise<Record<string, unknown>>;
  /** A JSON answer exactly as the CLI's `--json` prints it. */
  readonly ok: (c: Ctx, value: unknown, status?: number) => Response;
  /** The token of the request. */
  readonly principal: (c: Ctx) => Principal;
  /** Refuses (403) a token that may not change the dataset. */
  readonly needDataset: (c: Ctx, datasetId: string) => void;
  /** Records a new run's dataset for the write checks of its later requests. */
  readonly rememberRunDataset: (runId: string, datasetId: string) => void;
  /** A body `runId` must equal the path's (the path wins; a different one is a mistake). */
  readonly samePathRun: (runId: string, bodyRunId: string | undefined) => void;
}
