/**
 * Archiving under random histories (issue 16, "What must show"): runs start, report, publish, fail,
 * get pruned for random reasons and archived — sometimes crashing after a random step and resumed
 * by a later pass — with the clock moving. After every history:
 *
 * - every pruned run's stream reads (hot or through its archive) exactly as it did when it was
 *   pruned, and no run that is not pruned ever lost an event;
 * - the rollups equal an oracle summed from the prunes the history made;
 * - a deep audit matches (projections replayed from the hot log, and every archive verified), and
 *   a rebuild from the hot log gives the same rollups and still audits clean.
 */
import { mkdirSync } from "node:fs";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isShardledgerError } from "../../src/errors.js";
import type { RecordedEvent } from "../../src/events/envelope.js";
import type { ArchiveStep } from "../../src/ledger/archive.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import type { RunCommand } from "../../src/machines/run-commands.js";
import type { RunState } from "../../src/machines/run-state.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger, testClock } from "../support/ledger.js";

type Internal = Ledger & {
  executeRunCommand(command: RunCommand): Promise<{ state: RunState }>;
  loadRunState(runId: string): Promise<RunState>;
};

const STEPS: readonly ArchiveStep[] = ["content", "marker", "verified", "deleted", "committed"];
const REASONS = ["keep_runs", "retention", "failed_retention", "stale"] as const;

type Op =
  | { op: "start"; shards: number }
  | { op: "report"; run: number; shard: number; attempt: number; ok: boolean }
  | { op: "publish"; run: number }
  | { op: "fail"; run: number }
  | { op: "prune"; run: number; reason: (typeof REASONS)[number]; attempts: number; failedItems: number }
  | { op: "archive"; crash: ArchiveStep | null; after: string }
  | { op: "tick"; ms: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({ op: fc.constant("start" as const), shards: fc.integer({ min: 1, max: 2 }) }),
  },
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant("report" as const),
      run: fc.nat(7),
      shard: fc.nat(2),
      attempt: fc.nat(1),
      ok: fc.boolean(),
    }),
  },
  { weight: 3, arbitrary: fc.record({ op: fc.constant("publish" as const), run: fc.nat(7) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant("fail" as const), run: fc.nat(7) }) },
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant("prune" as const),
      run: fc.nat(7),
      reason: fc.constantFrom(...REASONS),
      attempts: fc.nat(5),
      failedItems: fc.nat(3),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant("archive" as const),
      crash: fc.option(fc.constantFrom(...STEPS), { nil: null }),
      after: fc.constantFrom("0s", "1h", "1d"),
    }),
  },
  fc.record({ op: fc.constant("tick" as const), ms: fc.integer({ min: 1, max: 6 * 3_600_000 }) }),
);

