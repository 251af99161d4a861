import { createHash, randomUUID } from "node:crypto";
import { sql } from "kysely";
import { describe, expect, it } from "vitest";
import { openDatabase } from "../../src/adapters/postgres/database.js";
import { migrateToLatest } from "../../src/adapters/postgres/migrations.js";
import { BACKEND, SERVER_URL, serverClient } from "../support/database.js";

const schemaName = (label: string) =>
  `t_${createHash("sha1").update(`${label}:${randomUUID()}`).digest("hex").slice(0, 16)}`;

/**
 * An audit replays the log into a scratch schema and drops it afterwards, so on a shared server
 * schemas come and go while another process opens (and so migrates) its ledger. Migrating must
 * look only at its own schema: a migration that read every schema of the database failed with
 * "schema … does not exist" when one was dropped under it (seen in CI). Server only: PGlite runs
 * one statement at a time, so nothing can be dropped during a migration there.
 */
describe.runIf(BACKEND === "postgres")("migrating beside other schemas (real server)", () => {
  it("succeeds while other schemas of the database are created and dropped", async () => {
    const churn = serverClient();
    await churn.connect();
    let stop = false;
    const churning = (async () => {
      while (!stop) {
        const other = schemaName("churn");
        await churn.query(`CREATE SCHEMA ${other}`);
        await churn.query(`CREATE TABLE ${other}.runs (id text PRIMARY KEY, n serial)`);
        await churn.query(`DROP SCHEMA ${other} CASCADE`);
      }
    })();
    const failures: string[] = [];
    try {
      for (let i = 0; i < 25; i++) {
        const schema = schemaName("migrate");
        const database = await openDatabase(SERVER_URL as string, { schema, poolSize: 2 });
        try {
          await migrateToLatest(database.db, schema).catch((e: unknown) =>
            failures.push(String((e as { message?: unknown }).message)),
          );
        } finally {
          await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(database.db);
          await database.close();
        }
      }
    } finally {
      stop = true;
      await churning;
      await churn.end();
    }
    expect(failures).toEqual([]);
  });
});
