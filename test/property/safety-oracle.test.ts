/**
 * The oracle of the safety property has teeth: a history with nothing wrong passes, and an object
 * deleted behind the ledger's back (as a buggy deleter would) is reported under the right rules,
 * with the object and the step. Runs in a second, on the suite's backend and the filesystem store.
 */
import { describe, expect, it } from "vitest";
import { BACKEND } from "../support/database.js";
import type { History, UrlSpec, WriteOp } from "../support/safety-history.js";
import type { Policies } from "../support/safety-oracle.js";
import { useSafetySuite } from "../support/safety-suite.js";

const policies: Policies = {
  keepRuns: 2,
  safetyWindowMs: 0,
  staleAfterMs: 3_600_000,
  failedRetentionMs: 86_400_000,
  retentionMs: 30 * 86_400_000,
};
const prefix: UrlSpec = { style: "prefix", upper: false, encode: false, other: 0 };
const publishedRun = { t: "cycle", ds: 0, shards: 2, url: prefix, losers: 1, fault: "none" } as const;

/** A writer's step: dataset 0, shard 0, no task attempt id, a plain key, unless `fields` says otherwise. */
const write = (fields: Pick<WriteOp, "run" | "attempt" | "report" | "url"> & Partial<WriteOp>): WriteOp => ({
  t: "write",
  ds: 0,
  shard: 0,
  tid: null,
  key: "plain",
  ...fields,
});

