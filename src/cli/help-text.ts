import type { Command } from "commander";

/**
 * Appends an `Example:` section to a command's `--help`. Every command has one.
 *
 * @example
 * ```ts
 * withExamples(cmd, ["shardledger publish 2026-11-23 --json"])
 * ```
 */
export function withExamples(command: Command, examples: readonly string[], notes?: string): Command {
  const lines = ["", examples.length === 1 ? "Example:" : "Examples:", ...examples.map((e) => `  $ ${e}`)];
  if (notes !== undefined) lines.push("", ...notes.split("\n"));
  return command.addHelpText("after", `${lines.join("\n")}\n`);
}
