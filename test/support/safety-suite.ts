/**
 * The environment of a safety test file: one database (a fresh schema on the suite's backend,
 * shared by every history), an observer ledger, one clock, a scratch directory and, when asked,
 * one s3rver. Histories are cheap on it: each gets its own dataset ids and its own base location.
 */
import { rm } from "node:fs/promises";
import { sql } from "kysely";
import { afterAll, beforeAll } from "vitest";
import { type Ledger, openLedger } from "../../src/index.js";
import { openTestDatabase } from "./database.js";
import { testClock } from "./ledger.js";
import { type S3rverHandle, scratchDir, startS3rver } from "./s3rver.js";
import {
  type History,
  type HistoryResult,
  LOST_LEASE_EXTENSION,
  runHistory,
  type SafetyEnv,
} from "./safety-history.js";
import { fsBackend, s3Backend } from "./safety-world.js";

/** Runs one history on the suite's database and the chosen store. */
export type PlayHistory = (store: "fs" | "s3", history: History) => Promise<HistoryResult & { id: string }>;

/**
 * Registers beforeAll/afterAll hooks for the file and returns a function that plays a history.
 *
 * @example
 * ```ts
 * const play = useSafetySuite({ s3: false })
 * it("…", async () => { const { violations } = await play("fs", history) })
 * ```
 */
export function useSafetySuite(options: { s3: boolean }): PlayHistory {
  let database: Awaited<ReturnType<typeof openTestDatabase>>;
  let observer: Ledger;
  let scratch: string;
  let s3: S3rverHandle | undefined;
  let histories = 0;
  // One clock for every ledger instance; it ticks 1 ms per reading so that no two events share a
  // timestamp ("newest" is then unambiguous), and steps move it by seconds to days.
  const base = testClock();
  const clock = {
    now: () => {
      const d = base.now();
      base.advance(1);
      return d;
    },
    advance: (ms: number) => base.advance(ms),
  };
  const databaseInput = () =>
    database.url === "pglite:memory"
      ? (database as unknown as { pglite: Parameters<typeof openLedger>[0]["database"] }).pglite
      : database.url;
  const env = (): SafetyEnv => ({
    clock,
    observer,
    openLedger: (objectStore) =>
      openLedger({
        database: databaseInput(),
        schema: database.schema,
        migrate: false,
        clock: clock.now,
        objectStore,
        cleanupAfterPublish: false,
        poolSize: 3,
        // Retries inside a pass do not wait for real, and their jitter is fixed.
        sleep: async () => {},
        random: () => 0.5,
      }),
  });

  beforeAll(async () => {
    database = await openTestDatabase("safety");
    // Another pass acquiring the lease is what a pass whose connection died meets: the epoch
    // moves on, and every fenced append and lease check of the old pass fails from then on.
    LOST_LEASE_EXTENSION.loseLease = async (_ledger, datasetId) => {
      await sql`UPDATE ${sql.id(database.schema, "maintenance_leases")} SET epoch = epoch + 1
        WHERE dataset_id = ${datasetId}`.execute(database.db);
    };
    observer = await openLedger({ database: databaseInput(), schema: database.schema, migrate: false });
    scratch = await scratchDir("safety");
    if (options.s3) s3 = await startS3rver({ buckets: ["lake"] });
  });
  afterAll(async () => {
    await observer?.close();
    await database?.close();
    await s3?.stop();
    if (scratch && process.env.SAFETY_KEEP !== "1") await rm(scratch, { recursive: true, force: true });
  });

  return async (store, history) => {
    const id = `h${histories++}`;
    // Every history starts at the same instant: its datasets are its own, and the clock stays in
    // a range every timestamp format handles however many histories run.
    base.set("2026-01-01T00:00:00Z");
    if (store === "s3" && !s3) throw new Error("useSafetySuite({ s3: true }) is needed for s3 histories");
    const backend = store === "fs" ? fsBackend(scratch, id) : s3Backend(s3!, "lake", id);
    return { id, ...(await runHistory(env(), backend, id, history)) };
  };
}
