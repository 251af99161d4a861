/**
 * A list as the text of a PostgreSQL array literal (`{"a","b",NULL}`), sent as one parameter cast
 * to its array type (`$1::text[]`). It is exactly the text pg would make of the list (pg's
 * `arrayString`: every element quoted, `\` and `"` escaped, null as NULL; PGlite passes a string
 * given for an array parameter through unchanged), made without pg's per-element type dispatch
 * and two regular-expression passes: a group of 1,000 attempt reports sends a dozen such arrays
 * per append, and pg's escaping was a measurable share of the server's CPU per report
 * (bench/RESULTS.md, report-throughput). A list holding anything but strings, numbers, bigints,
 * booleans and nulls is returned as it is, for pg to convert as before.
 *
 * @example
 * ```ts
 * arrayLiteral(["a", 'say "hi"', null]) // '{"a","say \"hi\"",NULL}'
 * ```
 */
export function arrayLiteral(values: readonly unknown[]): string | readonly unknown[] {
  // The common list (ids, keys, urls: strings with nothing to escape) is one join: the literal is
  // built flat, with no string per element.
  let plain = true;
  for (let i = 0; i < values.length && plain; i++) {
    const v = values[i];
    plain = typeof v === "string" && !ESCAPED.test(v);
  }
  if (plain) return values.length === 0 ? "{}" : `{"${values.join('","')}"}`;
  const parts: string[] = new Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || v === undefined) parts[i] = "NULL";
    else if (typeof v === "string") parts[i] = `"${ESCAPED.test(v) ? v.replace(ESCAPED_ALL, "\\$&") : v}"`;
    else if (typeof v === "number" || typeof v === "bigint" || typeof v === "boolean") parts[i] = `"${v}"`;
    else return values;
  }
  return `{${parts.join(",")}}`;
}

const ESCAPED = /[\\"]/;
const ESCAPED_ALL = /[\\"]/g;
