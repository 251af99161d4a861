/**
 * The one JSON document `--json` prints: two-space indented, dates as ISO strings (their
 * `toJSON`), bigints as decimal strings (never through a float), a final newline.
 *
 * @example
 * ```ts
 * io.stdout.write(toJsonDocument({ runId: "r1", startedAt: new Date() }))
 * ```
 */
export function toJsonDocument(value: unknown): string {
  return `${JSON.stringify(value, replacer, 2)}\n`;
}

/**
 * One JSON value on one line, for commands that stream a line per item (`maintain`).
 *
 * @example
 * ```ts
 * io.stdout.write(toJsonLine({ dataset: "d", deleted: 3 }))
 * ```
 */
export function toJsonLine(value: unknown): string {
  return `${JSON.stringify(value, replacer)}\n`;
}

function replacer(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}
