import { randomUUID } from "node:crypto";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { advisoryKey } from "../../src/adapters/postgres/advisory-keys.js";
import { withDatasetLock } from "../../src/adapters/postgres/dataset-lock.js";
import { createPgEventLog, type PgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import { BACKEND, openTestDatabase, serverClient } from "../support/database.js";

type TestDb = Awaited<ReturnType<typeof openTestDatabase>>;

/** The backend holding the maintenance advisory lock of `datasetId`, found by its key in pg_locks. */
async function lockHolderPid(schema: string, datasetId: string): Promise<number | null> {
  const key = BigInt(advisoryKey(schema, `maintenance:${datasetId}`));
  const client = serverClient();
  await client.connect();
  try {
    const { rows } = await client.query<{ pid: number }>(
      `SELECT pid FROM pg_locks
       WHERE locktype = 'advisory' AND granted AND objsubid = 1
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
         AND classid = $1::bigint::oid AND objid = $2::bigint::oid`,
      [((key >> 32n) & 0xffffffffn).toString(), (key & 0xffffffffn).toString()],
    );
    return rows[0]?.pid ?? null;
  } finally {
    await client.end();
  }
}

async function terminate(pid: number): Promise<void> {
  const client = serverClient();
  await client.connect();
  try {
    await client.query("SELECT pg_terminate_backend($1)", [pid]);
  } finally {
    await client.end();
  }
}

describe.runIf(BACKEND === "postgres")("a maintenance lock whose connection dies (server)", () => {
  let database: TestDb;
  let log: PgEventLog;
  beforeAll(async () => {
    database = await openTestDatabase("lease");
    log = createPgEventLog({ db: database.db, schema: database.schema });
  });
  afterAll(() => database.close());

  it("stops the first pass once a second one holds the lock", async () => {
    const datasetId = `d-${randomUUID()}`;
    const stream = `s-${randomUUID()}`;
    let secondAcquired = false;
    const firstAppend = await withDatasetLock(
      database,
      "maintenance",
      datasetId,
      async () => {
        const pid = await lockHolderPid(database.schema, datasetId);
        expect(pid).not.toBeNull();
        await terminate(pid as number);
        await withDatasetLock(
          database,
          "maintenance",
          datasetId,
          async () => {
            secondAcquired = true;
          },
          { wait: false },
        );
        // The first pass still believes it holds the lock: its next write must be refused.
        return log
          .append(stream, [{ type: "RunHeartbeat", data: { runId: "r1" } }], { expectedVersion: "any" })
          .then(
            () => "written",
            (e: unknown) => e,
          );
      },
      { wait: false },
    ).catch((e: unknown) => e);
    expect(secondAcquired).toBe(true);
    expect(firstAppend).not.toBe("written");
    const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(database.schema, "events")}
      WHERE stream_id = ${stream}`.execute(database.db);
    expect(Number(rows[0]?.n)).toBe(0);
  });
});
