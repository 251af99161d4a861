import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isShardledgerError } from "../../src/errors.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger, testClock } from "../support/ledger.js";

const HOUR = 3_600_000;
type Step =
  | { kind: "publish"; shards: number; extraLosers: number }
  | { kind: "fail" }
  | { kind: "abandon" }
  | { kind: "active" }
  | { kind: "tick"; hours: number }
  | { kind: "gc" }
  | { kind: "cleanup" }
  | { kind: "retry" };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("publish" as const),
      shards: fc.integer({ min: 1, max: 3 }),
      extraLosers: fc.integer({ min: 0, max: 2 }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("fail" as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("abandon" as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("active" as const) }) },
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant("tick" as const), hours: fc.integer({ min: 1, max: 30 }) }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("gc" as const) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("cleanup" as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("retry" as const) }) },
);

describe(`maintenance never deletes what readers or operators still need (${BACKEND})`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  const clock = testClock();
  beforeAll(async () => {
    t = await openTestLedger({ clock: clock.now });
    ledger = t.ledger;
  });
  afterAll(() => t.close());

  it("over random histories with a controllable clock", async () => {
    let history = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(stepArb, { minLength: 4, maxLength: 24 }),
        fc.integer({ min: 1, max: 3 }),
        async (steps, keepRuns) => {
          const datasetId = `m${history++}`;
          const root = `${t.root}/${datasetId}`;
          const policy = {
            keepRuns,
            retention: "48h",
            failedRetention: "24h",
            staleAfter: "2h",
            safetyWindow: "1h",
          };
          await ledger.createDataset({ datasetId, root, ...policy });
          const dir = (rel: string) => join(t.dir, datasetId, rel);
          const write = (rel: string) => {
            mkdirSync(dir(rel), { recursive: true });
            writeFileSync(join(dir(rel), "part-0"), "x");
          };
          const runs: {
            runId: string;
            kind: "published" | "failed" | "abandoned" | "active";
            dirs: string[];
            /** When it succeeded (publish steps): "newest" is by this, ties by the greater runId. */
            at: number;
          }[] = [];
          for (const [i, step] of steps.entries()) {
            const runId = `${datasetId}-${i}`;
            try {
              if (
                step.kind === "publish" ||
                step.kind === "fail" ||
                step.kind === "abandon" ||
                step.kind === "active"
              ) {
                const shards = step.kind === "publish" ? step.shards : 1;
                await ledger.startRun({ datasetId, numShards: shards, runId });
                const dirs: string[] = [];
                for (let s = 0; s < shards; s++) {
                  const extra = step.kind === "publish" ? step.extraLosers : 0;
                  for (let a = 0; a <= extra; a++) {
                    const rel = `data/${runId}/shard=${s}/attempt=${a}`;
                    write(rel);
                    dirs.push(rel);
                    await ledger.attemptSucceeded({ runId, shard: s, attempt: a, url: `${root}/${rel}` });
                  }
                }
                if (step.kind === "publish") await ledger.publish(runId);
                if (step.kind === "fail") await ledger.failRun(runId, "writer aborted");
                runs.push({
                  runId,
                  kind:
                    step.kind === "publish"
                      ? "published"
                      : step.kind === "fail"
                        ? "failed"
                        : step.kind === "abandon"
                          ? "abandoned"
                          : "active",
                  dirs,
                  at: clock.now().getTime(),
                });
              } else if (step.kind === "tick") {
                clock.advance(step.hours * HOUR);
                // Active runs keep heartbeating; abandoned ones fall silent.
                for (const r of runs)
                  if (r.kind === "active") await ledger.heartbeat(r.runId).catch(() => {});
              } else if (step.kind === "gc") {
                await ledger.gc(datasetId);
              } else if (step.kind === "cleanup") {
                await ledger.cleanup({ datasetId });
              } else {
                const before = (await ledger.runs(datasetId)).filter((r) => r.status === "FAILED");
                const now = clock.now().getTime();
                const report = await ledger.retryFailed({ datasetId });
                const inFloor = before.filter((r) => now - (r.failedAt as Date).getTime() < 24 * HOUR);
                expect(report.retried).toBeGreaterThanOrEqual(inFloor.length);
                expect(report.matched).toBeGreaterThanOrEqual(before.length);
                expect(report.retried).toBeLessThanOrEqual(report.matched);
                for (const r of inFloor) {
                  const found = runs.find((x) => x.runId === r.runId);
                  if (found) found.kind = "active";
                }
              }
            } catch (e) {
              if (!isShardledgerError(e)) throw e;
            }
            await checkSafety();
          }
          // Advancing the clock far enough lets every policy act: all but the current run and the
          // newest keepRuns succeeded runs (a rail: retention never takes them) go.
          for (let round = 0; round < 3; round++) {
            clock.advance(100 * HOUR);
            for (const r of runs)
              if (r.kind === "active") await ledger.failRun(r.runId, "done").catch(() => {});
            await ledger.gc(datasetId);
            await ledger.cleanup({ datasetId });
            await checkSafety();
          }
          clock.advance(100 * HOUR);
          await ledger.gc(datasetId);
          const dataset = await ledger.dataset(datasetId);
          const leftRuns = await ledger.runs(datasetId);
          const left = leftRuns.map((r) => r.runId);
          // Newest first, as the rail orders them: by success time, then the greater runId (the
          // clock here only moves on ticks, so runs published between two ticks tie).
          const newest = runs
            .filter((r) => r.kind === "published")
            .sort((a, b) => b.at - a.at || (a.runId < b.runId ? 1 : a.runId > b.runId ? -1 : 0))
            .slice(0, keepRuns)
            .map((r) => r.runId);
          const kept = new Set([...newest, ...(dataset.currentRunId ? [dataset.currentRunId] : [])]);
          expect(new Set(left)).toEqual(kept);
          for (const r of runs) {
            if (kept.has(r.runId)) continue;
            for (const d of r.dirs) expect(existsSync(dir(d)) ? readdirSync(dir(d)) : [], d).toEqual([]);
          }
          expect((await ledger.audit()).match).toBe(true);

          /** The rails, checked after every step. */
          async function checkSafety() {
            const ds = await ledger.dataset(datasetId);
            const now = clock.now().getTime();
            for (const view of await ledger.runs(datasetId)) {
              const shown = await ledger.run(view.runId);
              const protectedRun =
                view.current ||
                view.status === "STARTED" ||
                view.status === "PUBLISHING" ||
                (view.status === "FAILED" && now - (view.failedAt as Date).getTime() < 24 * HOUR) ||
                (view.replacedAt !== null && now - view.replacedAt.getTime() < HOUR);
              for (const a of shown.attempts) {
                if (!a.url) continue;
                const rel = a.url.slice(root.length + 1);
                const present = existsSync(dir(rel)) && readdirSync(dir(rel)).length > 0;
                // Winners of a live run, and all data of a protected run (except its losers after publish), stay.
                if (
                  a.status === "WINNER" ||
                  (protectedRun &&
                    a.status !== "LOSER" &&
                    a.status !== "DELETED" &&
                    a.status !== "CLEANUP_PENDING")
                ) {
                  expect(
                    present,
                    `${view.runId} ${a.url} (${a.status}, run ${view.status}${view.current ? ", current" : ""})`,
                  ).toBe(true);
                }
              }
            }
            if (ds.currentRunId) {
              expect(existsSync(join(t.dir, datasetId, "_CURRENT"))).toBe(true);
              expect(existsSync(join(t.dir, datasetId, `manifests/${ds.currentRunId}.json`))).toBe(true);
            }
          }
        },
      ),
      { numRuns: BACKEND === "postgres" ? 25 : 12 },
    );
    // Many whole histories (each a few dozen appends and store calls) in one test: on a loaded
    // 2-core machine they can pass the suite's 120 s per-test default without anything being wrong.
  }, 600_000);
});
