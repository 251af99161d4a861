import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { redactUrl } from "../adapters/postgres/connection-url.js";
import type { Database } from "../adapters/postgres/database.js";
import { describeError, InternalError, ValidationError } from "../errors.js";
import type { Ledger } from "../ledger/open-ledger.js";
import type { GlobalOptions } from "./global-options.js";
import { acquireDirLock } from "./pglite-dir-lock.js";

/**
 * One open ledger for one CLI invocation, and what it runs on. The CLI opens the database through
 * `openDatabase` with its own connection settings (connect timeout, a small pool, its application
 * name) and, for a PGlite directory, behind a directory lock; it checks the schema, then hands the
 * database to the ledger, which closes it (and so releases the lock) on `close()`.
 *
 * The heavy modules (kysely, pg, PGlite, the ledger and the S3 client) are imported here on first
 * use, so `--help` and input errors answer at once.
 *
 * @example `const { ledger } = await openLedgerSession(globals, { cwd, migrating: false, warn })`
 */
export interface LedgerSession {
  readonly ledger: Ledger;
  /** The database as shown in messages (password hidden). */
  readonly label: string;
  close(): Promise<void>;
}

/**
 * Connects, checks the schema (unless `migrating`), and opens the ledger.
 *
 * @example
 * ```ts
 * const session = await openLedgerSession(globals, { cwd: process.cwd(), migrating: false, warn })
 * try { await session.ledger.runs("events") } finally { await session.close() }
 * ```
 */
export async function openLedgerSession(
  globals: GlobalOptions,
  options: { cwd: string; migrating: boolean; poolSize?: number; warn(message: string): void },
): Promise<LedgerSession> {
  const label = redactUrl(globals.database);
  // Load the ledger while the database starts (PGlite takes most of a second to boot).
  const ledgerModule = import("../ledger/open-ledger.js");
  ledgerModule.catch(() => {});
  const database = await connect(globals, options.cwd, options.migrating, label, options.poolSize ?? 4);
  try {
    await ping(database, label);
    if (!options.migrating) await checkSchema(database, globals.schema, label, options.warn);
    const { openLedgerOn } = await ledgerModule;
    const ledger = await openLedgerOn(database, {
      migrate: false,
      actor: globals.actor,
      // A CLI process is short-lived: `publish` returns as soon as the run is published and
      // leaves the losers to `cleanup` / `maintain` instead of deleting them before it exits.
      cleanupAfterPublish: false,
    });
    return { ledger, label, close: () => ledger.close() };
  } catch (e) {
    await database.close().catch(() => {});
    throw e;
  }
}

async function connect(
  globals: GlobalOptions,
  cwd: string,
  migrating: boolean,
  label: string,
  poolSize: number,
): Promise<Database> {
  const { openDatabase } = await import("../adapters/postgres/database.js");
  const url = globals.database;
  const open = async (input: string): Promise<Database> => {
    try {
      return await openDatabase(input, {
        schema: globals.schema,
        // Publish holds one connection for the dataset lock while it works on another.
        poolSize,
        connectTimeoutMs: globals.connectTimeoutMs,
        applicationName: "shardledger-cli",
      });
    } catch (e) {
      // PGlite starts (and fails on a damaged directory) on open; a server is reached on first query.
      throw unreachable(e, label);
    }
  };
  if (!url.startsWith("pglite:") || url === "pglite:memory") return open(url);
  const dir = resolve(cwd, url.slice("pglite:".length));
  if (!migrating && !existsSync(join(dir, "PG_VERSION"))) {
    // Only `migrate` creates a ledger; anything else on a directory that holds none is a typo
    // or a missing first step, and must not leave an empty database behind.
    throw new ValidationError(
      "--database",
      `${url} holds no database yet (${dir}); run \`shardledger migrate\` first`,
    );
  }
  mkdirSync(dir, { recursive: true });
  // PGlite is one backend in one process: the lock is held until the database is closed.
  const lock = await acquireDirLock(dir, globals.connectTimeoutMs);
  let database: Database;
  try {
    database = await open(`pglite:${dir}`);
  } catch (e) {
    lock.release();
    throw e;
  }
  let closed: Promise<void> | undefined;
  return {
    db: database.db,
    schema: database.schema,
    kind: database.kind,
    close() {
      closed ??= (async () => {
        try {
          await database.close();
        } finally {
          lock.release();
        }
      })();
      return closed;
    },
  };
}

async function query(database: Database, text: string): Promise<Record<string, unknown>[]> {
  const { sql } = await import("kysely");
  return (await sql.raw<Record<string, unknown>>(text).execute(database.db)).rows;
}

function unreachable(e: unknown, label: string): unknown {
  if (e instanceof ValidationError) return e;
  return new InternalError(`cannot reach the database ${label}: ${describeError(e)}`, { cause: e });
}

async function ping(database: Database, label: string): Promise<void> {
  try {
    await query(database, "SELECT 1");
  } catch (e) {
    throw unreachable(e, label);
  }
}

/**
 * Commands other than `migrate` never create or alter the schema (an operator with a read-only
 * role, or a mistyped `--schema`, must not end up with a new empty ledger). They check that every
 * migration this version knows is applied, and say to run `migrate` when it is not.
 */
async function checkSchema(
  database: Database,
  schema: string,
  label: string,
  warn: (message: string) => void,
): Promise<void> {
  const table = `"${schema}".schema_migrations`;
  const [found] = await query(database, `SELECT to_regclass('${table}') IS NOT NULL AS present`);
  if (found?.present !== true) {
    throw new ValidationError(
      "--schema",
      `${label} has no shardledger schema "${schema}"; run \`shardledger migrate\` first (or check --database/--schema)`,
    );
  }
  const { MIGRATIONS } = await import("../adapters/postgres/migrations.js");
  const applied = new Set((await query(database, `SELECT name FROM ${table}`)).map((r) => String(r.name)));
  const missing = MIGRATIONS.map((m) => m.name).filter((name) => !applied.has(name));
  if (missing.length > 0) {
    throw new ValidationError(
      "--schema",
      `schema "${schema}" of ${label} is behind this shardledger (missing ${missing.join(", ")}); run \`shardledger migrate\``,
    );
  }
  const known = new Set(MIGRATIONS.map((m) => m.name));
  const newer = [...applied].filter((name) => !known.has(name));
  if (newer.length > 0) {
    warn(
      `schema "${schema}" has migrations this shardledger does not know (${newer.join(", ")}); it may be outdated`,
    );
  }
}

/**
 * A one-line description of a driver error (kept here for the CLI's imports; defined beside the
 * error classes, which use it for the JSON error body).
 *
 * @example `describeError(new AggregateError([new Error("connect ECONNREFUSED ::1:5432")])) // "connect ECONNREFUSED ::1:5432"`
 */
export { describeError } from "../errors.js";
