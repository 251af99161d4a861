import { readdirSync } from "node:fs";
import { type BenchReport, printReport } from "./support.js";

// Every bench/<name>.ts that exports run() is a benchmark; adding one needs no change here.
const here = new URL(".", import.meta.url);
const NOT_BENCHMARKS = new Set(["run", "support"]);
const known = readdirSync(here)
  .filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"))
  .map((f) => f.slice(0, -".ts".length))
  .filter((name) => !NOT_BENCHMARKS.has(name))
  .sort();

// Names a benchmark is also known by (its file has a longer name).
const ALIASES: Readonly<Record<string, string>> = { capacity: "capacity-sim" };

const wanted = process.argv.slice(2).map((name) => ALIASES[name] ?? name);
const unknown = wanted.filter((name) => !known.includes(name));
if (unknown.length > 0) {
  console.error(`unknown benchmark ${unknown.join(", ")}; known: ${known.join(", ")}`);
  process.exit(2);
}

for (const name of wanted.length > 0 ? wanted : known) {
  const mod = (await import(new URL(`${name}.ts`, here).href)) as { run?: () => Promise<BenchReport> };
  if (typeof mod.run !== "function") continue;
  const report = await mod.run();
  printReport(report);
}
