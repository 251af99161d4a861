import type { z } from "zod";
import { errorBody, isShardledgerError, ValidationError } from "../../errors.js";
import type {
  AttemptInput,
  AttemptReport,
  AttemptReportResult,
  AttemptResult,
} from "../../ledger/open-ledger.js";
import * as s from "../schemas.js";
import type { RouteContext } from "./route-context.js";

/**
 * Attempt reports of a run: one at a time (`…/attempts/started|succeeded|failed`) or many in one
 * request (`…/attempts/batch`, each item validated and answered on its own), counted in the
 * attempt-report metrics by kind and outcome.
 *
 * @internal
 */
export function registerAttemptRoutes({
  route,
  ledger,
  metrics,
  jsonBody,
  params,
  body,
  ok,
  samePathRun,
}: RouteContext) {
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
      const valid: AttemptReport[] = [];
      /** Where each valid report stands in the request. */
      const at: number[] = [];
      // Counted per (kind, outcome) and added once each: a metric update per item cost more than
      // the item's own validation.
      const counts = new Map<string, { kind: string; outcome: string; n: number }>();
      const count = (kind: string, outcome: string) => {
        const key = `${kind}\u0000${outcome}`;
        const c = counts.get(key);
        if (c) c.n++;
        else counts.set(key, { kind, outcome, n: 1 });
      };
      reports.forEach((item, index) => {
        try {
          valid.push(batchItemReport(item, runId));
          at.push(index);
        } catch (e) {
          count(kindLabel((item as { kind?: unknown } | null)?.kind), "VALIDATION");
          results[index] = { index, ok: false, error: errorBody(e).error };
        }
      });
      const outcomes = await ledger.reportAttempts(valid);
      for (const [i, outcome] of outcomes.entries()) {
        const index = at[i] as number;
        const { kind } = valid[i] as AttemptReport;
        count(kindLabel(kind), outcome.ok ? "ok" : outcome.error.code);
        results[index] = outcome.ok
          ? { index, ok: true, attempt: outcome.attempt }
          : { index, ok: false, error: outcome.error };
      }
      for (const { kind, outcome, n } of counts.values()) {
        metrics.attemptReports.inc({ kind, outcome }, n);
        if (outcome === "ok") metrics.writes.inc({ operation: `attempt_${kind}` }, n);
      }
      return ok(c, { results });
    },
  );
}

/**
 * The metric label of a report's kind: one of the three, or "unknown" (an item's `kind` is the
 * client's to choose, and a label per value would grow the metric without bound).
 */
function kindLabel(kind: unknown): string {
  return kind === "started" || kind === "succeeded" || kind === "failed" ? kind : "unknown";
}

/**
 * One batch item, made a library report: the checks only the path can make (its run; `error` only
 * on a "failed" report, with the server's message), then the item goes to `reportAttempts`, whose
 * schema validates it and names the field as for any library caller. The OpenAPI document
 * describes the item with `batchReportSchema`, which accepts exactly what that schema accepts
 * with the path's run (test/server/batch-items.test.ts). Parsing the item here as well cost a
 * second zod pass per report (~5 us, 4-5% of the batch endpoint's CPU).
 *
 * @internal
 */
export function batchItemReport(item: unknown, runId: string): AttemptReport {
  if (typeof item !== "object" || item === null || Array.isArray(item)) {
    throw new ValidationError("body", "each report must be a JSON object");
  }
  const fields = item as { runId?: unknown; kind?: unknown; error?: unknown };
  if (fields.runId !== undefined && fields.runId !== runId) {
    throw new ValidationError(
      "runId",
      `the report names run ${typeof fields.runId === "string" ? fields.runId : JSON.stringify(fields.runId)} but the path names run ${runId}`,
    );
  }
  if (fields.error !== undefined && (fields.kind === "started" || fields.kind === "succeeded")) {
    throw new ValidationError(
      "error",
      `only a "failed" report carries an error (this one is "${fields.kind}")`,
    );
  }
  const report = { ...(item as AttemptReport), runId };
  // JSON has no undefined, but a caller of the app in-process may send one: an absent error.
  if (fields.error === undefined) delete (report as { error?: unknown }).error;
  return report;
}
