import { Command, CommanderError } from "commander";
import { exitCodeFor } from "../errors.js";

/**
 * Runs the `shardledger` CLI with the given arguments and resolves to the process exit code.
 * Commands are added by the CLI issue; until then `demo` says so plainly.
 *
 * @example
 * ```ts
 * process.exitCode = await runCli(["--help"])
 * ```
 */
export async function runCli(argv: readonly string[]): Promise<number> {
  const program = new Command("shardledger")
    .description("Control plane for sharded writes to object storage")
    .option("--database <url>", "postgres:// URL, pglite:<dir> or pglite:memory")
    .option("--json", "print machine-readable JSON on stdout")
    .exitOverride();
  program
    .command("demo")
    .description("a simulated multi-engine write on the embedded defaults")
    .action(() => {
      process.stdout.write("demo: not yet — the CLI lands with issue 7 (see CHANGELOG.md)\n");
    });
  try {
    await program.parseAsync([...argv], { from: "user" });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    process.stderr.write(`shardledger: ${(e as Error).message}\n`);
    return exitCodeFor(e);
  }
}
