import type { AuditReport } from "../../adapters/postgres/rebuild.js";
import { NotFoundError } from "../../errors.js";
import { envelopeToJson } from "../../events/envelope.js";
import * as s from "../schemas.js";
import type { RouteContext } from "./route-context.js";

/**
 * The event log itself: read it (`/v1/events`), and audit the projections against it
 * (`/v1/audit`; the last audit this server ran stays for `/v1/audit/last`).
 *
 * @internal
 */
export function registerLogRoutes({ route, ledger, query, ok }: RouteContext) {
  let lastAudit: (AuditReport & { at: string }) | undefined;
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
}
