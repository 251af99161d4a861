import { advisoryKey, advisoryLockIds } from "../../src/adapters/postgres/advisory-keys.js";
import { serverClient } from "./database.js";

/** Runs SQL on a connection of its own, outside every pool under test (server only). */
export async function onServer<T>(fn: (client: ReturnType<typeof serverClient>) => Promise<T>): Promise<T> {
  const client = serverClient();
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** The backend holding the maintenance advisory lock of `datasetId`, found by its key in pg_locks. */
export function lockHolderPid(schema: string, datasetId: string): Promise<number | null> {
  const { classid, objid } = advisoryLockIds(advisoryKey(schema, `maintenance:${datasetId}`));
  return onServer(async (client) => {
    const { rows } = await client.query<{ pid: number }>(
      `SELECT pid FROM pg_locks
       WHERE locktype = 'advisory' AND granted AND objsubid = 1
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
         AND classid = $1::bigint::oid AND objid = $2::bigint::oid`,
      [classid, objid],
    );
    return rows[0]?.pid ?? null;
  });
}
