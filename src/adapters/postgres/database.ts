import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { Kysely, type KyselyConfig, PostgresDialect, type PostgresPool } from "kysely";
import { ValidationError } from "../../errors.js";
import { redactUrl } from "./connection-url.js";
import { createPglitePool, type PGliteLike } from "./pglite-pool.js";
import type { ConnectPipelined, PipelineClient } from "./pipelined-transaction.js";
import { usePreparedStatements } from "./prepared-statements.js";

/**
 * The kysely instance the ledger uses. Its tables live in a schema chosen at run time, so it is
 * not typed by a static database interface; each query types its own rows.
 */
// biome-ignore lint/suspicious/noExplicitAny: the schema name is chosen at run time
export type LedgerDb = Kysely<any>;

/**
 * A `pg.Pool`-like object: anything kysely's PostgresDialect accepts (kept structural so the
 * driver is not forced on users).
 *
 * @example
 * ```ts
 * import pg from "pg"
 * const pool: PostgresPoolLike = new pg.Pool({ connectionString: "postgres://localhost/ledger" })
 * const ledger = await openLedger({ database: pool })
 * ```
 */
export type PostgresPoolLike = PostgresPool;

/**
 * Where the ledger keeps its log: a `postgres://` URL, `pglite:<dir>`, `pglite:memory`, an open
 * PGlite instance, or a pg-compatible pool.
 *
 * @example
 * ```ts
 * const database: DatabaseInput = process.env.SHARDLEDGER_DATABASE_URL ?? "pglite:./.shardledger/db"
 * const ledger = await openLedger({ database })
 * ```
 */
export type DatabaseInput = string | PGliteLike | PostgresPoolLike;

/**
 * An open database: the kysely instance every adapter shares, the schema the ledger lives in, and
 * what kind of backend it is.
 *
 * @example
 * ```ts
 * const database = await openDatabase("pglite:memory")
 * await database.close()
 * ```
 */
