import { z } from "zod";
import { ID_ALPHABET_MESSAGE, ID_DOTS_MESSAGE, ID_PATTERN } from "./id-rule.js";

/**
 * Identifiers that end up inside object keys (`data/<runId>/…`) are kept to a safe alphabet:
 * no slashes, no dots-only names, nothing a URL could re-interpret.
 *
 * @example
 * ```ts
 * idSchema.parse("run-2026-11-23T10.00") // ok
 * ```
 */
export const idSchema = z
  .string()
  .regex(ID_PATTERN, ID_ALPHABET_MESSAGE)
  .refine((s) => !s.includes(".."), ID_DOTS_MESSAGE);

/** The largest taskAttemptId: a signed 64-bit integer, as Spark and Ray hand them out. */
export const MAX_TASK_ATTEMPT_ID = (1n << 63n) - 1n;

/**
 * A `taskAttemptId` travels as a decimal string so it never passes through a float. Accepts a
 * string, a bigint or a safe integer on input; outputs the canonical decimal string.
 *
 * @example
 * ```ts
 * taskAttemptIdSchema.parse(9223372036854775806n) // "9223372036854775806"
 * ```
 */
export const taskAttemptIdSchema = z.union([z.string(), z.bigint(), z.number()]).transform((value, ctx) => {
  let n: bigint;
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) {
      ctx.addIssue({
        code: "custom",
        message: "must be an integer given as a string or bigint when above 2^53",
      });
      return z.NEVER;
    }
    n = BigInt(value);
  } else if (typeof value === "bigint") {
    n = value;
  } else if (/^\d{1,19}$/.test(value)) {
    n = BigInt(value);
  } else {
    ctx.addIssue({
      code: "custom",
      message: `must be a non-negative 64-bit integer (got ${JSON.stringify(value)})`,
    });
    return z.NEVER;
  }
  if (n < 0n || n > MAX_TASK_ATTEMPT_ID) {
    ctx.addIssue({ code: "custom", message: "must be between 0 and 2^63-1" });
    return z.NEVER;
  }
  return n.toString();
});

/** Shard index: `0 ≤ shard < numShards`. */
export const shardSchema = z.number().int().min(0).max(10_000_000);
/** Attempt number as the engine counts it (0 or 1 based, whatever the engine uses). */
export const attemptNumberSchema = z.number().int().min(0).max(1_000_000);
/** Number of shards in a run. */
export const numShardsSchema = z.number().int().min(1).max(10_000_000);
/** An object-store URL as recorded; containment in the dataset root is checked by the safety rails. */
export const urlSchema = z.string().min(1).max(4096);
