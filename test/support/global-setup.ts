import type { TestProject } from "vitest/node";
import { buildCli } from "./build-cli.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** The CLI built once for this run (absent when no CLI test file is in the run). */
    cliPath?: string;
  }
}

/**
 * vitest `globalSetup`: builds the CLI once per run, before any test file starts, and hands its
 * path to every file through `inject("cliPath")`. A run filtered to files that spawn no CLI
 * (`npx vitest run test/ledger`) skips the build.
 *
 * @example `export default defineConfig({ test: { globalSetup: ["test/support/global-setup.ts"] } })`
 */
export default function setup(project: TestProject): void {
  if (!runsCliTests(process.argv)) return;
  project.provide("cliPath", buildCli());
}

/** Positional arguments of `vitest [run] [filters…]` are file filters; none means every file. */
function runsCliTests(argv: readonly string[]): boolean {
  const vitest = argv.findIndex((a) => /vitest(\.m?js)?$/.test(a));
  const filters = argv
    .slice(vitest + 1)
    .filter(
      (a, i, all) =>
        !a.startsWith("-") &&
        !(i === 0 && ["run", "watch", "dev", "related"].includes(a)) &&
        !all[i - 1]?.startsWith("--"),
    );
  return filters.length === 0 || filters.some((f) => /cli/.test(f));
}
