/**
 * Group commit under races: random reporters (single calls and `reportAttempts` batches, repeats
 * and contradictions among them) on TWO ledger instances over one database — two processes, so
 * groups conflict on the run's expected version and are decided again — and a publish at a random
 * point. Afterwards, against a sequential oracle that replays the log's own order:
 * - every attempt is classified (WINNER or LOSER), and the winners are exactly what selection
 *   gives over the successes recorded before the publish selected;
 * - every accepted report is in the log (its attempt recorded with its outcome and url), no
 *   outcome is stored twice;
 * - every caller's answer is what the sequential order gives: accepted iff it agrees with the
 *   attempt's first recorded outcome and url, refused with CONTRADICTING_REPORT otherwise.
 *
 * Half of the histories run on two ledgers whose report groups are tiny (at most 2 reports, decided
 * ahead whenever one waits): a history's few dozen reports then form many groups, each decided
 * while the one before it is being stored and, on a server, appended behind it before it commits
 * (chained appends, migration 0013) — across the other ledger's conflicts and the publish. (Counted
 * once while writing this: 18 chained appends over 20 histories on PostgreSQL; after a conflict a
 * ledger decides under the stream's lock for a second, where nothing is decided ahead.)
 *
 * GROUP_RACE_RUNS sets the number of histories (default 25 on PGlite, 30 on a server).
 */
import { fc } from "@fast-check/vitest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AttemptReport, AttemptReportResult, Ledger } from "../../src/ledger/open-ledger.js";
import { selectWinners } from "../../src/machines/winner-selection.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger } from "../support/ledger.js";

const RUNS = Number(process.env.GROUP_RACE_RUNS ?? (BACKEND === "postgres" ? 30 : 25));
/** A history takes 1–4 s on a loaded 2-core machine; the suite's 120 s per test is too short. */
const TIMEOUT_MS = 600_000;
const SHARDS = 3;

type Kind = AttemptReport["kind"];
interface Step {
  kind: Kind;
  shard: number;
  attempt: number;
  /** Which of two urls of the attempt (a different one contradicts). */
  variant: 0 | 1;
  withUrl: boolean;
}
interface Reporter {
  ledger: 0 | 1;
  /** Send each step alone, or all steps in one `reportAttempts` call. */
  batched: boolean;
  steps: Step[];
}

const stepArb: fc.Arbitrary<Step> = fc.record({
  kind: fc.constantFrom<Kind>("started", "succeeded", "succeeded", "failed"),
  shard: fc.integer({ min: 0, max: SHARDS - 1 }),
  attempt: fc.integer({ min: 0, max: 2 }),
  variant: fc.constantFrom<0 | 1>(0, 0, 0, 1),
  withUrl: fc.boolean(),
});
const reporterArb: fc.Arbitrary<Reporter> = fc.record({
  ledger: fc.constantFrom<0 | 1>(0, 1),
  batched: fc.boolean(),
  steps: fc.array(stepArb, { minLength: 1, maxLength: 8 }),
});
const historyArb = fc.record({
  reporters: fc.array(reporterArb, { minLength: 2, maxLength: 8 }),
  /** Publish once this many reports have been answered (0: at once), on this ledger. */
  publishAfter: fc.nat({ max: 40 }),
  publishOn: fc.constantFrom<0 | 1>(0, 1),
  /** Report through the two ledgers with tiny report groups. */
  smallGroups: fc.boolean(),
});

