import { z } from "zod";
import { ValidationError } from "../errors.js";
import type { DatasetPolicies } from "../events/catalogue.js";
import { idSchema } from "../events/identifiers.js";
import { parseDatasetRoot } from "../storage/dataset-url.js";
import { parseWithSchema } from "../validation.js";
import { durationSchema } from "./duration-schema.js";

/**
 * Policy defaults, chosen where the spec is silent (README "Defaults"): keep the 10 newest
 * succeeded runs, expire terminal runs after 30 days, keep failed runs and exhausted cleanup items
 * retryable for 7 days, count a silent run as abandoned after 1 hour, and keep replaced or
 * unreported data for a 1-hour safety window.
 *
 * @example
 * ```ts
 * await ledger.createDataset({ datasetId: "events", root: "s3://lake/events", keepRuns: DEFAULT_POLICIES.keepRuns * 2 })
 * ```
 */
export const DEFAULT_POLICIES = {
  keepRuns: 10,
  retention: "30d",
  failedRetention: "7d",
  staleAfter: "1h",
  safetyWindow: "1h",
} as const;

/**
 * The policy fields as `createDataset` and `updateDataset` accept them: one definition, so a
 * change is validated exactly as a registration is.
 */
const POLICY_FIELDS = {
  keepRuns: z.number().int().min(1).max(1_000_000),
  retention: durationSchema(),
  failedRetention: durationSchema(),
  staleAfter: durationSchema(),
  safetyWindow: durationSchema({ allowZero: true }),
};

/**
 * The input of `createDataset`: an id, a root URL and optional policies. Durations are text
 * (`30s`, `15m`, `12h`, `7d`) or milliseconds; unknown keys are refused.
 *
 * @example
 * ```ts
 * datasetInputSchema.parse({ datasetId: "events", root: "s3://bucket/events", keepRuns: 3, retention: "14d" })
 * ```
 *
 * Exported for the HTTP server's request schemas, not from the package (and not marked internal:
 * {@link DatasetInput} is derived from it, and the build strips internal declarations).
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
  keepRuns: POLICY_FIELDS.keepRuns.default(DEFAULT_POLICIES.keepRuns),
  retention: POLICY_FIELDS.retention.prefault(DEFAULT_POLICIES.retention),
  failedRetention: POLICY_FIELDS.failedRetention.prefault(DEFAULT_POLICIES.failedRetention),
  staleAfter: POLICY_FIELDS.staleAfter.prefault(DEFAULT_POLICIES.staleAfter),
  safetyWindow: POLICY_FIELDS.safetyWindow.prefault(DEFAULT_POLICIES.safetyWindow),
});

/**
 * What callers pass to `createDataset`: the id, the root URL every run writes under, and any
 * policy that differs from {@link DEFAULT_POLICIES} (durations as `30s`, `15m`, `12h`, `7d`).
 *
 * @example
 * ```ts
 * const input: DatasetInput = { datasetId: "events", root: "s3://lake/events", retention: "90d", safetyWindow: "2h" }
 * await ledger.createDataset(input)
 * ```
 */
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

/**
 * The input of `updateDataset`: the policies to change, in the forms `createDataset` accepts
 * (durations as text or milliseconds). Every field is optional, but at least one is required; the
 * root and the id cannot change.
 *
 * @example
 * ```ts
 * const changes: DatasetPolicyChanges = { keepRuns: 3, failedRetention: "14d" }
 * ```
 */
export type DatasetPolicyChanges = Partial<
  Pick<DatasetInput, "keepRuns" | "retention" | "failedRetention" | "staleAfter" | "safetyWindow">
>;

/**
 * A field fixed when the dataset was registered: a change that names it is refused with what to
 * do instead (and the HTTP API's document says so), rather than as an unknown key.
 */
function fixedAtRegistration(what: "root" | "id") {
  return z
    .unknown()
    .refine(() => false, {
      message: `a dataset's ${what} cannot be changed; register a new dataset instead`,
    })
    .optional()
    .describe(`Fixed at registration: a change that names it is refused (VALIDATION).`);
}

/**
 * The input of `updateDataset` as a schema (see {@link DatasetPolicyChanges}).
 *
 * Exported for the HTTP server's request schemas, not from the package.
 */
export const policyChangesSchema = z.strictObject({
  root: fixedAtRegistration("root"),
  datasetId: fixedAtRegistration("id"),
  keepRuns: POLICY_FIELDS.keepRuns.optional(),
  retention: POLICY_FIELDS.retention.optional(),
  failedRetention: POLICY_FIELDS.failedRetention.optional(),
  staleAfter: POLICY_FIELDS.staleAfter.optional(),
  safetyWindow: POLICY_FIELDS.safetyWindow.optional(),
});

/**
 * The names of the policies a change may name, in the order the CLI lists their flags.
 *
 * @example `POLICY_NAMES.includes("keepRuns") // true`
 */
const POLICY_NAMES = ["keepRuns", "retention", "failedRetention", "staleAfter", "safetyWindow"] as const;

/**
 * Validates a policy change exactly as {@link parseDatasetInput} validates a registration and
 * returns the changed policies in milliseconds. Throws a {@link ValidationError} naming the field:
 * a bad value, `root` or `datasetId` (fixed once registered), an unknown key, or `policies` when
 * nothing is to change.
 *
 * @example
 * ```ts
 * parsePolicyChanges({ retention: "14d" }) // { retentionMs: 1209600000 }
 * parsePolicyChanges({ keepRuns: 0 }) // throws "keepRuns: …"
 * ```
 */
export function parsePolicyChanges(input: unknown): Partial<DatasetPolicies> {
  const v = parseWithSchema(policyChangesSchema, input, "policies");
  const out: Partial<DatasetPolicies> = {};
  if (v.keepRuns !== undefined) out.keepRuns = v.keepRuns;
  if (v.retention !== undefined) out.retentionMs = v.retention;
  if (v.failedRetention !== undefined) out.failedRetentionMs = v.failedRetention;
  if (v.staleAfter !== undefined) out.staleAfterMs = v.staleAfter;
  if (v.safetyWindow !== undefined) out.safetyWindowMs = v.safetyWindow;
  if (Object.keys(out).length === 0) {
    throw new ValidationError(
      "policies",
      `nothing to change: give at least one of ${POLICY_NAMES.join(", ")}`,
    );
  }
  return out;
}
