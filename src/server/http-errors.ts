import type { z } from "zod";
import { ValidationError } from "../errors.js";

/**
 * The server's own refusals, beside the library's errors: HTTP-only access errors, and a zod
 * failure of a request as the library's {@link ValidationError}.
 */

/**
 * HTTP-only refusals: no or unknown token (401), a scope or dataset the token does not cover (403).
 *
 * @internal
 */
export class AccessError extends Error {
  /** `challenge`: the `WWW-Authenticate` header of a 401 (RFC 6750 §3). */
  constructor(
    readonly status: 401 | 403,
    readonly code: "UNAUTHENTICATED" | "FORBIDDEN",
    message: string,
    readonly challenge?: string,
  ) {
    super(message);
  }
}

/**
 * A zod failure as the {@link ValidationError} that names its field (like `parseWithSchema`).
 *
 * @internal
 */
export function validationErrorOf(error: z.ZodError, target: string): ValidationError {
  const issue = error.issues[0];
  const field =
    issue?.code === "unrecognized_keys"
      ? issue.keys.join(", ")
      : issue && issue.path.length > 0
        ? issue.path.map(String).join(".")
        : target === "json"
          ? "body"
          : target;
  return new ValidationError(field, issue?.message ?? "invalid", { details: { issues: error.issues } });
}
