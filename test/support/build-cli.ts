import { spawnSync } from "node:child_process";
import { chmodSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** The built CLI, as the package's `bin` ships it. */
export const CLI_PATH = join(ROOT, "dist", "cli", "main.js");

let built: string | undefined;

/**
 * Builds the package with `tsc -p tsconfig.build.json` (once per test process) and returns the
 * path of the built CLI, so the end-to-end tests run what ships, not the sources.
 *
 * Type errors in the CLI fail the build. Type errors elsewhere (layers being edited in parallel)
 * are reported but do not stop the CLI tests: tsc still emits JavaScript for them, and the tests
 * themselves show whether the CLI works.
 */
export function buildCli(): string {
  if (built) return built;
  const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
  const result = spawnSync(process.execPath, [tsc, "-p", "tsconfig.build.json"], {
    cwd: ROOT,
    encoding: "utf8",
  });
  const output = `${result.stdout ?? ""}${result.stderr ?? ""}`;
  if (result.error) throw result.error;
  if (result.status !== 0) {
    const cliErrors = output.split("\n").filter((line) => line.startsWith("src/cli/"));
    if (cliErrors.length > 0 || !existsSync(CLI_PATH)) {
      throw new Error(`building the CLI failed:\n${output}`);
    }
    console.warn(`tsc reported errors outside src/cli (the CLI was still built):\n${output}`);
  }
  // tsc writes files without the exec bit; the package's bin must stay runnable (`npx shardledger`).
  chmodSync(CLI_PATH, 0o755);
  built = CLI_PATH;
  return built;
}
