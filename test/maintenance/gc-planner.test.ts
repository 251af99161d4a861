/**
 * planGc by example: the choices the property test cannot name (the PUBLISHING case, boundaries of
 * the floor and the safety window, the current run's keepRuns place, refused URLs).
 */
import { describe, expect, it } from "vitest";
import { isValidationError, type ValidationError } from "../../src/errors.js";
import { type GcInput, planGc, type RunUrls } from "../../src/maintenance/gc-planner.js";
import type { DatasetView, RetentionFloor, RunView } from "../../src/projections/views.js";
import { noAttempts } from "../support/run-view.js";

const ROOT = "s3://lake/events";
const H = 3_600_000;
const D = 24 * H;
const NOW = Date.UTC(2026, 5, 1);
const ago = (ms: number) => new Date(NOW - ms);

function run(runId: string, fields: Partial<RunView> = {}): RunView {
  return {
    runId,
    datasetId: "events",
    status: "SUCCEEDED",
    numShards: 1,
    current: false,
    publishProgress: "succeeded",
    manifestUrl: `${ROOT}/manifests/${runId}.json`,
    startedAt: ago(90 * D),
    updatedAt: ago(2 * D),
    heartbeatAt: ago(90 * D),
    succeededAt: ago(2 * D),
    failedAt: null,
    // Was current once and replaced long ago (a run that never was current says so explicitly).
    replacedAt: ago(2 * D),
    failureCause: null,
    failureReason: null,
    missingShards: null,
    reopenedCount: 0,
    attempts: noAttempts(),
    ...fields,
  };
}

function failed(runId: string, failedAgo: number, fields: Partial<RunView> = {}): RunView {
  return run(runId, {
    status: "FAILED",
    publishProgress: "none",
    manifestUrl: null,
    succeededAt: null,
    failedAt: ago(failedAgo),
    updatedAt: ago(failedAgo),
    replacedAt: null,
    failureCause: "writer_abort",
    ...fields,
  });
}

const urlsOf = (r: RunView): RunUrls => ({
  attemptUrls: [
    `${ROOT}/data/${r.runId}/shard=00000/attempt=00`,
    `${ROOT}/data/${r.runId}/shard=00000/attempt=01`,
  ],
  winnerUrls: r.status === "SUCCEEDED" ? [`${ROOT}/data/${r.runId}/shard=00000/attempt=00`] : [],
  manifestUrl: r.manifestUrl,
});

function input(
  runs: RunView[],
  options: {
    current?: string | null;
    policies?: Partial<DatasetView["policies"]>;
    floors?: RetentionFloor[];
    urls?: Map<string, RunUrls>;
  } = {},
): GcInput {
  const current = options.current === undefined ? null : options.current;
  return {
    now: new Date(NOW),
    dataset: {
      datasetId: "events",
      root: ROOT,
      policies: {
        keepRuns: 2,
        retentionMs: 30 * D,
        failedRetentionMs: 7 * D,
        staleAfterMs: H,
        safetyWindowMs: H,
        ...options.policies,
      },
      currentRunId: current,
      currentManifestUrl: current === null ? null : `${ROOT}/manifests/${current}.json`,
      currentMovedAt: null,
      registeredAt: ago(100 * D),
      updatedAt: ago(100 * D),
    },
    runs: runs.map((r) => (r.runId === current ? { ...r, current: true, replacedAt: null } : r)),
    floors: options.floors ?? [],
    runUrls: options.urls ?? new Map(runs.map((r) => [r.runId, urlsOf(r)])),
  };
}

const kinds = (i: GcInput) => Object.fromEntries(planGc(i).actions.map((a) => [a.runId, a.kind]));
const whyOf = (i: GcInput, runId: string) =>
  planGc(i)
    .protected.filter((p) => p.runId === runId)
    .map((p) => p.why);

