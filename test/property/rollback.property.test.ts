import { existsSync, mkdirSync, readFileSync } from "node:fs";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isShardledgerError } from "../../src/errors.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger, testClock } from "../support/ledger.js";
import { attemptKeyOf, writeAndPublish } from "../support/runs.js";

/**
 * Random histories of publishes, rollbacks (and roll-forwards), policy changes, gc and cleanup
 * passes on one dataset. After every step: `_CURRENT` in the store names the run the log calls
 * current, and that run's manifest and every winner's data are there; at the end the projections
 * equal a replay of the log.
 */
type Op =
  | { op: "publish"; shards: number; losers: boolean }
  | { op: "rollback"; pick: number }
  | { op: "policies"; keepRuns: number | undefined; safetyWindow: string | undefined }
  | { op: "gc" }
  | { op: "cleanup" }
  | { op: "tick"; ms: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant("publish" as const),
      shards: fc.integer({ min: 1, max: 2 }),
      losers: fc.boolean(),
    }),
  },
  { weight: 4, arbitrary: fc.record({ op: fc.constant("rollback" as const), pick: fc.nat(7) }) },
  fc.record({
    op: fc.constant("policies" as const),
    keepRuns: fc.option(fc.integer({ min: 1, max: 3 }), { nil: undefined }),
    safetyWindow: fc.option(fc.constantFrom("0s", "10m", "1h"), { nil: undefined }),
  }),
  { weight: 2, arbitrary: fc.record({ op: fc.constant("gc" as const) }) },
  fc.record({ op: fc.constant("cleanup" as const) }),
  {
    weight: 2,
    arbitrary: fc.record({ op: fc.constant("tick" as const), ms: fc.integer({ min: 1, max: 5_400_000 }) }),
  },
);

describe(`rollback, publish and gc keep _CURRENT readable on ${BACKEND}`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  const clock = testClock();
  beforeAll(async () => {
    t = await openTestLedger({ clock: clock.now });
    ledger = t.ledger;
  });
  afterAll(() => t.close());

  it("for random histories of publishes, rollbacks, policy changes, gc and cleanup", async () => {
    let history = 0;
    let rolledBack = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 25 }), async (ops) => {
        const datasetId = `rb${history++}`;
        const dir = `${t.dir}/${datasetId}`;
        const root = `${t.root}/${datasetId}`;
        mkdirSync(dir, { recursive: true });
        await ledger.createDataset({ datasetId, root, keepRuns: 2, safetyWindow: "10m" });
        const runs: string[] = [];
        for (const [i, o] of ops.entries()) {
          try {
            switch (o.op) {
              case "publish": {
                const runId = `${datasetId}-r${i}`;
                runs.push(runId);
                await writeAndPublish(ledger, {
                  dir,
                  root,
                  datasetId,
                  runId,
                  numShards: o.shards,
                  losers: o.losers,
                });
                break;
              }
              case "rollback": {
                const target = runs.length === 0 ? undefined : runs[o.pick % runs.length];
                if (target) {
                  await ledger.rollback(datasetId, target);
                  rolledBack++;
                }
                break;
              }
              case "policies":
                await ledger.updateDataset(datasetId, {
                  ...(o.keepRuns !== undefined ? { keepRuns: o.keepRuns } : {}),
                  ...(o.safetyWindow !== undefined ? { safetyWindow: o.safetyWindow } : {}),
                });
                break;
              case "gc":
                await ledger.gc(datasetId);
                break;
              case "cleanup":
                await ledger.cleanup({ datasetId });
                break;
              case "tick":
                clock.advance(o.ms);
                break;
            }
          } catch (e) {
            // Refusals (a pruned or current target, nothing to change) are part of the history.
            if (!isShardledgerError(e)) throw e;
          }
          const dataset = await ledger.dataset(datasetId);
          if (dataset.currentRunId === null) continue;
          const current = dataset.currentRunId;
          const pointer = JSON.parse(readFileSync(`${dir}/_CURRENT`, "utf8")) as { runId: string };
          expect(pointer.runId, `step ${i} ${o.op}`).toBe(current);
          expect(existsSync(`${dir}/manifests/${current}.json`), `manifest of ${current}`).toBe(true);
          const { run, winners } = await ledger.run(current);
          expect(run.status).toBe("SUCCEEDED");
          for (const w of winners) {
            expect(
              existsSync(`${dir}/${attemptKeyOf(current, w.shard, w.attempt)}/part-0`),
              `winner ${w.shard}`,
            ).toBe(true);
          }
        }
        const audit = await ledger.audit();
        expect(audit.differences.slice(0, 3)).toEqual([]);
      }),
      { numRuns: BACKEND === "postgres" ? 25 : 12 },
    );
    // The histories did roll back (not only refuse).
    expect(rolledBack).toBeGreaterThan(0);
  });
});
