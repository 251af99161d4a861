/**
 * The identifier rule as plain code, without zod: the CLI checks `<runId>`-style arguments with
 * it before anything else loads, so `--help` and argument errors do not pay for compiling zod.
 * `idSchema` (identifiers.ts) applies the same rule with the same messages.
 */
/** The identifier alphabet (the OpenAPI document shows it as the ids' `pattern`). */
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** The message for an id outside the alphabet. */
export const ID_ALPHABET_MESSAGE =
  "must be 1–128 characters of A–Z a–z 0–9 . _ - starting with a letter or digit";
/** The message for an id containing `..`. */
export const ID_DOTS_MESSAGE = "must not contain '..'";

/**
 * What is wrong with `value` as an identifier, or `undefined` when it is a valid one.
 *
 * @example
 * ```ts
 * idProblem("run-1") // undefined
 * idProblem("a/b") // "must be 1–128 characters of …"
 * ```
 */
export function idProblem(value: string): string | undefined {
  if (!ID_PATTERN.test(value)) return ID_ALPHABET_MESSAGE;
  if (value.includes("..")) return ID_DOTS_MESSAGE;
  return undefined;
}
