import { z } from "zod";
import {
  isAttemptNumber,
  isId,
  isPlainRecord,
  isShard,
  isUrlText,
  onlyKeys,
  simpleTaskAttemptId,
} from "../events/attempt-fields.js";
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

const REPORT_KEYS: ReadonlySet<string> = new Set([
  "runId",
  "shard",
  "attempt",
  "taskAttemptId",
  "url",
  "kind",
]);
const FAILED_REPORT_KEYS: ReadonlySet<string> = new Set([...REPORT_KEYS, "error"]);

/**
 * What {@link attemptReportSchema} answers for `input`, on the shape nearly every report has, in
 * plain code; `undefined` means "ask the schema" (which also names the field of an error). See
 * src/events/attempt-fields.ts for why; test/property/attempt-fields.test.ts holds it to the
 * schema's answer, value and keys.
 */
export function acceptAttemptReport(input: unknown): z.output<typeof attemptReportSchema> | undefined {
  if (!isPlainRecord(input)) return undefined;
  const { kind } = input;
  const failed = kind === "failed";
  if (!failed && kind !== "started" && kind !== "succeeded") return undefined;
  if (!onlyKeys(input, failed ? FAILED_REPORT_KEYS : REPORT_KEYS)) return undefined;
  const { runId, shard, attempt } = input;
  if (!isId(runId) || !isShard(shard) || !isAttemptNumber(attempt)) return undefined;
  // The schema's key order: runId, shard, attempt, taskAttemptId, url, error, kind.
  const report: Record<string, unknown> = { runId, shard, attempt };
  if ("taskAttemptId" in input) {
    const given = input.taskAttemptId;
    const id = given === null ? null : simpleTaskAttemptId(given);
    if (id === undefined) return undefined;
    report.taskAttemptId = id;
  }
  if ("url" in input) {
    const { url } = input;
    if (url !== null && !isUrlText(url)) return undefined;
    report.url = url;
  }
  if (failed) {
    const error = "error" in input ? input.error : "";
    if (typeof error !== "string" || error.length > 8192) return undefined;
    report.error = error;
  }
  report.kind = kind;
  return report as z.output<typeof attemptReportSchema>;
}

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
