import { z } from "zod";
import { datasetInputSchema, policyChangesSchema } from "../datasets/dataset-config.js";
import { idSchema } from "../events/identifiers.js";
import { attemptFailedInputSchema, attemptInputSchema, startRunInputSchema } from "../ledger/inputs.js";

/**
 * The request and response schemas of the HTTP API: request bodies reuse the library's own input
 * schemas (so the server refuses exactly what the library would, naming the same field), and the
 * OpenAPI document is generated from them.
 */

/** Path parameter `datasetId`. @internal */
export const datasetParams = z.strictObject({ datasetId: idSchema });
/** Path parameter `runId`. @internal */
export const runParams = z.strictObject({ runId: idSchema });

/** `POST /v1/datasets`. @internal */
export const createDatasetBody = datasetInputSchema;
/** `PATCH /v1/datasets/{datasetId}`. @internal */
export const updateDatasetBody = policyChangesSchema;
/** `POST /v1/datasets/{datasetId}/rollback`. @internal */
export const rollbackBody = z.strictObject({ toRunId: idSchema });
/** `POST /v1/datasets/{datasetId}/gc`. @internal */
export const gcBody = z.strictObject({ dryRun: z.boolean().optional() });
/** `POST /v1/datasets/{datasetId}/retry-failed`. @internal */
export const retryFailedBody = z.strictObject({ runId: idSchema.optional() });
/** `POST /v1/runs`. @internal */
export const startRunBody = startRunInputSchema;
/** `POST /v1/runs/{runId}/fail` (a `runId` in the body must equal the path's). @internal */
export const failRunBody = z.strictObject({
  reason: z.string().min(1).max(8192),
  runId: idSchema.optional(),
});
/** `POST /v1/runs/{runId}/attempts/started|succeeded`. @internal */
export const attemptBody = attemptInputSchema.extend({ runId: idSchema.optional() });
/** `POST /v1/runs/{runId}/attempts/failed`. @internal */
export const attemptFailedBody = attemptFailedInputSchema.extend({ runId: idSchema.optional() });

/** The most reports one batch may carry. */
const MAX_BATCH_REPORTS = 10_000;

/**
 * One report of a batch, as the OpenAPI document describes it. The server validates each item
 * with the library's report schema instead (routes/attempts.ts `batchItemReport`); the two accept
 * the same items (test/server/batch-items.test.ts). @internal
 */
export const batchReportSchema = z.strictObject({
  kind: z.enum(["started", "succeeded", "failed"]),
  shard: attemptInputSchema.shape.shard,
  attempt: attemptInputSchema.shape.attempt,
  taskAttemptId: attemptInputSchema.shape.taskAttemptId,
  url: attemptInputSchema.shape.url,
  /** Only with `kind: "failed"`. */
  error: z.string().max(8192).optional(),
  runId: idSchema.optional(),
});

/**
 * `POST /v1/runs/{runId}/attempts/batch`: the envelope only (1..10000 items); each item is
 * validated on its own and answered in `results`, so one bad item never refuses the others.
 * The document describes the items with {@link batchReportSchema}.
 *
 * @internal
 */
export const batchBody = z.strictObject({
  reports: z
    .array(
      z.unknown().meta({
        description:
          "One report; validated on its own (an invalid item gets `ok: false` with its error, the others are applied)",
        ...withoutDialect(z.toJSONSchema(batchReportSchema, { io: "input", unrepresentable: "any" })),
      }),
    )
    .min(1)
    .max(MAX_BATCH_REPORTS),
});

/** `POST /v1/cleanup`. @internal */
export const cleanupBody = z.strictObject({
  datasetId: idSchema.optional(),
  dryRun: z.boolean().optional(),
  retryNow: z.boolean().optional(),
});

/** `GET /v1/pending`. @internal */
export const pendingQuery = z.strictObject({ datasetId: idSchema.optional() });

/** `GET /v1/events`: the library's `events()` options (a stream from a version, or the log after a position). @internal */
export const eventsQuery = z.strictObject({
  stream: z.string().min(1).max(300).optional(),
  from: z.coerce.number().int().min(0).optional(),
  limit: z.coerce.number().int().min(1).max(100_000).optional(),
});

/** The error body every failure answers with (`errorBody` in src/errors.ts). @internal */
const errorDetailSchema = z
  .looseObject({
    code: z.string().meta({ description: "ERROR_CODES key, or UNAUTHENTICATED / FORBIDDEN" }),
    message: z.string(),
    field: z.string().optional().meta({ description: "The input field that was wrong, when known" }),
  })
  .meta({
    id: "Error",
    description: "code, message, field? and the error's details (missingShards, state, …)",
  });

/** The error body every failure answers with (`errorBody` in src/errors.ts). @internal */
export const errorBodySchema = z.object({ error: errorDetailSchema }).meta({ id: "ErrorBody" });

const attemptResultSchema = z
  .object({
    runId: z.string(),
    shard: z.number().int(),
    attempt: z.number().int(),
    taskAttemptId: z.string().nullable(),
    url: z.string().nullable(),
    status: z.string(),
  })
  .meta({ id: "AttemptResult" });

/** `AttemptResult`. @internal */
export const attemptResult = attemptResultSchema;

/** The batch answer: one result per report, in order. @internal */
export const batchResult = z.object({
  results: z.array(
    z.union([
      z.object({ index: z.number().int(), ok: z.literal(true), attempt: attemptResultSchema }),
      z.object({ index: z.number().int(), ok: z.literal(false), error: errorDetailSchema }),
    ]),
  ),
});

/** A library result passed through as JSON (dates as ISO strings, bigints as decimal strings). @internal */
export const libraryResult = (description: string) => z.looseObject({}).meta({ description });
/** A list of library results. @internal */
export const libraryList = (description: string) => z.array(z.looseObject({})).meta({ description });

function withoutDialect(schema: Record<string, unknown>): Record<string, unknown> {
  const { $schema: _dialect, ...rest } = schema;
  return rest;
}
