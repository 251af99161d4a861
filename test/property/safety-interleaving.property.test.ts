/**
 * The safety proof: random histories of writers, publishes, maintenance, faults, crashes and
 * interleavings, on one or two datasets with sibling roots and sentinel objects around them,
 * checked after every step (and at every deletion) by an oracle that computes what must still
 * exist from its own model of the history (test/support/safety-oracle.ts, rules R1–R9 there).
 * cleanup and gc run at a generated concurrency (1, 4 or 16), lost leases included (R7).
 *
 * Run it:
 *   npx vitest run test/property/safety-interleaving.property.test.ts
 * Environment:
 *   SAFETY_HISTORIES=100000  total histories (default 1000: 90% filesystem, 10% s3rver);
 *                            the big number is for bench/overnight runs
 *   SAFETY_SEED=…            replay a run (fast-check prints the seed of a failure)
 *   SAFETY_PATH=…            with SAFETY_SEED, replay exactly the shrunk counterexample (one
 *                            history; a timing-dependent failure may not recur on replay)
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
import { describe, expect, it } from "vitest";
import { BACKEND } from "../support/database.js";
import { type History, historyArbitrary } from "../support/safety-history.js";
import { useSafetySuite } from "../support/safety-suite.js";

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
  const play = useSafetySuite({ s3: runsFor("s3") > 0 });
  const survey = new Map<string, { count: number; example: string }>();

  async function check(store: "fs" | "s3", history: History): Promise<void> {
    const { id, violations, trace } = await play(store, history);
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
        // A replay (SAFETY_PATH) runs the one counterexample the path names, not numRuns histories.
        expect(ran).toBeGreaterThanOrEqual(PATH === undefined ? numRuns : 1);
      },
      600_000 + numRuns * 3_000,
    );
  }
});
