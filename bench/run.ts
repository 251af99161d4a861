import { readdirSync } from "node:fs";
import type { BenchReport, BenchRow } from "./support.js";

// Every bench/<name>.ts that exports run() is a benchmark; adding one needs no change here.
const here = new URL(".", import.meta.url);
const NOT_BENCHMARKS = new Set(["run", "support"]);
const known = readdirSync(here)
  .filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"))
  .map((f) => f.slice(0, -".ts".length))
  .filter((name) => !NOT_BENCHMARKS.has(name))
  .sort();

const wanted = process.argv.slice(2);
const unknown = wanted.filter((name) => !known.includes(name));
if (unknown.length > 0) {
  console.error(`unknown benchmark ${unknown.join(", ")}; known: ${known.join(", ")}`);
  process.exit(2);
}

for (const name of wanted.length > 0 ? wanted : known) {
  const mod = (await import(new URL(`${name}.ts`, here).href)) as { run?: () => Promise<BenchReport> };
  if (typeof mod.run !== "function") continue;
  const report = await mod.run();
  const m = report.machine;
  console.log(`\n## ${report.name}\n`);
  console.log(`${m.cpu}, ${m.cores} cores, ${m.memoryGb} GB, node ${m.node}, ${m.postgres}`);
  console.log(`load average ${m.loadAverage.toFixed(2)} at start\n`);
  console.log(markdownTable(report.rows));
  for (const note of report.notes ?? []) console.log(`\n${note}`);
}

/** A Markdown table, so the output can be pasted into RESULTS.md as is. */
function markdownTable(rows: BenchRow[]): string {
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cells = rows.map((r) => columns.map((c) => String(r[c] ?? "")));
  const widths = columns.map((c, i) => Math.max(3, c.length, ...cells.map((row) => row[i]?.length ?? 0)));
  const numeric = columns.map((c) => rows.every((r) => r[c] === undefined || typeof r[c] === "number"));
  const line = (values: string[]) =>
    `| ${values.map((v, i) => (numeric[i] ? v.padStart(widths[i] ?? 0) : v.padEnd(widths[i] ?? 0))).join(" | ")} |`;
  const rule = `| ${widths.map((w, i) => (numeric[i] ? `${"-".repeat(w - 1)}:` : "-".repeat(w))).join(" | ")} |`;
  return [line(columns), rule, ...cells.map(line)].join("\n");
}
