import type { z } from "zod";
import { ValidationError } from "./errors.js";

/**
 * Parses `input` with a zod schema; the first issue becomes a {@link ValidationError} that names
 * the field (the path, or the unknown keys), so every boundary reports bad input the same way.
 *
 * @example
 * ```ts
 * const policy = parseWithSchema(retryPolicySchema, input, "retryPolicy")
 * ```
 */
export function parseWithSchema<S extends z.ZodType>(
  schema: S,
  input: unknown,
  fallbackField = "input",
): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field =
    issue?.code === "unrecognized_keys"
      ? issue.keys.join(", ")
      : issue && issue.path.length > 0
        ? issue.path.map(String).join(".")
        : fallbackField;
  throw new ValidationError(field, issue?.message ?? "invalid", { details: { issues: result.error.issues } });
}
