import { z } from "zod";
import { MAX_DURATION_MS, parseDuration } from "./duration.js";

/**
 * A zod schema for a duration given as text (`"7d"`) or milliseconds; the output is milliseconds.
 * `allowZero` admits `0s` (only the safety window may be zero, and only when given explicitly).
 *
 * @example
 * ```ts
 * durationSchema().parse("12h") // 43200000
 * ```
 */
export function durationSchema(options: { allowZero?: boolean } = {}) {
  const min = options.allowZero ? 0 : 1;
  return z.union([z.string(), z.number()]).transform((value, ctx) => {
    const ms = typeof value === "number" ? value : parseDuration(value);
    if (ms === undefined || !Number.isSafeInteger(ms) || ms < min || ms > MAX_DURATION_MS) {
      ctx.addIssue({
        code: "custom",
        message: `must be a ${min === 0 ? "non-negative" : "positive"} duration like 30s, 15m, 12h or 7d (got ${JSON.stringify(value)})`,
      });
      return z.NEVER;
    }
    return ms;
  });
}
