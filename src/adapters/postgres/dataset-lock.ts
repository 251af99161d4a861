import { sql } from "kysely";
import { LockedError } from "../../errors.js";
import { advisoryKey } from "./advisory-keys.js";
import type { Database, LedgerDb } from "./database.js";

/**
 * A dataset lock while it is held: its name and, on a server, the connection whose session holds
 * the advisory lock (`null` on PGlite, whose lock is an in-process queue). A holder probes that
 * connection to learn whether the lock still exists.
 *
 * @example
 * ```ts
 * await withDatasetLock(database, "maintenance", "sales", async (held) => {
 *   if (held.connection) await sql`SELECT 1`.execute(held.connection)
 * })
 * ```
 */
export interface HeldDatasetLock {
  readonly name: string;
  /** The advisory-lock key (bigint as a decimal string). */
  readonly key: string;
  readonly connection: LedgerDb | null;
}

const inProcess = new Map<string, Promise<void>>();

/**
 * Runs `fn` while holding the named lock of one dataset (`publish:<id>` or `maintenance:<id>`),
 * or of the dataset registry as a whole (`registry:<name>`), exclusive across processes and
 * machines.
 *
 * On a server it is a session-level Postgres advisory lock on a connection of its own, held for
 * the whole of `fn` (which talks to the object store in between) and released in `finally`; if the
 * process dies, the server ends the session and the lock goes with it. PGlite is one in-process
 * backend that cannot be shared between processes, so there an in-process queue is the same
 * guarantee. With `wait: false` a held lock throws a `LOCKED` error instead of waiting.
 *
 * The lock is a hint, not a guarantee: its session can end while `fn` runs (idle_session_timeout,
 * failover, pg_terminate_backend) and another process then takes it. Maintenance therefore holds
 * it through a lease that fences its writes (`withMaintenanceLease`).
 *
 * @example
 * ```ts
 * await withDatasetLock(database, "maintenance", "events", () => runPass(), { wait: false })
 * ```
 */
export async function withDatasetLock<T>(
  database: Database,
  purpose: "publish" | "maintenance" | "registry",
  datasetId: string,
  fn: (held: HeldDatasetLock) => Promise<T>,
  options: { wait?: boolean } = {},
): Promise<T> {
  const name = `${purpose}:${datasetId}`;
  const key = advisoryKey(database.schema, name);
  if (database.kind === "pglite") {
    const previous = inProcess.get(`${database.schema}\0${name}`);
    if (previous && options.wait === false) throw locked(name);
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const chained = (previous ?? Promise.resolve()).then(() => mine);
    inProcess.set(`${database.schema}\0${name}`, chained);
    await previous;
    try {
      return await fn({ name, key, connection: null });
    } finally {
      release();
      if (inProcess.get(`${database.schema}\0${name}`) === chained)
        inProcess.delete(`${database.schema}\0${name}`);
    }
  }
  return database.db.connection().execute(async (conn) => {
    if (options.wait === false) {
      const { rows } = await sql<{ ok: boolean }>`SELECT pg_try_advisory_lock(${key}::bigint) AS ok`.execute(
        conn,
      );
      if (!rows[0]?.ok) throw locked(name);
    } else {
      await sql`SELECT pg_advisory_lock(${key}::bigint)`.execute(conn);
    }
    const unlock = () => sql`SELECT pg_advisory_unlock(${key}::bigint)`.execute(conn);
    let result: T;
    try {
      result = await fn({ name, key, connection: conn });
    } catch (e) {
      // fn's own error is the one the caller needs (a lost lease, say), not a failed unlock.
      await unlock().catch(() => {});
      throw e;
    }
    await unlock().catch((e: unknown) => {
      // A session that ended took its lock with it: nothing is left to release.
      if (!isConnectionLost(e)) throw e;
    });
    return result;
  });
}

/**
 * Whether `e` says the connection is gone (its session, and every session lock, ended with it):
 * pg's "not queryable" and "Connection terminated" errors, or a server error of class 08
 * (connection exception) or 57P (operator intervention: terminated, shut down).
 *
 * @example
 * ```ts
 * await sql`SELECT 1`.execute(connection).catch((e) => { if (!isConnectionLost(e)) throw e })
 * ```
 */
function isConnectionLost(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === "string" && (code.startsWith("08") || code.startsWith("57P"))) return true;
  const message = e instanceof Error ? e.message : String(e);
  return /not queryable|Connection terminated|ECONNRESET|EPIPE|socket hang up/i.test(message);
}

function locked(name: string): LockedError {
  return new LockedError(`${name} is held by another pass; try again later`, {
    details: { lock: name },
  });
}