describe("active runs", () => {
  it("fails a silent STARTED run and a silent PUBLISHING run whose manifest is not recorded yet", () => {
    const i = input([
      run("r1", {
        status: "STARTED",
        publishProgress: "none",
        heartbeatAt: ago(2 * H),
        updatedAt: ago(3 * H),
      }),
      run("r2", { status: "PUBLISHING", publishProgress: "winners_selected", updatedAt: ago(2 * H) }),
      run("r3", {
        status: "STARTED",
        publishProgress: "none",
        heartbeatAt: ago(10 * 60_000),
        updatedAt: ago(5 * H),
      }),
      run("r4", { status: "PUBLISHING", publishProgress: "manifest_published", updatedAt: ago(20 * D) }),
    ]);
    const plan = planGc(i);
    expect(plan.actions).toEqual([
      {
        kind: "fail_stale",
        runId: "r1",
        urls: [],
        pruneReason: null,
        reason: `STARTED and silent for 2h (last sign of life ${ago(2 * H).toISOString()}), longer than staleAfter 1h`,
      },
      expect.objectContaining({ kind: "fail_stale", runId: "r2", urls: [], pruneReason: null }),
    ]);
    expect(whyOf(i, "r3")).toEqual([
      `active (STARTED): last sign of life ${ago(10 * 60_000).toISOString()}, within staleAfter 1h`,
    ]);
    expect(whyOf(i, "r4")).toEqual([
      "active: publishing with its manifest recorded (manifest_published); only publish may finish it",
    ]);
  });

  it("counts silence strictly longer than staleAfter, and a heartbeat in the future as alive", () => {
    const i = input([
      run("r1", { status: "STARTED", publishProgress: "none", heartbeatAt: ago(H), updatedAt: ago(H) }),
      run("r2", {
        status: "STARTED",
        publishProgress: "none",
        heartbeatAt: ago(H + 1),
        updatedAt: ago(H + 1),
      }),
      run("r3", { status: "STARTED", publishProgress: "none", heartbeatAt: ago(-D), updatedAt: ago(90 * D) }),
    ]);
    expect(kinds(i)).toEqual({ r2: "fail_stale" });
  });
});