describe(`archiving random histories on ${BACKEND}`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Internal;
  const clock = testClock();
  /** The step the next archive of any run "crashes" after (throws), once. */
  let crashAt: ArchiveStep | null = null;

  beforeAll(async () => {
    t = await openTestLedger({
      clock: clock.now,
      archiveHook: (step) => {
        if (step === crashAt) {
          crashAt = null;
          throw new Error(`crash after ${step}`);
        }
      },
    });
    ledger = t.ledger as Internal;
  });
  afterAll(() => t.close());

  it("reads every pruned stream back exactly, keeps every count, and rebuilds from the hot log", async () => {
    let history = 0;
    let totalArchived = 0;
    const numRuns = BACKEND === "postgres" ? 25 : 12;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 10, maxLength: 50, size: "max" }), async (ops) => {
        const datasetId = `ds${history++}`;
        mkdirSync(`${t.dir}/${datasetId}`, { recursive: true });
        const root = `${t.root}/${datasetId}`;
        await ledger.createDataset({ datasetId, root, safetyWindow: "0s" });
        const runs: string[] = [];
        const shardsOf = new Map<string, number>();
        /** Each pruned run's stream as read right after its prune: the oracle of read-through. */
        const prunedStreams = new Map<string, RecordedEvent[]>();
        /** The oracle of the rollups, from the Pruned events this history recorded. */
        const expected = new Map<string, { runs: number; attempts: number; failedItems: number }>();
        let archivedRuns = 0;
        const pick = <T>(list: T[], i: number): T | undefined =>
          list.length === 0 ? undefined : list[i % list.length];

        for (const [i, o] of ops.entries()) {
          const runId = "run" in o ? pick(runs, o.run) : undefined;
          try {
            switch (o.op) {
              case "start": {
                const id = `${datasetId}-r${i}`;
                await ledger.startRun({ datasetId, numShards: o.shards, runId: id });
                runs.push(id);
                shardsOf.set(id, o.shards);
                break;
              }
              case "report": {
                if (!runId) break;
                const shard = o.shard % (shardsOf.get(runId) ?? 1);
                const input = {
                  runId,
                  shard,
                  attempt: o.attempt,
                  url: `${root}/data/${runId}/s${shard}/a${o.attempt}`,
                };
                if (o.ok) await ledger.attemptSucceeded(input);
                else await ledger.attemptFailed({ ...input, error: "boom" });
                break;
              }
              case "publish":
                if (runId) await ledger.publish(runId);
                break;
              case "fail":
                if (runId) await ledger.failRun(runId, "writer gave up");
                break;
              case "prune": {
                if (!runId) break;
                const { state } = await ledger.executeRunCommand({
                  type: "prune",
                  runId,
                  reason: o.reason,
                  attempts: o.attempts,
                  failedItems: o.failedItems,
                });
                if (state.status === "PRUNED" && !prunedStreams.has(runId)) {
                  prunedStreams.set(runId, await ledger.events({ stream: runId, limit: 10_000 }));
                  const sum = expected.get(o.reason) ?? { runs: 0, attempts: 0, failedItems: 0 };
                  expected.set(o.reason, {
                    runs: sum.runs + 1,
                    attempts: sum.attempts + o.attempts,
                    failedItems: sum.failedItems + o.failedItems,
                  });
                }
                break;
              }
              case "archive": {
                crashAt = o.crash;
                const report = await ledger.archive({ datasetId, after: o.after });
                crashAt = null;
                archivedRuns += report.archived.length;
                // Only a crash we injected may fail a run.
                for (const f of report.failed) {
                  expect(f.error).toMatch(/^crash after /);
                  // A crash after the commit: the run left the hot log all the same.
                  if (f.error === "crash after committed") archivedRuns++;
                }
                for (const a of report.archived) expect(prunedStreams.has(a.runId), a.runId).toBe(true);
                break;
              }
              case "tick":
                clock.advance(o.ms);
                break;
            }
          } catch (e) {
            // Refusals are part of a random history; anything else is a bug.
            if (!isShardledgerError(e)) throw e;
          }
        }
        // Resume whatever a crash left, then everything is archived.
        const last = await ledger.archive({ datasetId, after: "0s" });
        expect(last.failed).toEqual([]);
        archivedRuns += last.archived.length;
        expect(archivedRuns).toBe(prunedStreams.size);
        totalArchived += archivedRuns;

        for (const runId of runs) {
          const stream = await ledger.events({ stream: runId, limit: 10_000 });
          const before = prunedStreams.get(runId);
          if (before) expect(stream, runId).toEqual(before);
          else expect(stream.length, runId).toBe((await ledger.loadRunState(runId)).version);
        }
        const rollups = await ledger.rollups(datasetId);
        expect(
          Object.fromEntries(
            rollups.map((r) => [
              r.reason,
              { runs: r.prunedRuns, attempts: r.prunedAttempts, failedItems: r.prunedFailedItems },
            ]),
          ),
        ).toEqual(Object.fromEntries(expected));
        const audit = await ledger.audit({ deep: true });
        expect(audit.differences.slice(0, 3)).toEqual([]);
        expect(audit.archives?.problems).toEqual([]);
        expect(audit.match).toBe(true);
        await ledger.rebuild();
        expect(await ledger.rollups(datasetId)).toEqual(rollups);
        expect((await ledger.audit()).match).toBe(true);
      }),
      { numRuns },
    );
    // Not vacuous: the histories pruned and archived runs (about one per history on average).
    expect(totalArchived).toBeGreaterThanOrEqual(Math.ceil(numRuns / 3));
  });
});
