import { type Command, CommanderError } from "commander";
import { isShardledgerError, NotFoundError, UsageError } from "../errors.js";

/**
 * The CLI's side of the JSON error body: what a command threw, in the terms `errorBody`
 * (src/errors.ts, the one definition of the body) understands. Commander's usage errors become
 * `USAGE` errors naming the flag or argument, an interruption becomes `INTERRUPTED`, and a
 * `NOT_FOUND` learns which argument named the missing thing. The exit code is still decided on
 * the original error (`cliExitCode`).
 */

/**
 * What a command was invoked with, so a `NOT_FOUND` can name the argument that held the id.
 *
 * @example
 * ```ts
 * const invocation: Invocation = { command, args: ["ds"], options: { run: "nosuch" } }
 * ```
 */
export interface Invocation {
  command: Command;
  args: readonly string[];
  options: unknown;
}

/**
 * Converts anything a CLI invocation threw into the error whose body `--json` prints.
 *
 * @example
 * ```ts
 * io.stdout.write(toJsonDocument(errorBody(cliError(e, invocation))))
 * ```
 */
export function cliError(e: unknown, invocation?: Invocation): unknown {
  if (e instanceof CommanderError) return usageError(e);
  if (invocation && isShardledgerError(e) && e.code === "NOT_FOUND" && e.details.field === undefined) {
    const field = fieldNaming(invocation, e.details.kind, e.details.id);
    if (field !== undefined) {
      const { kind, id, ...rest } = e.details as Record<string, unknown>;
      return new NotFoundError(String(kind), String(id), {
        message: e.message,
        field,
        details: rest,
        cause: e,
      });
    }
  }
  return e;
}

/**
 * Whether argv asks for JSON output. Commander's own errors are raised while parsing, before the
 * global options are resolved, so the flag is looked for in the words themselves (not after `--`).
 *
 * @example
 * ```ts
 * wantsJson(["runs", "ds", "--json"]) // true
 * ```
 */
export function wantsJson(argv: readonly string[]): boolean {
  const end = argv.indexOf("--");
  return (end === -1 ? argv : argv.slice(0, end)).includes("--json");
}

/** A commander error as a USAGE error, with the flag or argument it names as `field`. */
function usageError(e: CommanderError): UsageError {
  const text = e.message.replace(/^error: /, "").trim();
  // A group without its subcommand (or no command at all) prints help and says "(outputHelp)".
  const message =
    e.code === "commander.help" ? "a subcommand is required; run with --help to list them" : text;
  const field = usageField(e.code, text);
  return new UsageError(message, {
    ...(field !== undefined ? { field } : {}),
    cause: e,
    details: { reason: e.code.replace(/^commander\./, "") },
  });
}

function usageField(code: string, text: string): string | undefined {
  switch (code) {
    case "commander.unknownOption":
      return /unknown option '([^']+)'/.exec(text)?.[1];
    case "commander.missingArgument": {
      const name = /missing required argument '([^']+)'/.exec(text)?.[1];
      return name === undefined ? undefined : `<${name}>`;
    }
    case "commander.optionMissingArgument":
    case "commander.missingMandatoryOptionValue":
      // "option '--shards <n>' argument missing", "required option '--shards <n>' not specified"
      return /'(?:-\w, )?(--[\w-]+)/.exec(text)?.[1];
    default:
      return undefined;
  }
}

/**
 * The argument or option of the invocation whose value is `id`, preferring one whose name says
 * the kind (`--run` for a run, `<datasetId>` for a dataset) when several hold the same text.
 */
function fieldNaming(invocation: Invocation, kind: unknown, id: unknown): string | undefined {
  if (typeof id !== "string") return undefined;
  const { command, args } = invocation;
  const options = (invocation.options ?? {}) as Record<string, unknown>;
  const candidates: { field: string; name: string }[] = [];
  command.registeredArguments.forEach((argument, i) => {
    if (args[i] === id) candidates.push({ field: `<${argument.name()}>`, name: argument.name() });
  });
  for (const option of command.options) {
    if (option.long !== undefined && options[option.attributeName()] === id) {
      candidates.push({ field: option.long, name: option.attributeName() });
    }
  }
  const wanted = typeof kind === "string" ? kind.toLowerCase() : "";
  return (candidates.find((c) => c.name.toLowerCase().includes(wanted)) ?? candidates[0])?.field;
}