describe("the current run and keepRuns", () => {
  it("keeps the newest keepRuns succeeded runs and prunes the rest with data and manifest", () => {
    const runs = ["r1", "r2", "r3", "r4"].map((id, n) => run(id, { succeededAt: ago((5 - n) * D) }));
    const i = input(runs, { current: "r4" });
    const plan = planGc(i);
    expect(plan.actions.map((a) => [a.kind, a.runId, a.pruneReason])).toEqual([
      ["keep_runs", "r1", "keep_runs"],
      ["keep_runs", "r2", "keep_runs"],
    ]);
    // The manifest first: the marker goes before the data it names.
    expect(plan.actions[0]?.urls).toEqual([
      `${ROOT}/manifests/r1.json`,
      `${ROOT}/data/r1/shard=00000/attempt=00`,
      `${ROOT}/data/r1/shard=00000/attempt=01`,
    ]);
    expect(plan.protected).toEqual([
      { runId: "r3", why: "one of the newest keepRuns (2 of 2 kept)" },
      { runId: "r4", why: "current run: _CURRENT points to it" },
    ]);
  });

  it("keeps the current run beside the newest keepRuns even when a skewed clock puts it far in the past", () => {
    const runs = [
      run("r1", { succeededAt: ago(3000 * D), updatedAt: ago(3000 * D) }),
      run("r2", { succeededAt: ago(3 * D) }),
      run("r3", { succeededAt: ago(2 * D) }),
      run("r4", { succeededAt: ago(1 * D) }),
    ];
    expect(kinds(input(runs, { current: "r1" }))).toEqual({ r2: "keep_runs" });
    expect(whyOf(input(runs, { current: "r1" }), "r1")).toEqual(["current run: _CURRENT points to it"]);
    // ...and in the future, where it is also the newest.
    runs[0] = run("r1", { succeededAt: ago(-400 * D), updatedAt: ago(-400 * D) });
    expect(kinds(input(runs, { current: "r1" }))).toEqual({ r2: "keep_runs", r3: "keep_runs" });
  });

  it("breaks ties on succeededAt by runId: the greater runId counts as newer", () => {
    const runs = ["ra", "rb", "rc"].map((id) => run(id, { succeededAt: ago(D) }));
    expect(kinds(input(runs, { policies: { keepRuns: 1 } }))).toEqual({ ra: "keep_runs", rb: "keep_runs" });
  });

  it("never lets retention take one of the newest keepRuns; beyond them it names the reason", () => {
    const old = [run("r1", { updatedAt: ago(31 * D) }), run("r2", { updatedAt: ago(300 * D) })];
    expect(kinds(input(old, { current: "r2" }))).toEqual({});
    expect(whyOf(input(old, { current: "r2" }), "r1")).toEqual(["one of the newest keepRuns (2 of 2 kept)"]);
    const more = [
      run("r0", { succeededAt: ago(40 * D), updatedAt: ago(40 * D) }),
      run("r1", { succeededAt: ago(3 * D), updatedAt: ago(3 * D) }),
      run("r2", { succeededAt: ago(2 * D) }),
      run("r3", { succeededAt: ago(D) }),
    ];
    expect(kinds(input(more, { current: "r3" }))).toEqual({ r0: "retention", r1: "keep_runs" });
  });

  it("names retention by when the run succeeded, not by its last event (maintenance's own events do not make it younger)", () => {
    // A first prune's failed deletion recorded an event on the run 2 days ago: the reason stays
    // retention, as the rollups and the pending items say.
    const runs = [
      run("r0", { succeededAt: ago(40 * D), updatedAt: ago(2 * D) }),
      run("r2", { succeededAt: ago(2 * D) }),
      run("r3", { succeededAt: ago(D) }),
    ];
    expect(kinds(input(runs, { current: "r3" }))).toEqual({ r0: "retention" });
  });

  it("waits until a run's last event is older than the safety window before pruning it", () => {
    const runs = [
      run("r1", { succeededAt: ago(3 * D), updatedAt: ago(H - 1) }),
      run("r2", { succeededAt: ago(2 * D) }),
      run("r3", { succeededAt: ago(D) }),
    ];
    expect(kinds(input(runs, { current: "r3" }))).toEqual({});
    expect(whyOf(input(runs, { current: "r3" }), "r1")[0]).toMatch(/^inside the safety window: last event/);
    runs[0] = run("r1", { succeededAt: ago(3 * D), updatedAt: ago(H) });
    expect(kinds(input(runs, { current: "r3" }))).toEqual({ r1: "keep_runs" });
  });
});

describe("the safety window after replacement", () => {
  it("keeps a replaced run until replacedAt + safetyWindow, inclusive of the last millisecond before", () => {
    const runs = (replacedAgo: number) => [
      run("r1", { succeededAt: ago(3 * D), replacedAt: ago(replacedAgo) }),
      run("r2", { succeededAt: ago(2 * D) }),
      run("r3", { succeededAt: ago(D) }),
    ];
    expect(kinds(input(runs(H - 1), { current: "r3" }))).toEqual({});
    expect(whyOf(input(runs(H - 1), { current: "r3" }), "r1")[0]).toMatch(
      /^inside the safety window: replaced/,
    );
    expect(kinds(input(runs(H), { current: "r3" }))).toEqual({ r1: "keep_runs" });
    // Replaced "in the future" (a skewed clock) keeps it; a zero window lets it go at once.
    expect(kinds(input(runs(-D), { current: "r3" }))).toEqual({});
    expect(kinds(input(runs(0), { current: "r3", policies: { safetyWindowMs: 0 } }))).toEqual({
      r1: "keep_runs",
    });
  });

  it("never prunes a run that succeeded after the current one and was never current: _CURRENT may be moving to it", () => {
    const runs = [
      run("r1", { succeededAt: ago(2 * D) }),
      run("r2", { succeededAt: ago(60_000), replacedAt: null }),
    ];
    const i = input(runs, { current: "r1", policies: { keepRuns: 1 } });
    expect(kinds(i)).toEqual({});
    expect(whyOf(i, "r2")[0]).toMatch(/^succeeded after the current run r1 and never current/);
    // With no current run at all, every succeeded run that never was current may become it.
    expect(kinds(input([run("r3", { replacedAt: null })], { policies: { keepRuns: 1 } }))).toEqual({});
  });

  it("lets a never-current run that succeeded before the current one go without waiting", () => {
    const runs = [
      run("r1", { succeededAt: ago(2 * D), replacedAt: null }),
      run("r2", { succeededAt: ago(60_000) }),
    ];
    expect(kinds(input(runs, { current: "r2", policies: { keepRuns: 1 } }))).toEqual({ r1: "keep_runs" });
  });
});

