import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** The built CLI, as the package's `bin` ships it (the esbuild bundle of scripts/bundle-cli.ts). */
export const CLI_PATH = join(ROOT, "dist", "bin", "shardledger.js");

/**
 * Builds the package as `npm run build` does — `tsc -p tsconfig.build.json`, then the CLI bundle —
 * so the end-to-end tests run what ships, not the sources. Called once per test run by vitest's
 * `globalSetup` (vitest.config.ts), before any test file starts: every file that spawns the CLI
 * shares that one build instead of compiling it again in each worker.
 *
 * Type errors in the CLI fail the build. Type errors elsewhere (layers being edited in parallel)
 * are reported but do not stop the CLI tests: tsc still emits JavaScript for them, and the tests
 * themselves show whether the CLI works.
 *
 * @example `const cli = buildCli() // ".../dist/bin/shardledger.js"`
 */
export function buildCli(): string {
  const tsc = spawnSync(
    process.execPath,
    [join(ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.build.json"],
    {
      cwd: ROOT,
      encoding: "utf8",
    },
  );
  const output = `${tsc.stdout ?? ""}${tsc.stderr ?? ""}`;
  if (tsc.error) throw tsc.error;
  if (tsc.status !== 0) {
    const cliErrors = output.split("\n").filter((line) => line.startsWith("src/cli/"));
    if (cliErrors.length > 0) throw new Error(`building the CLI failed:\n${output}`);
    console.warn(`tsc reported errors outside src/cli (the CLI is still bundled):\n${output}`);
  }
  const bundle = spawnSync(process.execPath, ["--import", "tsx", join(ROOT, "scripts", "bundle-cli.ts")], {
    cwd: ROOT,
    encoding: "utf8",
  });
  if (bundle.error) throw bundle.error;
  if (bundle.status !== 0 || !existsSync(CLI_PATH)) {
    throw new Error(`bundling the CLI failed:\n${bundle.stdout ?? ""}${bundle.stderr ?? ""}`);
  }
  return CLI_PATH;
}

/**
 * The path of the CLI that `globalSetup` built for this run. A test file run without the
 * project's config (no globalSetup) builds it itself, once per worker.
 *
 * @example `beforeAll(() => { cliPath = builtCli() })`
 */
export function builtCli(): string {
  if (process.env.SHARDLEDGER_TEST_CLI) return process.env.SHARDLEDGER_TEST_CLI;
  process.env.SHARDLEDGER_TEST_CLI = buildCli();
  return process.env.SHARDLEDGER_TEST_CLI;
}
