import { z } from "zod";
import type { DatasetPolicies } from "../events/catalogue.js";
import { idSchema } from "../events/identifiers.js";
import { parseDatasetRoot } from "../storage/dataset-url.js";
import { parseWithSchema } from "../validation.js";
import { durationSchema } from "./duration.js";

/**
 * Policy defaults, chosen where the spec is silent (README "Defaults"): keep the 10 newest
 * succeeded runs, expire terminal runs after 30 days, keep failed runs and exhausted cleanup items
 * retryable for 7 days, count a silent run as abandoned after 1 hour, and keep replaced or
 * unreported data for a 1-hour safety window.
 */
export const DEFAULT_POLICIES = {
  keepRuns: 10,
  retention: "30d",
  failedRetention: "7d",
  staleAfter: "1h",
  safetyWindow: "1h",
} as const;

/**
 * The input of `createDataset`: an id, a root URL and optional policies. Durations are text
 * (`30s`, `15m`, `12h`, `7d`) or milliseconds; unknown keys are refused.
 *
 * @example
 * ```ts
 * datasetInputSchema.parse({ datasetId: "events", root: "s3://bucket/events", keepRuns: 3, retention: "14d" })
 * ```
 */
export const datasetInputSchema = z.strictObject({
  datasetId: idSchema,
  root: z.string().transform((url, ctx) => {
    try {
      return parseDatasetRoot(url).url;
    } catch (e) {
      ctx.addIssue({ code: "custom", message: (e as Error).message.replace(/^root: /, "") });
      return z.NEVER;
    }
  }),
  keepRuns: z.number().int().min(1).max(1_000_000).default(DEFAULT_POLICIES.keepRuns),
  retention: durationSchema().prefault(DEFAULT_POLICIES.retention),
  failedRetention: durationSchema().prefault(DEFAULT_POLICIES.failedRetention),
  staleAfter: durationSchema().prefault(DEFAULT_POLICIES.staleAfter),
  safetyWindow: durationSchema({ allowZero: true }).prefault(DEFAULT_POLICIES.safetyWindow),
});

/** What callers pass to `createDataset`. */
export type DatasetInput = z.input<typeof datasetInputSchema>;

/**
 * Validates a dataset definition, returning its normalised root and policies in milliseconds.
 * Throws a {@link ValidationError} naming the first offending field.
 *
 * @example
 * ```ts
 * parseDatasetInput({ datasetId: "d", root: "file:///data/d", keepRuns: 0 }) // throws "keepRuns: …"
 * ```
 */
export function parseDatasetInput(input: unknown): {
  datasetId: string;
  root: string;
  policies: DatasetPolicies;
} {
  const v = parseWithSchema(datasetInputSchema, input, "dataset");
  return {
    datasetId: v.datasetId,
    root: v.root,
    policies: {
      keepRuns: v.keepRuns,
      retentionMs: v.retention,
      failedRetentionMs: v.failedRetention,
      staleAfterMs: v.staleAfter,
      safetyWindowMs: v.safetyWindow,
    },
  };
}