describe("after a rollback", () => {
  it("rules a run rolled back from (newer than the current one, current once) by its safety window and keepRuns", () => {
    // r3 was current and _CURRENT moved back to r2 an hour ago (keepRuns 1, window 1h).
    const runs = (rolledBackAgo: number) => [
      run("r1", { succeededAt: ago(3 * D) }),
      run("r2", { succeededAt: ago(2 * D) }),
      run("r3", { succeededAt: ago(D), replacedAt: ago(rolledBackAgo) }),
    ];
    const inside = input(runs(H - 1), { current: "r2", policies: { keepRuns: 1 } });
    expect(kinds(inside)).toEqual({ r1: "keep_runs" });
    expect(whyOf(inside, "r3")[0]).toMatch(/^inside the safety window/);
    const after = input(runs(H), { current: "r2", policies: { keepRuns: 1 } });
    // The newest succeeded run: kept by keepRuns like any other, never as "on its way to current".
    expect(kinds(after)).toEqual({ r1: "keep_runs" });
    expect(whyOf(after, "r3")).toEqual(["one of the newest keepRuns (1 of 1 kept)"]);
    // Once newer runs fill keepRuns, it goes; past retention too, retention is the reason.
    const newer = [...runs(H), run("r4", { succeededAt: ago(H / 2) })];
    expect(kinds(input(newer, { current: "r4", policies: { keepRuns: 1 } }))).toEqual({
      r1: "keep_runs",
      r2: "keep_runs",
      r3: "keep_runs",
    });
    const old = [
      run("r2", { succeededAt: ago(2 * D) }),
      run("r3", { succeededAt: ago(31 * D), replacedAt: ago(H), updatedAt: ago(31 * D) }),
    ];
    expect(kinds(input(old, { current: "r2", policies: { keepRuns: 1 } }))).toEqual({ r3: "retention" });
  });

  it("keeps the run the store's _CURRENT names as current, whatever the log says", () => {
    const runs = [run("r1", { succeededAt: ago(3 * D) }), run("r2", { succeededAt: ago(D) })];
    const i = { ...input(runs, { current: "r2", policies: { keepRuns: 1 } }), pointerRunId: "r1" };
    expect(kinds(i)).toEqual({});
    expect(whyOf(i, "r1")).toEqual([
      "named by _CURRENT in the object store (the log has not recorded that move)",
    ]);
    expect(kinds({ ...i, pointerRunId: null })).toEqual({ r1: "keep_runs" });
  });
});

describe("a safety-window hold after the window shrank", () => {
  it("keeps the held (longer) window for every run until the hold ends, then the policy's", () => {
    const runs = [
      run("r1", { succeededAt: ago(3 * D), replacedAt: ago(30 * 60_000) }),
      run("r2", { succeededAt: ago(D) }),
    ];
    const held = (untilIn: number): GcInput => {
      const i = input(runs, { current: "r2", policies: { keepRuns: 1, safetyWindowMs: 0 } });
      return { ...i, dataset: { ...i.dataset, safetyWindowHold: { windowMs: H, until: ago(-untilIn) } } };
    };
    expect(kinds(held(60_000))).toEqual({});
    expect(whyOf(held(60_000), "r1")[0]).toMatch(/^inside the safety window/);
    expect(kinds(held(0))).toEqual({ r1: "keep_runs" });
    expect(kinds(input(runs, { current: "r2", policies: { keepRuns: 1, safetyWindowMs: 0 } }))).toEqual({
      r1: "keep_runs",
    });
  });
});

