import { z } from "zod";
import {
  attemptNumberSchema,
  idSchema,
  numShardsSchema,
  shardSchema,
  taskAttemptIdSchema,
  urlSchema,
} from "../events/identifiers.js";
import { parseWithSchema } from "../validation.js";

/** Input of `startRun`. `runId` is generated when omitted. */
export const startRunInputSchema = z.strictObject({
  datasetId: idSchema,
  numShards: numShardsSchema,
  runId: idSchema.optional(),
});

/** Input of the attempt reports. `taskAttemptId` may be a decimal string, a bigint or a safe integer. */
export const attemptInputSchema = z.strictObject({
  runId: idSchema,
  shard: shardSchema,
  attempt: attemptNumberSchema,
  taskAttemptId: taskAttemptIdSchema.nullable().optional(),
  url: urlSchema.nullable().optional(),
});

/** Input of `attemptFailed`: an attempt and its error text. */
export const attemptFailedInputSchema = attemptInputSchema.extend({
  error: z.string().max(8192).default(""),
});

/** Most reports one `reportAttempts` call takes. */
export const MAX_REPORTS_PER_CALL = 10_000;

/**
 * One report of `reportAttempts`: `kind` picks the single call it stands for; `error` belongs to
 * `kind: "failed"` only (anywhere else it is refused, naming the field).
 */
export const attemptReportSchema = z.discriminatedUnion("kind", [
  attemptInputSchema.extend({ kind: z.enum(["started", "succeeded"]) }),
  attemptFailedInputSchema.extend({ kind: z.literal("failed") }),
]);

/** Input of `failRun`. */
export const failRunInputSchema = z.strictObject({ runId: idSchema, reason: z.string().min(1).max(8192) });

/**
 * Parses input with a schema, turning the first issue into a {@link ValidationError} that names
 * the field (`shard`, `taskAttemptId`, …).
 *
 * @example
 * ```ts
 * const input = parseInput(startRunInputSchema, { datasetId: "d", numShards: 4 })
 * ```
 */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  return parseWithSchema(schema, input, "input");
}