describe(`the safety oracle itself (${BACKEND})`, () => {
  const play = useSafetySuite({ s3: false });
  const rulesOf = (r: { violations: { rule: string }[] }) =>
    [...new Set(r.violations.map((v) => v.rule))].sort();

  it("finds nothing wrong in a publish with losers, their cleanup and a quiescent final pass", async () => {
    const history: History = {
      datasets: [policies, policies],
      steps: [publishedRun, { t: "cleanup", ds: 0, dry: false, fault: "none", times: 1, concurrency: 1 }],
    };
    const result = await play("fs", history);
    expect(result.violations.map((v) => v.message)).toEqual([]);
  });

  it("reports a winner of the current run deleted behind the ledger's back (R1, R1c, R2, R3) at that step", async () => {
    const history: History = {
      datasets: [policies],
      steps: [publishedRun, { t: "tamper", match: "/shard=00001/attempt=00/part-0$" }],
    };
    const result = await play("fs", history);
    expect(rulesOf(result)).toEqual(["R1", "R1c", "R2", "R3"]);
    const r2 = result.violations.find((v) => v.rule === "R2")!;
    expect(r2.step).toBe(1);
    expect(r2.key).toMatch(/^dsA\/data\/h\d+-A-r0\/shard=00001\/attempt=00\/part-0$/);
    expect(r2.category).toBe("R2 gone: winner of the current run");
  });

  it("reports an object outside every root, and one of the other dataset, deleted behind its back (R2)", async () => {
    const history: History = {
      datasets: [policies, policies],
      steps: [
        { ...publishedRun, ds: 1 },
        { t: "tamper", match: "^sentinel/" },
        { t: "tamper", match: "^dsB/data/.*/attempt=00/part-0$" },
      ],
    };
    const result = await play("fs", history);
    const categories = result.violations.map((v) => v.category);
    expect(categories).toContain("R2 gone: outside every root");
    expect(categories).toContain("R2 gone: winner of the current run");
  });

  describe("a writer that outlives its run's prune (a known limitation, docs/operations.md)", () => {
    const keepOne: Policies = { ...policies, keepRuns: 1, safetyWindowMs: 0 };
    const object: UrlSpec = { style: "object", upper: false, encode: false, other: 0 };
    // The failed attempt names the winner's directory (upper-case scheme): its url covers the
    // zombie's later part, which is how the safety hunt first met this case.
    const sibling: UrlSpec = { style: "misdirect", upper: true, encode: false, other: 0 };
    const zombie = write({ run: 1, attempt: 0, report: "none", url: object });
    const publishedThenReplaced = (between: History["steps"]): History => ({
      datasets: [keepOne],
      steps: [
        { t: "start", ds: 0, shards: 1 },
        write({ run: 0, attempt: 0, report: "succeeded", url: object }),
        write({ run: 0, attempt: 1, report: "failed", url: sibling }),
        { t: "publish", ds: 0, run: 0, fault: "none" },
        { t: "cycle", ds: 0, shards: 1, url: prefix, losers: 0, fault: "none" },
        ...between,
      ],
    });
    const zombiePart = /^dsA\/data\/h\d+-A-r0\/shard=00000\/attempt=00\/part-1$/;

    it("collects what it wrote before the prune, with the run", async () => {
      const result = await play(
        "fs",
        publishedThenReplaced([
          zombie,
          { t: "gc", ds: 0, dry: false, fault: "none", times: 1, concurrency: 1 },
        ]),
      );
      expect(result.violations.map((v) => v.message)).toEqual([]);
      expect(result.trace.join("\n")).toMatch(/gc A → actions keep_runs:h\d+-A-r0/);
      expect(result.remaining.filter((k) => k.includes("-A-r0/"))).toEqual([]);
    });

    it("leaves what it writes after the prune, and the oracle does not count it as a loser left behind", async () => {
      const result = await play(
        "fs",
        publishedThenReplaced([
          { t: "gc", ds: 0, dry: false, fault: "none", times: 1, concurrency: 1 },
          zombie,
        ]),
      );
      expect(result.violations.map((v) => v.message)).toEqual([]);
      // If a pass learns to revisit pruned runs' areas, this fails: drop the R4 exception in
      // safety-oracle.ts and the limitation in docs/operations.md with it.
      expect(result.remaining.filter((k) => k.includes("-A-r0/"))).toEqual([
        expect.stringMatching(zombiePart),
      ]);
    });
  });

  // Histories the safety hunt found. A run with a winner and, beside it, a file its writer never
  // reported (the two windowed histories start with it).
  const windowed: Policies = { ...policies, safetyWindowMs: 1_000 };
  const sibling: UrlSpec = { style: "misdirect", upper: false, encode: false, other: 0 };
  const winnerAndUnreportedFile: History["steps"] = [
    { t: "start", ds: 0, shards: 1 },
    write({ run: 0, attempt: 0, report: "succeeded", url: prefix }),
    {
      t: "write",
      ds: 0,
      run: 0,
      shard: 0,
      attempt: 3,
      tid: 1,
      key: "plain",
      report: "none",
      url: { style: "object", upper: false, encode: false, other: 0 },
    },
  ];

  it("keeps an unreported file while its writer's attempt reported inside the safety window (found by the hunt)", async () => {
    // The writer says nothing for a minute, then reports success naming its sibling's directory.
    // The file is an orphan by its age, but a writer of the run reported a moment ago: gc must not
    // collect the run's orphans until that report is older than the safety window.
    const history: History = {
      datasets: [windowed],
      steps: [
        ...winnerAndUnreportedFile,
        { t: "advance", ms: 55_000 },
        { t: "report", ds: 0, run: 0, which: 0, outcome: "succeeded", url: sibling },
        { t: "publish", ds: 0, run: 0, fault: "none" },
        { t: "gc", ds: 0, dry: false, fault: "none", times: 1, concurrency: 1 },
      ],
    };
    const result = await play("fs", history);
    expect(result.trace.join("\n")).toMatch(
      /report succeeded h\d+-A-r0\/0\/3\/1 \(misdirect\) → .*attempt=00: ok/,
    );
    expect(result.violations.map((v) => v.message)).toEqual([]);
  });

  it("keeps a pending orphan while its run's writer reported inside the safety window, when cleanup retries it", async () => {
    // The orphan was planned while the run was quiet and its deletion failed; a writer of the run
    // reports before cleanup retries it: the retry is judged on fresh state, and waits.
    const history: History = {
      datasets: [windowed],
      steps: [
        ...winnerAndUnreportedFile,
        { t: "publish", ds: 0, run: 0, fault: "none" },
        { t: "advance", ms: 5_000 },
        { t: "gc", ds: 0, dry: false, fault: "transient", times: 50, concurrency: 1 },
        { t: "advance", ms: 3_600_000 },
        { t: "report", ds: 0, run: 0, which: 0, outcome: "succeeded", url: sibling },
        { t: "cleanup", ds: 0, dry: false, fault: "none", times: 1, concurrency: 1 },
      ],
    };
    const result = await play("fs", history);
    expect(result.trace.join("\n")).toMatch(/gc A.*→ actions orphan:h\d+-A-r0, 1 failed/);
    expect(result.violations.map((v) => v.message)).toEqual([]);
  });

  it("does not count a file collected before its writer reports again as lost (found by the hunt)", async () => {
    // A late loser reports without a url; its file, unreported and old, is collected as an orphan;
    // then the writer repeats its report (idempotent: no event). The repeat touches nothing that
    // is still there, so the file's absence is no violation.
    const none: UrlSpec = { style: "none", upper: false, encode: false, other: 0 };
    const history: History = {
      datasets: [windowed],
      steps: [
        { t: "cycle", ds: 0, shards: 1, url: prefix, losers: 0, fault: "none" },
        write({ run: 0, attempt: 3, report: "succeeded", url: none }),
        { t: "advance", ms: 5_000 },
        { t: "gc", ds: 0, dry: false, fault: "none", times: 1, concurrency: 1 },
        { t: "report", ds: 0, run: 0, which: 0, outcome: "succeeded", url: none },
      ],
    };
    const result = await play("fs", history);
    expect(result.trace.join("\n")).toMatch(/gc A → actions orphan:h\d+-A-r0/);
    expect(result.violations.map((v) => v.message)).toEqual([]);
    expect(result.remaining.filter((k) => k.includes("attempt=03"))).toEqual([]);
  });
});