describe("failed runs and the failed-retention floor", () => {
  it("keeps a failed run inside its floor, and collects it from failedAt + failedRetention on", () => {
    expect(kinds(input([failed("r1", 7 * D - 1)]))).toEqual({});
    expect(whyOf(input([failed("r1", 7 * D - 1)]), "r1")).toEqual([
      `inside the failed-retention floor until ${ago(-1).toISOString()}`,
    ]);
    const plan = planGc(input([failed("r1", 7 * D)]));
    expect(plan.actions).toEqual([
      {
        kind: "stale",
        runId: "r1",
        // The manifest first although no event records one: a publish refused after it put the
        // object (the run failed meanwhile) leaves it there (safety regression 14).
        urls: [
          `${ROOT}/manifests/r1.json`,
          `${ROOT}/data/r1/shard=00000/attempt=00`,
          `${ROOT}/data/r1/shard=00000/attempt=01`,
        ],
        pruneReason: "failed_retention",
        reason: `failed 7d ago (${ago(7 * D).toISOString()}), past the failed-retention floor of 7d`,
      },
    ]);
  });

  it("waits for a floor row that reaches further than the policy (and for an invalid one, forever)", () => {
    const floor = (runId: string, until: Date): RetentionFloor => ({
      datasetId: "events",
      kind: "failed_cleanup",
      runId,
      url: `${ROOT}/data/${runId}/shard=00000/attempt=01`,
      failedAt: ago(8 * D),
      protectedUntil: until,
    });
    const runs = [failed("r1", 8 * D), run("r2", { succeededAt: ago(9 * D) }), run("r3"), run("r4")];
    const i = input(runs, {
      current: "r4",
      floors: [floor("r1", ago(-H)), floor("r2", new Date(Number.NaN))],
    });
    expect(kinds(i)).toEqual({});
    expect(whyOf(i, "r2")).toEqual(["inside the failed-retention floor until an invalid time"]);
    expect(kinds(input(runs, { current: "r4", floors: [floor("r1", ago(0)), floor("r2", ago(1))] }))).toEqual(
      {
        r1: "stale",
        r2: "keep_runs",
      },
    );
  });

  it("waits until the last event of a failed run is older than the safety window", () => {
    const i = input([failed("r1", 8 * D, { updatedAt: ago(30 * 60_000) })]);
    expect(kinds(i)).toEqual({});
    expect(whyOf(i, "r1")[0]).toMatch(/^inside the safety window: last event at /);
  });

  it("collects the winners a failed run selected before its publish failed: nothing ever read them", () => {
    const r1 = failed("r1", 8 * D);
    const urls = new Map([
      [
        "r1",
        {
          attemptUrls: [`${ROOT}/data/r1/shard=00000/attempt=01`],
          winnerUrls: [`${ROOT}/data/r1/shard=00000/attempt=00`],
          manifestUrl: null,
        },
      ],
    ]);
    expect(planGc(input([r1], { urls })).actions[0]?.urls).toEqual([
      `${ROOT}/manifests/r1.json`,
      `${ROOT}/data/r1/shard=00000/attempt=01`,
      `${ROOT}/data/r1/shard=00000/attempt=00`,
    ]);
  });
});

