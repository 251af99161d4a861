import { createRequire } from "node:module";
import type TableConstructor from "cli-table3";
import type { Style } from "./style.js";

// Borderless, column-aligned (like `kubectl get`): easy to read and to grep.
const BORDERLESS = {
  top: "",
  "top-mid": "",
  "top-left": "",
  "top-right": "",
  bottom: "",
  "bottom-mid": "",
  "bottom-left": "",
  "bottom-right": "",
  left: "",
  "left-mid": "",
  mid: "",
  "mid-mid": "",
  right: "",
  "right-mid": "",
  middle: "  ",
};

/**
 * A table cell: text, or nothing (printed as a dim dash).
 *
 * @example `renderTable(style, ["RUN"], [[null]]) // prints a dim "-"`
 */
export type CellText = string | number | boolean | null | undefined;

// cli-table3 (and its string-width dependencies) is required on first use, not when the CLI
// starts: most invocations print JSON or a single line and never draw a table.
let tableClass: typeof TableConstructor | undefined;
function Table(): typeof TableConstructor {
  tableClass ??= createRequire(import.meta.url)("cli-table3") as typeof TableConstructor;
  return tableClass;
}

const cell = (style: Style, value: CellText): string =>
  value === null || value === undefined || value === "" ? style.dim("-") : String(value);

/**
 * An aligned table with a bold header row, one line per row.
 *
 * @example
 * ```ts
 * io.stdout.write(renderTable(style, ["RUN", "STATUS"], runs.map((r) => [r.runId, style.status(r.status)])))
 * ```
 */
export function renderTable(
  style: Style,
  head: readonly string[],
  rows: readonly (readonly CellText[])[],
): string {
  const table = new (Table())({
    head: head.map((h) => style.bold(h)),
    chars: BORDERLESS,
    style: { head: [], border: [], "padding-left": 0, "padding-right": 0 },
  });
  for (const row of rows) table.push(row.map((v) => cell(style, v)));
  return `${trimLines(table.toString())}\n`;
}

/**
 * A two-column key/value listing, for one object (a dataset, a run).
 *
 * @example
 * ```ts
 * io.stdout.write(renderPairs(style, [["run", run.runId], ["status", style.status(run.status)]]))
 * ```
 */
export function renderPairs(style: Style, pairs: readonly (readonly [string, CellText])[]): string {
  const table = new (Table())({
    chars: BORDERLESS,
    style: { head: [], border: [], "padding-left": 0, "padding-right": 0 },
  });
  for (const [key, value] of pairs) table.push([style.dim(key), cell(style, value)]);
  return `${trimLines(table.toString())}\n`;
}

function trimLines(text: string): string {
  return text
    .split("\n")
    .map((line) => line.trimEnd())
    .filter((line) => line.length > 0)
    .join("\n");
}
