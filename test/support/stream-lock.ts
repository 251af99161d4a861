import { sql } from "kysely";
import { advisoryKey, advisoryLockIds } from "../../src/adapters/postgres/advisory-keys.js";
import type { Database } from "../../src/adapters/postgres/database.js";

/**
 * How many backends wait for a stream's transaction-scoped lock (`serialiseWith`, chained appends):
 * on the server only (PGlite is one backend, which never waits).
 */
export async function waitingForStreamLock(database: Database, streamId: string): Promise<number> {
  const { classid, objid } = advisoryLockIds(advisoryKey(database.schema, `stream:${streamId}`));
  const { rows } = await sql<{ n: number }>`
    SELECT count(*)::int AS n FROM pg_locks
    WHERE locktype = 'advisory' AND NOT granted
      AND classid = ${classid}::bigint::oid AND objid = ${objid}::bigint::oid AND objsubid = 1`.execute(
    database.db,
  );
  return Number(rows[0]?.n);
}
