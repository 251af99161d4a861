import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { redactUrl } from "../adapters/postgres/connection-url.js";
import type { DatabaseInput } from "../adapters/postgres/database.js";
import { describeError, InternalError, ValidationError } from "../errors.js";
import type { Ledger } from "../ledger/open-ledger.js";
import type { GlobalOptions } from "./global-options.js";
import { acquireDirLock, type DirLock } from "./pglite-dir-lock.js";

/**
 * One open ledger for one CLI invocation, and what it runs on. The CLI opens the connection
 * itself (a `pg.Pool` with a connect timeout, or a PGlite instance behind a directory lock) and
 * lends it to `openLedger`, so it controls time-outs and closes everything in order.
 *
 * The heavy modules (pg, PGlite, the ledger and the S3 client) are imported here on first use, so
 * `--help` and input errors answer at once.
 *
 * @example `const { ledger } = await openLedgerSession(globals, { cwd, migrating: false, warn })`
 */
export interface LedgerSession {
  readonly ledger: Ledger;
  /** The database as shown in messages (password hidden). */
  readonly label: string;
  close(): Promise<void>;
}

interface Connection {
  input: DatabaseInput;
  query(text: string): Promise<Record<string, unknown>[]>;
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
  options: { cwd: string; migrating: boolean; warn(message: string): void },
): Promise<LedgerSession> {
  const label = redactUrl(globals.database);
  // Load the ledger while the database starts (PGlite takes most of a second to boot).
  const ledgerModule = import("../ledger/open-ledger.js");
  ledgerModule.catch(() => {});
  const connection = await connect(globals, options.cwd, options.migrating);
  try {
    await ping(connection, label);
    if (!options.migrating) await checkSchema(connection, globals.schema, label, options.warn);
    const { openLedger } = await ledgerModule;
    const ledger = await openLedger({
      database: connection.input,
      schema: globals.schema,
      migrate: false,
      actor: globals.actor,
      // A CLI process is short-lived: `publish` returns as soon as the run is published and
      // leaves the losers to `cleanup` / `maintain` instead of deleting them before it exits.
      cleanupAfterPublish: false,
    });
    let closed: Promise<void> | undefined;
    return {
      ledger,
      label,
      close() {
        closed ??= (async () => {
          try {
            await ledger.close();
          } finally {
            await connection.close();
          }
        })();
        return closed;
      },
    };
  } catch (e) {
    await connection.close().catch(() => {});
    throw e;
  }
}

async function connect(globals: GlobalOptions, cwd: string, migrating: boolean): Promise<Connection> {
  const url = globals.database;
  if (url.startsWith("pglite:")) {
    const { PGlite } = await import("@electric-sql/pglite");
    const location = url.slice("pglite:".length);
    if (location === "memory") return pgliteConnection(new PGlite(), null);
    const dir = resolve(cwd, location);
    if (!migrating && !existsSync(join(dir, "PG_VERSION"))) {
      // Only `migrate` creates a ledger; anything else on a directory that holds none is a typo
      // or a missing first step, and must not leave an empty database behind.
      throw new ValidationError(
        "--database",
        `${url} holds no database yet (${dir}); run \`shardledger migrate\` first`,
      );
    }
    mkdirSync(dir, { recursive: true });
    const lock = await acquireDirLock(dir, globals.connectTimeoutMs);
    try {
      return pgliteConnection(new PGlite(dir), lock);
    } catch (e) {
      lock.release();
      throw e;
    }
  }
  const { default: pg } = await import("pg");
  const pool = new pg.Pool({
    connectionString: url,
    // Publish holds one connection for the dataset lock while it works on another.
    max: 4,
    connectionTimeoutMillis: globals.connectTimeoutMs,
    application_name: "shardledger-cli",
  });
  // An idle client errors when the server goes away; without a listener that crashes the process.
  pool.on("error", () => {});
  return {
    input: pool,
    query: async (text) => (await pool.query(text)).rows as Record<string, unknown>[],
    close: () => pool.end(),
  };
}

function pgliteConnection(pglite: import("@electric-sql/pglite").PGlite, lock: DirLock | null): Connection {
  let closed: Promise<void> | undefined;
  return {
    input: pglite,
    query: async (text) => (await pglite.query<Record<string, unknown>>(text)).rows,
    close() {
      closed ??= (async () => {
        try {
          if (!pglite.closed) await pglite.close();
        } finally {
          lock?.release();
        }
      })();
      return closed;
    },
  };
}

async function ping(connection: Connection, label: string): Promise<void> {
  try {
    await connection.query("SELECT 1");
  } catch (e) {
    throw new InternalError(`cannot reach the database ${label}: ${describeError(e)}`, {
      cause: e,
    });
  }
}

/**
 * Commands other than `migrate` never create or alter the schema (an operator with a read-only
 * role, or a mistyped `--schema`, must not end up with a new empty ledger). They check that every
 * migration this version knows is applied, and say to run `migrate` when it is not.
 */
async function checkSchema(
  connection: Connection,
  schema: string,
  label: string,
  warn: (message: string) => void,
): Promise<void> {
  const table = `"${schema}".schema_migrations`;
  const [found] = await connection.query(`SELECT to_regclass('${table}') IS NOT NULL AS present`);
  if (found?.present !== true) {
    throw new ValidationError(
      "--schema",
      `${label} has no shardledger schema "${schema}"; run \`shardledger migrate\` first (or check --database/--schema)`,
    );
  }
  const { MIGRATIONS } = await import("../adapters/postgres/migrations.js");
  const applied = new Set((await connection.query(`SELECT name FROM ${table}`)).map((r) => String(r.name)));
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
