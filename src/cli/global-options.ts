import { userInfo } from "node:os";
import type { Command } from "commander";
import { redactUrl } from "../adapters/postgres/connection-url.js";
import { isValidationError, ValidationError } from "../errors.js";
import type { CliIo } from "./cli-io.js";
import { durationFlag } from "./flags.js";

/**
 * The embedded default: a PGlite directory under the working directory.
 *
 * @example `shardledger runs events  # reads pglite:./.shardledger/db`
 */
const DEFAULT_DATABASE = "pglite:./.shardledger/db";
/**
 * How long to wait for a database connection (or a busy PGlite directory) by default.
 *
 * @example `shardledger --connect-timeout 30s runs events`
 */
const DEFAULT_CONNECT_TIMEOUT = "10s";

/**
 * The options every command takes, resolved and validated.
 *
 * @example
 * ```ts
 * const globals = resolveGlobalOptions(command.optsWithGlobals(), io)
 * ```
 */
export interface GlobalOptions {
  /** `postgres://…`, `pglite:<dir>` or `pglite:memory`. */
  database: string;
  /** Where `database` came from, for messages. */
  databaseFrom: "--database" | "SHARDLEDGER_DATABASE_URL" | "default";
  schema: string;
  json: boolean;
  color: boolean;
  connectTimeoutMs: number;
  /** Recorded as `metadata.actor` on every event this invocation appends. */
  actor: string;
}

/**
 * Declares the global options on the root command.
 *
 * @example
 * ```ts
 * addGlobalOptions(new Command("shardledger"))
 * ```
 */
export function addGlobalOptions(program: Command): Command {
  return program
    .option(
      "--database <url>",
      `postgres:// URL, pglite:<dir> or pglite:memory (env SHARDLEDGER_DATABASE_URL, default ${DEFAULT_DATABASE})`,
    )
    .option(
      "--schema <name>",
      "Postgres schema of the ledger's tables (env SHARDLEDGER_SCHEMA, default shardledger)",
    )
    .option("--json", "print exactly one JSON document on stdout (messages go to stderr)")
    .option("--no-color", "no colours in human output (also NO_COLOR)")
    .option(
      "--connect-timeout <duration>",
      `give up connecting to the database after this long (default ${DEFAULT_CONNECT_TIMEOUT})`,
    )
    .option("--actor <name>", "recorded as the actor of every event appended (default cli:<user>)");
}

/**
 * Reads and validates the global options (flags, then environment, then defaults). Throws a
 * {@link ValidationError} naming the flag, before anything is opened.
 *
 * @example `const globals = await resolveGlobalOptions(command.optsWithGlobals(), io)`
 */
export async function resolveGlobalOptions(
  raw: Record<string, unknown>,
  io: Pick<CliIo, "env">,
): Promise<GlobalOptions> {
  const flag = (name: string) => (typeof raw[name] === "string" ? (raw[name] as string) : undefined);
  const fromFlag = flag("database");
  const fromEnv = io.env.SHARDLEDGER_DATABASE_URL;
  const database = fromFlag ?? (fromEnv !== undefined && fromEnv !== "" ? fromEnv : DEFAULT_DATABASE);
  const databaseFrom =
    fromFlag !== undefined ? "--database" : database === fromEnv ? "SHARDLEDGER_DATABASE_URL" : "default";
  validateDatabaseUrl(databaseFrom === "default" ? "--database" : databaseFrom, database);

  const schemaText = flag("schema") ?? (io.env.SHARDLEDGER_SCHEMA || "shardledger");
  let schema: string;
  try {
    // Imported here, not at the top: it loads the database drivers, which `--help` never needs.
    const { assertSchemaName } = await import("../adapters/postgres/database.js");
    schema = assertSchemaName(schemaText);
  } catch (e) {
    if (isValidationError(e)) throw new ValidationError("--schema", e.message.replace(/^schema: /, ""));
    throw e;
  }

  const actor = flag("actor") ?? defaultActor();
  if (actor.length === 0 || actor.length > 256)
    throw new ValidationError("--actor", "must be 1–256 characters");

  return {
    database,
    databaseFrom,
    schema,
    json: raw.json === true,
    color: raw.color !== false,
    connectTimeoutMs: durationFlag("--connect-timeout", flag("connectTimeout") ?? DEFAULT_CONNECT_TIMEOUT),
    actor,
  };
}

/**
 * Checks the form of a database URL without connecting.
 *
 * @example
 * ```ts
 * validateDatabaseUrl("--database", "mysql://x") // throws "--database: must be a postgres:// URL, …"
 * ```
 */
function validateDatabaseUrl(source: string, url: string): void {
  if (/^postgres(ql)?:\/\/./.test(url)) return;
  if (url.startsWith("pglite:") && url.length > "pglite:".length) return;
  throw new ValidationError(
    source,
    `must be a postgres:// URL, pglite:<dir> or pglite:memory (got ${JSON.stringify(redactUrl(url))})`,
  );
}

function defaultActor(): string {
  try {
    return `cli:${userInfo().username}`;
  } catch {
    // No passwd entry for the uid (some containers).
    return "cli";
  }
}
