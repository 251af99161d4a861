import { createHash, randomUUID } from "node:crypto";
import { PGlite } from "@electric-sql/pglite";
import { sql } from "kysely";
import pg from "pg";
import { TestRunner } from "vitest";
import { type Database, openDatabase } from "../../src/adapters/postgres/database.js";
import { migrateToLatest } from "../../src/adapters/postgres/migrations.js";

/**
 * The backend the suite runs on: the real PostgreSQL server named by DATABASE_URL when it is set,
 * PGlite otherwise. `.ci/run` runs the whole suite once on each.
 */
export const BACKEND: "postgres" | "pglite" = process.env.DATABASE_URL ? "postgres" : "pglite";
export const SERVER_URL = process.env.DATABASE_URL;

let sharedPglite: PGlite | undefined;

/**
 * A fresh, migrated ledger schema on the suite's backend. On PGlite one in-process instance is
 * shared by the test file (start-up costs seconds) and every call gets its own schema; on the
 * server every call gets its own schema in the run's database. The schema is dropped by
 * `close()`; with KEEP_FAILED_SCHEMAS=1 it is kept, and its name printed, when the test that
 * opened it failed (or, for a schema opened in `beforeAll`, any test of the file), so that its
 * rows can be inspected on the server (`psql … -c 'SET search_path = t_…'`). The verdict is read
 * when `close()` runs, so close in `afterEach`/`afterAll`, not inside the test body.
 */
export async function openTestDatabase(
  label = "t",
  options: { migrate?: boolean; poolSize?: number } = {},
): Promise<Database & { url: string }> {
  const schema = `t_${createHash("sha1").update(`${label}:${randomUUID()}`).digest("hex").slice(0, 16)}`;
  let database: Database;
  let url: string;
  if (BACKEND === "postgres") {
    url = SERVER_URL as string;
    database = await openDatabase(url, { schema, poolSize: options.poolSize ?? 10 });
  } else {
    sharedPglite ??= new PGlite();
    url = "pglite:memory";
    database = await openDatabase(sharedPglite, { schema });
  }
  if (options.migrate !== false) await migrateToLatest(database.db, schema);
  const failed = failureOfOpener();
  return {
    ...database,
    url,
    ...(BACKEND === "pglite" && sharedPglite ? { pglite: sharedPglite } : {}),
    async close() {
      if (process.env.KEEP_FAILED_SCHEMAS === "1" && failed()) {
        console.warn(
          `KEEP_FAILED_SCHEMAS: kept schema ${schema} of a failed test (${BACKEND === "pglite" ? "in-memory PGlite: gone when the process exits; set DATABASE_URL to keep it" : url})`,
        );
        await database.close();
        return;
      }
      await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(database.db).catch(() => {});
      await database.close();
    },
  };
}

interface TaskLike {
  result?: { state?: string };
  tasks?: TaskLike[];
}

const hasFailed = (task: TaskLike): boolean =>
  task.result?.state === "fail" || (task.tasks ?? []).some(hasFailed);

/**
 * Whether what opened the schema has failed, asked later: the current test when the schema is
 * opened in a test or its `beforeEach`, else (in `beforeAll`) every test of the file. Vitest marks
 * a test failed as soon as its body throws, before its `afterEach` hooks run.
 */
function failureOfOpener(): () => boolean {
  const test = TestRunner.getCurrentTest() as TaskLike | undefined;
  if (test) return () => hasFailed(test);
  const file = (TestRunner.getCurrentSuite() as unknown as { file?: TaskLike } | undefined)?.file;
  return () => file !== undefined && hasFailed(file);
}

/** A plain pg client on the server, for tests that need raw SQL beside the ledger. */
export function serverClient(): pg.Client {
  if (!SERVER_URL) throw new Error("serverClient() needs DATABASE_URL");
  return new pg.Client({ connectionString: SERVER_URL });
}