export interface Database {
  readonly db: LedgerDb;
  readonly schema: string;
  readonly kind: "postgres" | "pglite";
  /**
   * A client of the ledger's own pg pool for a pipelined transaction (see PipelinedTransaction);
   * absent on PGlite and on a pool passed in (its clients may not be pg's).
   */
  readonly connectPipelined?: ConnectPipelined;
  close(): Promise<void>;
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** Validates a Postgres schema name for the ledger's tables. */
export function assertSchemaName(schema: string): string {
  if (!SCHEMA_NAME.test(schema)) {
    throw new ValidationError("schema", `must match ${SCHEMA_NAME.source} (got ${JSON.stringify(schema)})`);
  }
  return schema;
}

/**
 * Options of {@link openDatabase}. The connection settings apply to a `postgres://` URL only (a
 * pool passed in keeps its own, PGlite has no connection).
 *
 * @example
 * ```ts
 * const options: OpenDatabaseOptions = { schema: "shardledger", poolSize: 4, connectTimeoutMs: 5_000, applicationName: "nightly-export" }
 * ```
 */
export interface OpenDatabaseOptions {
  /** Postgres schema of the ledger's tables (default `shardledger`). */
  schema?: string;
  /** Connections in the pool (default 10). */
  poolSize?: number;
  /** How long to wait for a connection before failing (default 10 s). */
  connectTimeoutMs?: number;
  /** Shown in `pg_stat_activity.application_name`. */
  applicationName?: string;
}

/**
 * Opens the database named by `input`. PGlite directories are created on first use. A pool or
 * PGlite instance passed in is borrowed: `close()` does not close it.
 *
 * @example
 * ```ts
 * const database = await openDatabase("postgres://postgres@127.0.0.1:5432/ledger", { schema: "shardledger" })
 * ```
 */
export async function openDatabase(
  input: DatabaseInput,
  options: OpenDatabaseOptions = {},
): Promise<Database> {
  const schema = assertSchemaName(options.schema ?? "shardledger");
  if (typeof input === "string") {
    // The drivers are imported for the kind of URL given, not both at start-up (`--help` of the CLI
    // loads neither, a CLI on PGlite never loads pg).
    if (/^postgres(ql)?:\/\//.test(input)) {
      const { default: pg } = await import("pg");
      // A host that never answers must fail, not hang: 10 s to connect unless told otherwise.
      const pool = new pg.Pool({
        connectionString: input,
        max: options.poolSize ?? 10,
        connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000,
        ...(options.applicationName !== undefined ? { application_name: options.applicationName } : {}),
      });
      // Idle clients can error when the server restarts; without a listener that crashes the process.
      pool.on("error", () => {});
      pool.on("connect", (client) => {
        survivesConnectionLoss(client);
        // Our own pool: its clients are pg's, which take a named statement (a pool passed in may
        // hand out anything with kysely's query(text, parameters), so it is left alone).
        usePreparedStatements(client);
      });
      const db = newLedgerDb({ dialect: new PostgresDialect({ pool }) });
      // pg's clients take `pipeline` from 8.23 on; the pool is the same one kysely draws from.
      const connectPipelined = async () => (await pool.connect()) as unknown as PipelineClient;
      return { db, schema, kind: "postgres", connectPipelined, close: () => db.destroy() };
    }
    if (input.startsWith("pglite:")) {
      const location = input.slice("pglite:".length);
      if (location.length === 0)
        throw new ValidationError("database", "pglite: needs a directory or 'memory'");
      const { PGlite } = await import("@electric-sql/pglite");
      // PGlite creates its own directory but not its parents: `pglite:./.shardledger/db` on a
      // fresh checkout would fail with a bare ENOENT (the CLI makes them too).
      if (location !== "memory") mkdirSync(dirname(resolve(location)), { recursive: true });
      const pglite = location === "memory" ? new PGlite() : new PGlite(location);
      await pglite.waitReady;
      const db = newLedgerDb({ dialect: new PostgresDialect({ pool: createPglitePool(pglite) }) });
      return { db, schema, kind: "pglite", close: () => db.destroy() };
    }
    throw new ValidationError(
      "database",
      `must be a postgres:// URL, pglite:<dir> or pglite:memory (got ${JSON.stringify(redactUrl(input))})`,
    );
  }
  if (isPglite(input)) {
    await input.waitReady;
    const db = newLedgerDb({
      dialect: new PostgresDialect({ pool: createPglitePool(input, { closeOnEnd: false }) }),
    });
    return { db, schema, kind: "pglite", close: () => db.destroy() };
  }
  const borrowed: PostgresPool = {
    connect: async () => {
      const client = await input.connect();
      survivesConnectionLoss(client);
      return client;
    },
    end: async () => {},
  };
  const db = newLedgerDb({ dialect: new PostgresDialect({ pool: borrowed }) });
  return { db, schema, kind: "postgres", close: () => db.destroy() };
}

const guarded = new WeakSet<object>();

/**
 * pg's pool listens for errors only on idle clients. A checked-out client that sits idle (the
 * connection holding a maintenance lock while the pass talks to the object store) and whose
 * server session ends (idle_session_timeout, failover, pg_terminate_backend) emits an `error`
 * event nobody hears, which crashes the process. With this listener the client just becomes
 * unusable: its next query fails, which is how the lock's owner learns the lock is gone.
 */
function survivesConnectionLoss(client: unknown): void {
  const emitter = client as { on?: (event: "error", listener: () => void) => unknown };
  if (typeof emitter.on !== "function" || guarded.has(client as object)) return;
  guarded.add(client as object);
  emitter.on("error", () => {});
}

function newLedgerDb(config: KyselyConfig): LedgerDb {
  // biome-ignore lint/suspicious/noExplicitAny: see LedgerDb
  return new Kysely<any>(config);
}

function isPglite(x: PGliteLike | PostgresPoolLike): x is PGliteLike {
  return typeof (x as PGliteLike).query === "function" && "waitReady" in x;
}
