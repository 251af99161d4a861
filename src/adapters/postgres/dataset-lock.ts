import { sql } from "kysely";
import { ShardledgerError } from "../../errors.js";
import { advisoryKey } from "./advisory-keys.js";
import type { Database } from "./database.js";

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
 * @example
 * ```ts
 * await withDatasetLock(database, "maintenance", "events", () => runPass(), { wait: false })
 * ```
 */
export async function withDatasetLock<T>(
  database: Database,
  purpose: "publish" | "maintenance" | "registry",
  datasetId: string,
  fn: () => Promise<T>,
  options: { wait?: boolean } = {},
): Promise<T> {
  const name = `${purpose}:${datasetId}`;
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
      return await fn();
    } finally {
      release();
      if (inProcess.get(`${database.schema}\0${name}`) === chained)
        inProcess.delete(`${database.schema}\0${name}`);
    }
  }
  const key = advisoryKey(database.schema, name);
  return database.db.connection().execute(async (conn) => {
    if (options.wait === false) {
      const { rows } = await sql<{ ok: boolean }>`SELECT pg_try_advisory_lock(${key}::bigint) AS ok`.execute(
        conn,
      );
      if (!rows[0]?.ok) throw locked(name);
    } else {
      await sql`SELECT pg_advisory_lock(${key}::bigint)`.execute(conn);
    }
    try {
      return await fn();
    } finally {
      await sql`SELECT pg_advisory_unlock(${key}::bigint)`.execute(conn);
    }
  });
}

function locked(name: string): ShardledgerError {
  return new ShardledgerError("LOCKED", `${name} is held by another pass; try again later`, {
    details: { lock: name },
  });
}