describe("URLs", () => {
  it("leaves out URLs that escape the root, are reserved or touch a kept run, and says why", () => {
    const r1 = failed("r1", 8 * D);
    const r2 = run("r2");
    const urls = new Map<string, RunUrls>([
      [
        "r1",
        {
          attemptUrls: [
            `${ROOT}/data/r1/shard=00000/attempt=01`,
            "s3://lake/events2/data/r1",
            `${ROOT}/_CURRENT`,
            `${ROOT}/data/r2/shard=00000/attempt=00`,
            `${ROOT}/data/r2`,
            `${ROOT}/data/r2/shard=00000/attempt=00/part-0`,
            `${ROOT}/data/r2/shard=00000/attempt=010`,
            `${ROOT}/manifests/r2.json`,
          ],
          winnerUrls: [],
          manifestUrl: null,
        },
      ],
      ["r2", urlsOf(r2)],
    ]);
    const plan = planGc(input([r1, r2], { current: "r2", urls }));
    expect(plan.actions).toEqual([
      expect.objectContaining({
        kind: "stale",
        runId: "r1",
        urls: [
          `${ROOT}/manifests/r1.json`,
          `${ROOT}/data/r1/shard=00000/attempt=01`,
          `${ROOT}/data/r2/shard=00000/attempt=010`,
        ],
      }),
    ]);
    const refused = plan.protected.filter((p) => p.runId === "r1").map((p) => p.why);
    expect(refused).toEqual([
      expect.stringMatching(
        /^url s3:\/\/lake\/events2\/data\/r1 is not deleted: .*not under the dataset root/,
      ),
      `url ${ROOT}/_CURRENT is not deleted: it is the dataset's _CURRENT pointer`,
      `url ${ROOT}/data/r2/shard=00000/attempt=00 is not deleted: it equals ${ROOT}/data/r2/shard=00000/attempt=00 of run r2, which is not pruned`,
      expect.stringMatching(
        /^url s3:\/\/lake\/events\/data\/r2 is not deleted: it contains .* of run r2, which is not pruned$/,
      ),
      `url ${ROOT}/data/r2/shard=00000/attempt=00/part-0 is not deleted: it lies inside ${ROOT}/data/r2/shard=00000/attempt=00 of run r2, which is not pruned`,
      `url ${ROOT}/manifests/r2.json is not deleted: it equals ${ROOT}/manifests/r2.json of run r2, which is not pruned`,
    ]);
  });

  it("plans a failed run's manifest path although no event records it, and skips it for an id that makes no safe key", () => {
    const plan = planGc(input([failed("r1", 8 * D)]));
    expect(plan.actions[0]?.urls[0]).toBe(`${ROOT}/manifests/r1.json`);
    // An id the boundary would refuse, recorded by another writer of the log: gc goes on without it.
    const odd = failed("r/../x", 8 * D);
    const urls = new Map<string, RunUrls>([
      [
        "r/../x",
        { attemptUrls: [`${ROOT}/data/rx/shard=00000/attempt=00`], winnerUrls: [], manifestUrl: null },
      ],
    ]);
    expect(planGc(input([odd], { urls })).actions[0]?.urls).toEqual([
      `${ROOT}/data/rx/shard=00000/attempt=00`,
    ]);
  });

  it("never prunes a run whose URLs it was not given", () => {
    const i = input([failed("r1", 8 * D)], { urls: new Map() });
    expect(planGc(i)).toEqual({
      actions: [],
      protected: [{ runId: "r1", why: "would be pruned (stale), but no URLs are recorded for it" }],
    });
  });

  it("keeps another dataset's run out of the plan", () => {
    const i = input([failed("r1", 8 * D, { datasetId: "other" })]);
    expect(planGc(i)).toEqual({
      actions: [],
      protected: [{ runId: "r1", why: "belongs to dataset other, not events" }],
    });
  });
});

describe("input validation", () => {
  const fieldOf = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      expect(isValidationError(e)).toBe(true);
      return (e as ValidationError).field;
    }
    return null;
  };
  it("names the field of an invalid clock or policy", () => {
    expect(fieldOf(() => planGc({ ...input([]), now: new Date(Number.NaN) }))).toBe("now");
    expect(fieldOf(() => planGc(input([], { policies: { keepRuns: 0 } })))).toBe("policies.keepRuns");
    expect(fieldOf(() => planGc(input([], { policies: { retentionMs: -1 } })))).toBe("policies.retentionMs");
    expect(fieldOf(() => planGc(input([], { policies: { safetyWindowMs: 0.5 } })))).toBe(
      "policies.safetyWindowMs",
    );
    expect(fieldOf(() => planGc(input([], { policies: { safetyWindowMs: 0 } })))).toBeNull();
  });
});