describe(`group commit races publish across two ledgers (${BACKEND})`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledgers: [Ledger, Ledger];
  let smallGroupLedgers: [Ledger, Ledger];
  let round = 0;

  beforeAll(async () => {
    t = await openTestLedger({ poolSize: 12 });
    ledgers = [t.ledger, await t.reopen()];
    const reportGroups = { maxSize: 2, decideAheadAt: 1 };
    smallGroupLedgers = [await t.reopen({ reportGroups }), await t.reopen({ reportGroups })];
    await t.ledger.createDataset({ datasetId: "race", root: t.root, safetyWindow: "0s" });
  });
  afterAll(() => t.close());

  it(
    `${RUNS} random histories: every attempt classified, every accepted report logged, answers as a sequential order gives`,
    async () => {
      await fc.assert(
        fc.asyncProperty(historyArb, async (history) => {
          const runId = `g-${round++}`;
          const url = (shard: number, attempt: number, variant: 0 | 1) =>
            `${t.root}/data/${runId}/shard=${String(shard).padStart(5, "0")}/attempt=${String(attempt).padStart(2, "0")}${variant === 1 ? "-b" : ""}`;
          await t.ledger.startRun({ datasetId: "race", numShards: SHARDS, runId });
          // Every shard covered, so the publish succeeds and classifies everything.
          for (let shard = 0; shard < SHARDS; shard++) {
            await t.ledger.attemptSucceeded({ runId, shard, attempt: 9, url: url(shard, 9, 0) });
          }
          const toReport = (s: Step): AttemptReport => {
            const base = {
              runId,
              shard: s.shard,
              attempt: s.attempt,
              ...(s.withUrl ? { url: url(s.shard, s.attempt, s.variant) } : {}),
            };
            return s.kind === "failed"
              ? { kind: "failed", ...base, error: "boom" }
              : { kind: s.kind, ...base };
          };

          let answered = 0;
          let releasePublish: () => void = () => {};
          const publishGate = new Promise<void>((resolve) => {
            releasePublish = resolve;
          });
          const tick = (n: number) => {
            answered += n;
            if (answered >= history.publishAfter) releasePublish();
          };
          tick(0);
          const answers: { step: Step; result: AttemptReportResult }[] = [];
          const reporters = history.reporters.map(async (reporter) => {
            const ledger = (history.smallGroups ? smallGroupLedgers : ledgers)[reporter.ledger];
            if (reporter.batched) {
              const results = await ledger.reportAttempts(reporter.steps.map(toReport));
              results.forEach((result, i) => {
                answers.push({ step: reporter.steps[i] as Step, result });
              });
              tick(results.length);
              return;
            }
            for (const step of reporter.steps) {
              const [result] = await ledger.reportAttempts([toReport(step)]);
              answers.push({ step, result: result as AttemptReportResult });
              tick(1);
            }
          });
          const publisher = (async () => {
            await Promise.race([publishGate, Promise.all(reporters)]);
            return (history.smallGroups ? smallGroupLedgers : ledgers)[history.publishOn].publish(runId);
          })();
          const [published] = await Promise.all([publisher, ...reporters]);

          // The sequential oracle: the log's order, folded by the rules of a report.
          const events = await t.ledger.events({ stream: `run-${runId}`, limit: 10_000 });
          const firstWinner = events.findIndex((e) => e.type === "WinnerSelected");
          expect(firstWinner).toBeGreaterThan(0);
          const recorded = new Map<
            string,
            { outcome: string; url: string | null; count: Map<string, number>; urlLess: Set<string> }
          >();
          const successesBefore: {
            shard: number;
            attempt: number;
            taskAttemptId: string | null;
            url: string | null;
          }[] = [];
          events.forEach((e, i) => {
            if (!e.type.startsWith("Attempt")) return;
            const d = e.data as {
              shard: number;
              attempt: number;
              taskAttemptId: string | null;
              url: string | null;
            };
            const key = `${d.shard}/${d.attempt}`;
            const outcome = e.type.slice("Attempt".length).toUpperCase();
            const r = recorded.get(key) ?? {
              outcome: "STARTED",
              url: null,
              count: new Map<string, number>(),
              urlLess: new Set<string>(),
            };
            if (d.url === null) r.urlLess.add(outcome);
            r.count.set(outcome, (r.count.get(outcome) ?? 0) + 1);
            if (outcome !== "STARTED") r.outcome = outcome;
            if (d.url !== null) r.url = d.url;
            recorded.set(key, r);
            if (e.type === "AttemptSucceeded" && i < firstWinner) successesBefore.push(d);
          });
          for (const [key, r] of recorded) {
            for (const [outcome, n] of r.count) expect(n, `${runId} ${key} ${outcome} stored once`).toBe(1);
            expect(r.count.has("SUCCEEDED") && r.count.has("FAILED"), `${runId} ${key}`).toBe(false);
          }

          const statuses: { key: string; status: string }[] = [];
          for (const { step, result } of answers) {
            const key = `${step.shard}/${step.attempt}`;
            const r = recorded.get(key);
            const wanted = step.kind === "started" ? null : step.kind.toUpperCase();
            const reportedUrl = step.withUrl ? url(step.shard, step.attempt, step.variant) : null;
            // A report with a url agrees only with a record that holds that url: one that would be
            // answered "recorded" while its url is not stored is refused (run-rules.test.ts).
            const agrees =
              r !== undefined &&
              (wanted === null || r.outcome === wanted) &&
              (reportedUrl === null || r.url === reportedUrl);
            const label = `${runId} ${JSON.stringify(step)} → ${JSON.stringify(result)}`;
            if (result.ok) {
              expect(agrees, label).toBe(true);
              if (reportedUrl !== null) expect(result.attempt.url, label).toBe(reportedUrl);
              else expect([null, r?.url], label).toContain(result.attempt.url);
              // Its own attempt as it stood right after it: the outcome it reported, or already classified.
              const status = result.attempt.status;
              if (status === "SUCCEEDED" || status === "FAILED") expect(status, label).toBe(r?.outcome);
              if (wanted !== null) expect(["STARTED"], label).not.toContain(status);
              statuses.push({ key, status });
            } else {
              expect(result.error.code, label).toBe("CONTRADICTING_REPORT");
              // Refused because its url contradicts the record, or because it came after a url-less
              // record it could only have repeated (its own outcome; for `started`, any outcome),
              // which would have dropped its url.
              const droppedUrl =
                reportedUrl !== null &&
                r !== undefined &&
                (wanted === null ? r.urlLess.size > 0 : r.urlLess.has(wanted));
              expect(!agrees || droppedUrl, label).toBe(true);
            }
          }

          const shown = await t.ledger.run(runId);
          expect(
            shown.attempts.filter((a) => a.status !== "WINNER" && a.status !== "LOSER"),
            `${runId}: every attempt classified`,
          ).toEqual([]);
          expect(shown.attempts).toHaveLength(recorded.size);
          const expected = selectWinners(
            SHARDS,
            successesBefore.map((a) => ({ ...a, outcome: "SUCCEEDED" as const })),
          );
          expect(expected.missingShards).toEqual([]);
          const winnerKeys = new Set([...expected.winners.values()].map((w) => `${w.shard}/${w.attempt}`));
          for (const a of shown.attempts) {
            expect(a.status, `${runId} ${a.shard}/${a.attempt}`).toBe(
              winnerKeys.has(`${a.shard}/${a.attempt}`) ? "WINNER" : "LOSER",
            );
          }
          for (const { key, status } of statuses) {
            if (status === "WINNER" || status === "LOSER") {
              expect(status, `${runId} ${key}`).toBe(winnerKeys.has(key) ? "WINNER" : "LOSER");
            }
          }
          expect(published.winners.map((w) => `${w.shard}/${w.attempt}`).sort()).toEqual(
            [...winnerKeys].sort(),
          );
        }),
        { numRuns: RUNS },
      );
    },
    TIMEOUT_MS,
  );
});
