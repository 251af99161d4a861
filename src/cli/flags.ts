import { parseDuration } from "../datasets/duration.js";
import { isValidationError, ValidationError } from "../errors.js";
import { idProblem } from "../events/id-rule.js";

/**
 * Parsing of flag and argument text, before any database is opened: bad input is refused with a
 * {@link ValidationError} whose field is the flag as the user typed it (`--shards`), so nothing is
 * ever written for it.
 */

const DIGITS = /^\d+$/;

/**
 * An integer flag given as plain decimal digits (no sign, exponent, fraction or spaces).
 *
 * @example
 * ```ts
 * integerFlag("--shards", "8", { min: 1 }) // 8
 * integerFlag("--shards", "abc", { min: 1 }) // throws "--shards: must be a positive integer (got \"abc\")"
 * ```
 */
export function integerFlag(flag: string, text: string, options: { min: 0 | 1; max?: number }): number {
  const value = DIGITS.test(text) ? Number(text) : Number.NaN;
  const max = options.max ?? Number.MAX_SAFE_INTEGER;
  if (!Number.isSafeInteger(value) || value < options.min || value > max) {
    const what = options.min === 1 ? "a positive integer" : "a non-negative integer";
    const bound = options.max !== undefined ? ` ≤ ${options.max}` : "";
    throw new ValidationError(flag, `must be ${what}${bound} (got ${JSON.stringify(text)})`);
  }
  return value;
}

/**
 * {@link integerFlag} for an optional flag.
 *
 * @example
 * ```ts
 * optionalIntegerFlag("--limit", undefined, { min: 1 }) // undefined
 * ```
 */
export function optionalIntegerFlag(
  flag: string,
  text: string | undefined,
  options: { min: 0 | 1; max?: number },
): number | undefined {
  return text === undefined ? undefined : integerFlag(flag, text, options);
}

/**
 * A duration flag (`30s`, `15m`, `12h`, `7d`) in milliseconds.
 *
 * @example
 * ```ts
 * durationFlag("--connect-timeout", "10s") // 10000
 * ```
 */
export function durationFlag(flag: string, text: string, options: { allowZero?: boolean } = {}): number {
  const ms = parseDuration(text);
  if (ms === undefined || (ms === 0 && !options.allowZero)) {
    throw new ValidationError(
      flag,
      `must be a ${options.allowZero ? "non-negative" : "positive"} duration like 30s, 15m, 12h or 7d (got ${JSON.stringify(text)})`,
    );
  }
  return ms;
}

/**
 * An identifier argument (dataset id, run id) in the ledger's safe alphabet.
 *
 * @example
 * ```ts
 * idArgument("<runId>", "2026-11-23") // "2026-11-23"
 * ```
 */
export function idArgument(name: string, value: string): string {
  const problem = idProblem(value);
  if (problem !== undefined) throw new ValidationError(name, `${problem} (got ${JSON.stringify(value)})`);
  return value;
}

/**
 * Runs `fn` and renames the field of any {@link ValidationError} it throws from the library's
 * name (`numShards`) to the CLI's (`--shards`), so the message names what the user typed.
 *
 * @example
 * ```ts
 * const input = withFlagNames({ numShards: "--shards" }, () => parseInput(startRunInputSchema, raw))
 * ```
 */
export function withFlagNames<T>(names: Readonly<Record<string, string>>, fn: () => T): T {
  try {
    const result = fn();
    if (result instanceof Promise) return result.catch((e: unknown) => rethrow(names, e)) as T;
    return result;
  } catch (e) {
    return rethrow(names, e);
  }
}

function rethrow(names: Readonly<Record<string, string>>, e: unknown): never {
  if (isValidationError(e)) {
    const field = e.field;
    const flag = names[field] ?? names[field.split(".")[0] ?? ""];
    if (flag !== undefined) {
      const message = e.message.startsWith(`${field}: `) ? e.message.slice(field.length + 2) : e.message;
      throw new ValidationError(flag, message, { cause: e, details: { ...e.details, field: flag } });
    }
  }
  throw e;
}
