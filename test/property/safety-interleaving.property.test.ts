/**
 * The safety proof: random histories of writers, publishes, maintenance, faults, crashes and
 * interleavings, on one or two datasets with sibling roots and sentinel objects around them,
 * checked after every step (and at every deletion) by an oracle that computes what must still
 * exist from its own model of the history (test/support/safety-oracle.ts, rules R1–R8 there).
 *
 * Run it:
 *   npx vitest run test/property/safety-interleaving.property.test.ts
 * Environment:
 *   SAFETY_HISTORIES=100000  total histories (default 1000: 90% filesystem, 10% s3rver);
 *                            the big number is for bench/overnight runs
 *   SAFETY_SEED=…            replay a run (fast-check prints the seed of a failure)
 *   SAFETY_PATH=…            with SAFETY_SEED, replay exactly the shrunk counterexample
 *   SAFETY_STORE=fs|s3       run only one of the two properties
 *   SAFETY_ONLY=regex        fail only on violations whose "RULE message" matches (to hunt one
 *                            bug while others are known), e.g. SAFETY_ONLY='^R5'
 *   SAFETY_STEPS=1-12        the history length range
 *   SAFETY_SURVEY=1          never fail: count the violations by category and print each
 *                            category's first (unshrunk) history at the end
 *   SAFETY_KEEP=1            keep the objects of each history (under the scratch directory)
 *   DATABASE_URL=postgres:…  run on a real server instead of PGlite (as the suite does)
 */
import { fc } from "@fast-check/vitest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Ledger, openLedger } from "../../src/index.js";
import { BACKEND, openTestDatabase } from "../support/database.js";
import { testClock } from "../support/ledger.js";
import { type S3rverHandle, scratchDir, startS3rver } from "../support/s3rver.js";
import { type History, historyArbitrary, runHistory, type SafetyEnv } from "../support/safety-history.js";
import { fsBackend, type StoreBackend, s3Backend } from "../support/safety-world.js";

const TOTAL = Number(process.env.SAFETY_HISTORIES ?? 1000);
const S3_SHARE = 0.1;
const SEED = process.env.SAFETY_SEED === undefined ? undefined : Number(process.env.SAFETY_SEED);
const PATH = process.env.SAFETY_PATH;
const ONLY = process.env.SAFETY_ONLY === undefined ? null : new RegExp(process.env.SAFETY_ONLY);
const SURVEY = process.env.SAFETY_SURVEY === "1";
const STORES = (process.env.SAFETY_STORE ?? "fs,s3").split(",");
const [MIN_STEPS, MAX_STEPS] = (process.env.SAFETY_STEPS ?? "1-12").split("-").map(Number) as [
  number,
  number,
];

const runsFor = (store: "fs" | "s3") =>
  STORES.includes(store) ? Math.max(1, Math.round(TOTAL * (store === "s3" ? S3_SHARE : 1 - S3_SHARE))) : 0;

describe(`safety under random interleavings (${BACKEND})`, () => {
  let database: Awaited<ReturnType<typeof openTestDatabase>>;
  let observer: Ledger;
  let scratch: string;
  let s3: S3rverHandle | undefined;
  let histories = 0;
  const survey = new Map<string, { count: number; example: string }>();
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
    observer = await openLedger({ database: databaseInput(), schema: database.schema, migrate: false });
    scratch = await scratchDir("safety");
    if (runsFor("s3") > 0) s3 = await startS3rver({ buckets: ["lake"] });
  });
  afterAll(async () => {
    await observer?.close();
    await database?.close();
    await s3?.stop();
  });

  async function check(store: "fs" | "s3", history: History): Promise<void> {
    const id = `h${histories++}`;
    // Every history starts at the same instant: its datasets are its own, and the clock stays in
    // a range every timestamp format handles however many histories run.
    base.set("2026-01-01T00:00:00Z");
    const backend: StoreBackend = store === "fs" ? fsBackend(scratch, id) : s3Backend(s3!, "lake", id);
    const { violations, trace } = await runHistory(env(), backend, id, history);
    const failing = ONLY ? violations.filter((v) => ONLY.test(`${v.rule} ${v.message}`)) : violations;
    if (SURVEY) {
      for (const v of failing) {
        const c = v.category;
        const seen = survey.get(c);
        if (seen) seen.count++;
        else
          survey.set(c, { count: 1, example: `${v.message}\n${trace.map((t) => `      ${t}`).join("\n")}` });
      }
      return;
    }
    if (failing.length > 0) {
      const shown = failing.slice(0, 8).map((v) => `  - ${v.message}`);
      throw new Error(
        [
          `${failing.length} safety violation(s) in history ${id} (${store}):`,
          ...shown,
          ...(failing.length > shown.length ? [`  … and ${failing.length - shown.length} more`] : []),
          "history as it ran:",
          ...trace.map((t) => `  ${t}`),
        ].join("\n"),
      );
    }
  }

  for (const store of ["fs", "s3"] as const) {
    const numRuns = runsFor(store);
    if (numRuns === 0) continue;
    it(
      `${numRuns} histories on the ${store === "fs" ? "filesystem" : "S3-protocol (s3rver)"} store never lose what readers, writers or operators need`,
      async () => {
        const started = performance.now();
        let ran = 0;
        await fc.assert(
          fc.asyncProperty(
            historyArbitrary({ minSteps: MIN_STEPS, maxSteps: MAX_STEPS }),
            async (history) => {
              ran++;
              await check(store, history);
            },
          ),
          {
            numRuns,
            ...(SEED !== undefined ? { seed: SEED } : {}),
            ...(PATH !== undefined ? { path: PATH } : {}),
          },
        );
        const seconds = (performance.now() - started) / 1000;
        console.log(
          `safety ${store} (${BACKEND}): ${ran} histories in ${seconds.toFixed(1)} s (${(ran / seconds).toFixed(1)}/s)`,
        );
        if (SURVEY) {
          const lines = [...survey.entries()].sort((a, b) => b[1].count - a[1].count);
          console.log(
            `survey ${store}: ${lines.length} categories\n${lines.map(([c, { count, example }]) => `[${count}×] ${c}\n    e.g. ${example}`).join("\n")}`,
          );
          survey.clear();
        }
        expect(ran).toBeGreaterThanOrEqual(numRuns);
      },
      600_000 + numRuns * 3_000,
    );
  }
});
