/**
 * planGc over random dataset histories and a controllable clock. The oracle is written from the
 * rules, not from the planner: which runs are protected (current, active, inside a floor, inside the
 * safety window), which must be planned, and a naive pairwise segment comparison of URLs.
 */
import { fc, test } from "@fast-check/vitest";
import { expect } from "vitest";
import { type GcInput, type GcPlan, planGc, type RunUrls } from "../../src/maintenance/gc-planner.js";
import type { DatasetView, RetentionFloor, RunStatus, RunView } from "../../src/projections/views.js";
import { keyUnderRoot } from "../../src/storage/dataset-url.js";
import { noAttempts } from "../support/run-view.js";

const ROOT = "s3://lake/events";
/**
 * A run's manifest: the recorded one, else where publish writes it (a publish refused after its
 * put leaves one that no event names), which a prune deletes first all the same.
 */
const manifestOf = (runId: string, urls: RunUrls) => urls.manifestUrl ?? `${ROOT}/manifests/${runId}.json`;
const DATASET = "events";
const H = 3_600_000;
const D = 24 * H;
const T0 = Date.UTC(2026, 0, 1);
const at = (offset: number) => new Date(T0 + offset);

/** URLs that try to get something they should not deleted. */
type Trick =
  | "outside"
  | "dotdot"
  | "otherBucket"
  | "current"
  | "manifestsArea"
  | "otherWinner"
  | "aroundOtherRun"
  | "insideOtherWinner";

const runSpec = fc.record({
  status: fc.constantFrom<RunStatus>("STARTED", "PUBLISHING", "SUCCEEDED", "SUCCEEDED", "FAILED", "FAILED"),
  manifestRecorded: fc.boolean(),
  foreign: fc.integer({ min: 0, max: 14 }).map((x) => x === 0),
  // Coarse times now and then, so that runs tie on their timestamps.
  started: fc.oneof(fc.integer({ min: 0, max: 60 * D }), fc.constantFrom(0, D, 2 * D)),
  updated: fc.integer({ min: 0, max: 12 * D }),
  heartbeat: fc.integer({ min: 0, max: 12 * D }),
  ended: fc.oneof(fc.integer({ min: 0, max: 12 * D }), fc.constant(0)),
  replaced: fc.option(fc.integer({ min: 0, max: 12 * D }), { freq: 2 }),
  floorRow: fc.boolean(),
  shards: fc.integer({ min: 0, max: 3 }),
  attempts: fc.integer({ min: 1, max: 3 }),
  tricks: fc.array(
    fc.record({
      trick: fc.constantFrom<Trick>(
        "outside",
        "dotdot",
        "otherBucket",
        "current",
        "manifestsArea",
        "otherWinner",
        "aroundOtherRun",
        "insideOtherWinner",
      ),
      other: fc.nat(),
    }),
    { maxLength: 2 },
  ),
  urlsMissing: fc.integer({ min: 0, max: 19 }).map((x) => x === 0),
});

const DURATIONS = [H, 6 * H, D, 7 * D, 30 * D];
const policiesArb = fc.record({
  keepRuns: fc.integer({ min: 1, max: 4 }),
  retentionMs: fc.constantFrom(...DURATIONS),
  failedRetentionMs: fc.constantFrom(...DURATIONS),
  staleAfterMs: fc.constantFrom(...DURATIONS),
  safetyWindowMs: fc.constantFrom(0, H, D),
});

const historyArb = fc.record({
  runs: fc.array(runSpec, { maxLength: 12 }),
  policies: policiesArb,
  current: fc.option(fc.nat(), { freq: 4 }),
  strayCurrentFlag: fc.option(fc.nat(), { freq: 6 }),
  cleanupFloors: fc.array(fc.record({ run: fc.nat(), failedAt: fc.integer({ min: 0, max: 80 * D }) }), {
    maxLength: 3,
  }),
  now: fc.integer({ min: -2 * D, max: 100 * D }),
  /** Puts the clock exactly on (or 1 ms either side of) a policy boundary of one run. */
  boundary: fc.option(
    fc.record({
      run: fc.nat(),
      edge: fc.constantFrom(
        ["updated", "retentionMs"],
        ["ended", "retentionMs"],
        ["heartbeat", "staleAfterMs"],
        ["updated", "staleAfterMs"],
        ["ended", "failedRetentionMs"],
        ["replaced", "safetyWindowMs"],
        ["updated", "safetyWindowMs"],
      ),
      delta: fc.constantFrom(-1, 0, 0, 1),
    }),
    { freq: 2 },
  ),
});

type History = typeof historyArb extends fc.Arbitrary<infer T> ? T : never;

function winnerUrl(runId: string, shard: number) {
  return `${ROOT}/data/${runId}/shard=${String(shard).padStart(5, "0")}/attempt=00`;
}

/** Builds the planner's input from a generated history. */
function boundaryNow(h: History): number {
  const b = h.boundary;
  const spec = b === null ? undefined : h.runs[b.run % Math.max(1, h.runs.length)];
  if (b === null || spec === undefined) return h.now;
  const ended = spec.started + spec.ended;
  const from = {
    updated: spec.started + spec.updated,
    heartbeat: spec.started + spec.heartbeat,
    ended,
    replaced: ended + (spec.replaced ?? 0),
  }[b.edge[0] as "updated" | "heartbeat" | "ended" | "replaced"];
  return (
    from +
    h.policies[b.edge[1] as "retentionMs" | "staleAfterMs" | "failedRetentionMs" | "safetyWindowMs"] +
    b.delta
  );
}

function buildInput(h: History, nowOffset = boundaryNow(h)): GcInput {
  const ids = h.runs.map((_, i) => `r${String(i).padStart(2, "0")}`);
  const currentRunId =
    h.current === null
      ? null
      : h.current % (ids.length + 1) === ids.length
        ? "ghost"
        : ids[h.current % (ids.length + 1)]!;
  const stray =
    h.strayCurrentFlag === null || ids.length === 0 ? null : ids[h.strayCurrentFlag % ids.length]!;
  const runs: RunView[] = [];
  const floors: RetentionFloor[] = [];
  const runUrls = new Map<string, RunUrls>();

  h.runs.forEach((spec, i) => {
    const runId = ids[i]!;
    const started = spec.started;
    const ended = started + spec.ended;
    const succeeded = spec.status === "SUCCEEDED";
    const failed = spec.status === "FAILED";
    const publishProgress: RunView["publishProgress"] = succeeded
      ? "succeeded"
      : spec.status === "PUBLISHING"
        ? spec.manifestRecorded
          ? "manifest_published"
          : "winners_selected"
        : "none";
    const run: RunView = {
      runId,
      datasetId: spec.foreign ? "elsewhere" : DATASET,
      status: spec.status,
      numShards: Math.max(1, spec.shards),
      current: runId === currentRunId || runId === stray,
      publishProgress,
      manifestUrl:
        succeeded || publishProgress === "manifest_published" ? `${ROOT}/manifests/${runId}.json` : null,
      startedAt: at(started),
      updatedAt: at(started + spec.updated),
      heartbeatAt: at(started + spec.heartbeat),
      succeededAt: succeeded ? at(ended) : null,
      failedAt: failed ? at(ended) : null,
      replacedAt: spec.replaced === null ? null : at(ended + spec.replaced),
      failureCause: failed ? "writer_abort" : null,
      failureReason: failed ? "test" : null,
      missingShards: null,
      reopenedCount: 0,
      attempts: noAttempts(),
    };
    runs.push(run);
    if (failed && spec.floorRow) {
      floors.push({
        datasetId: DATASET,
        kind: "failed_run",
        runId,
        url: null,
        failedAt: at(ended),
        protectedUntil: at(ended + h.policies.failedRetentionMs),
      });
    }
    if (spec.urlsMissing) return;
    const attemptUrls: string[] = [];
    const winnerUrls: string[] = [];
    for (let s = 0; s < spec.shards; s++) {
      for (let a = 0; a < spec.attempts; a++) {
        attemptUrls.push(`${ROOT}/data/${runId}/shard=${String(s).padStart(5, "0")}/attempt=0${a}`);
        // The sibling that shares a string prefix with attempt=01 must never be confused with it.
        if (a === 1)
          attemptUrls.push(`${ROOT}/data/${runId}/shard=${String(s).padStart(5, "0")}/attempt=010`);
      }
      if (spec.status !== "STARTED") winnerUrls.push(winnerUrl(runId, s));
    }
    for (const { trick, other } of spec.tricks) {
      const otherId = ids[other % ids.length]!;
      const url = {
        outside: "s3://lake/events2/data/x",
        dotdot: `${ROOT}/data/${runId}/../../_CURRENT`,
        otherBucket: "s3://other/events/data/x",
        current: `${ROOT}/_CURRENT`,
        manifestsArea: `${ROOT}/manifests`,
        otherWinner: winnerUrl(otherId, 0),
        aroundOtherRun: `${ROOT}/data/${otherId}`,
        insideOtherWinner: `${winnerUrl(otherId, 0)}/part-0.parquet`,
      }[trick];
      attemptUrls.push(url);
    }
    runUrls.set(runId, { attemptUrls, winnerUrls, manifestUrl: run.manifestUrl });
  });

  for (const f of h.cleanupFloors) {
    if (ids.length === 0) break;
    const runId = ids[f.run % ids.length]!;
    floors.push({
      datasetId: DATASET,
      kind: "failed_cleanup",
      runId,
      url: `${ROOT}/data/${runId}/shard=00000/attempt=01`,
      failedAt: at(f.failedAt),
      protectedUntil: at(f.failedAt + h.policies.failedRetentionMs),
    });
  }

  const currentRun = runs.find((r) => r.runId === currentRunId);
  const dataset: DatasetView = {
    datasetId: DATASET,
    root: ROOT,
    policies: h.policies,
    currentRunId,
    currentManifestUrl: currentRun?.manifestUrl ?? null,
    currentMovedAt: null,
    registeredAt: at(0),
    updatedAt: at(0),
  };
  return { now: at(nowOffset), dataset, runs, floors, runUrls };
}

/** The rules, restated: why a run may never be pruned right now (null: it may be). */
function pruneBlocker(input: GcInput, run: RunView): string | null {
  const now = input.now.getTime();
  const p = input.dataset.policies;
  if (run.datasetId !== input.dataset.datasetId) return "foreign";
  if (run.runId === input.dataset.currentRunId || run.current) return "current";
  if (run.status === "STARTED" || run.status === "PUBLISHING") return "active";
  if (input.floors.some((f) => f.runId === run.runId && f.protectedUntil.getTime() > now)) return "floor";
  if (run.status === "FAILED" && run.failedAt!.getTime() + p.failedRetentionMs > now) return "floor";
  if (run.replacedAt !== null && run.replacedAt.getTime() + p.safetyWindowMs > now) return "window";
  if (run.status === "FAILED") {
    const last = Math.max(run.updatedAt.getTime(), run.heartbeatAt.getTime(), run.failedAt!.getTime());
    if (last + p.safetyWindowMs > now) return "window";
  }
  if (run.status === "SUCCEEDED" && run.replacedAt === null) {
    const current = input.runs.find(
      (r) => r.runId === input.dataset.currentRunId && r.datasetId === input.dataset.datasetId,
    );
    if (!current || succeededTime(run) > succeededTime(current)) return "may become current";
  }
  if (run.status === "SUCCEEDED") {
    // The newest keepRuns are a rail: nothing prunes them, retention included.
    const newestFirst = input.runs
      .filter((r) => r.status === "SUCCEEDED" && r.datasetId === input.dataset.datasetId)
      .sort((a, b) => (newer(a, b) ? -1 : 1));
    if (newestFirst.slice(0, p.keepRuns).some((r) => r.runId === run.runId)) return "kept";
    const last = Math.max(run.updatedAt.getTime(), succeededTime(run));
    if (!(last + p.safetyWindowMs <= now)) return "window";
  }
  if (!input.runUrls.has(run.runId)) return "no urls";
  return null;
}

const succeededTime = (r: RunView) => (r.succeededAt ?? r.updatedAt).getTime();

const PRUNE_KINDS = new Set(["stale", "keep_runs", "retention"]);
const segments = (url: string): string[] | null => {
  try {
    return keyUnderRoot(ROOT, url).split("/");
  } catch {
    return null;
  }
};
const overlaps = (a: string[], b: string[]) => {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false;
  return true;
};
const newer = (a: RunView, b: RunView) =>
  a.succeededAt!.getTime() !== b.succeededAt!.getTime()
    ? a.succeededAt!.getTime() > b.succeededAt!.getTime()
    : a.runId > b.runId;

/**
 * The runs the plan keeps because their manifest cannot go first (a URL of a run the plan keeps,
 * or the current manifest, overlaps it, or it is not under the root): each one checked to be so.
 */
function markerHeld(input: GcInput, plan: GcPlan): Set<string> {
  const held = new Set(
    plan.protected.filter((p) => /^not (pruned|collected): its manifest /.test(p.why)).map((p) => p.runId),
  );
  const prunedIds = new Set(plan.actions.filter((a) => PRUNE_KINDS.has(a.kind)).map((a) => a.runId));
  for (const runId of held) {
    expect(prunedIds.has(runId)).toBe(false);
    const manifest = segments(manifestOf(runId, input.runUrls.get(runId)!));
    const others = [...input.runUrls]
      .filter(([id]) => id !== runId && !prunedIds.has(id))
      .flatMap(([id, u]) => [...u.attemptUrls, ...u.winnerUrls, manifestOf(id, u)]);
    if (input.dataset.currentManifestUrl) others.push(input.dataset.currentManifestUrl);
    const overlapping = others.some((o) => {
      const s = segments(o);
      return s !== null && manifest !== null && overlaps(manifest, s);
    });
    expect(manifest === null || overlapping).toBe(true);
  }
  return held;
}

function checkInvariants(input: GcInput, plan: GcPlan): void {
  const byId = new Map(input.runs.map((r) => [r.runId, r]));
  const actionOf = new Map(plan.actions.map((a) => [a.runId, a]));
  const held = markerHeld(input, plan);

  // At most one action per run; every run is acted on or listed as protected.
  expect(actionOf.size).toBe(plan.actions.length);
  const protectedIds = new Set(plan.protected.map((p) => p.runId));
  for (const run of input.runs) expect(actionOf.has(run.runId) || protectedIds.has(run.runId)).toBe(true);

  const prunedIds = new Set(plan.actions.filter((a) => PRUNE_KINDS.has(a.kind)).map((a) => a.runId));
  const liveUrls: string[][] = [];
  for (const [runId, urls] of input.runUrls) {
    if (prunedIds.has(runId)) continue;
    for (const u of [...urls.attemptUrls, ...urls.winnerUrls, manifestOf(runId, urls)]) {
      const s = segments(u);
      if (s) liveUrls.push(s);
    }
  }
  if (input.dataset.currentManifestUrl) liveUrls.push(segments(input.dataset.currentManifestUrl)!);

  const plannedKeys = new Set<string>();
  for (const action of plan.actions) {
    const run = byId.get(action.runId)!;
    expect(run).toBeDefined();
    if (action.kind === "fail_stale") {
      // Marks an abandoned run failed; deletes nothing, prunes nothing.
      expect(action.urls).toEqual([]);
      expect(action.pruneReason).toBeNull();
      expect(
        run.status === "STARTED" ||
          (run.status === "PUBLISHING" && run.publishProgress === "winners_selected"),
      ).toBe(true);
      expect(run.runId === input.dataset.currentRunId || run.current).toBe(false);
      const last = Math.max(run.heartbeatAt.getTime(), run.updatedAt.getTime());
      expect(input.now.getTime() - last).toBeGreaterThan(input.dataset.policies.staleAfterMs);
      continue;
    }
    // Never the current run, an active run, a run inside its floor or inside the safety window.
    expect(pruneBlocker(input, run)).toBeNull();
    expect(action.pruneReason).toBe(
      { stale: "failed_retention", keep_runs: "keep_runs", retention: "retention" }[action.kind],
    );
    expect(action.kind === "stale" ? run.status === "FAILED" : run.status === "SUCCEEDED").toBe(true);

    const recorded = input.runUrls.get(run.runId)!;
    // Markers first out: a prune starts with the run's manifest.
    expect(action.urls[0]).toBe(manifestOf(run.runId, recorded));
    const own = new Set([...recorded.attemptUrls, ...recorded.winnerUrls, manifestOf(run.runId, recorded)]);
    for (const url of action.urls) {
      expect(own.has(url)).toBe(true);
      // Under the root, and never twice in a plan.
      const s = segments(url);
      expect(s).not.toBeNull();
      const key = s!.join("/");
      expect(plannedKeys.has(key)).toBe(false);
      plannedKeys.add(key);
      expect(["_CURRENT", "_archive"].includes(s![0]!) || key === "data" || key === "manifests").toBe(false);
      // Nothing that equals, contains or lies inside a URL of a run that is not pruned: above all,
      // winners of SUCCEEDED runs appear only when that very run is pruned.
      for (const live of liveUrls) expect(overlaps(s!, live)).toBe(false);
    }
  }

  // Everything past its policy is planned.
  for (const run of input.runs) {
    const action = actionOf.get(run.runId);
    const blocker = pruneBlocker(input, run);
    if (blocker === null && run.status === "FAILED" && !held.has(run.runId))
      expect(action?.kind).toBe("stale");
    if (
      run.datasetId === DATASET &&
      !(run.runId === input.dataset.currentRunId || run.current) &&
      (run.status === "STARTED" ||
        (run.status === "PUBLISHING" && run.publishProgress === "winners_selected"))
    ) {
      const silent = input.now.getTime() - Math.max(run.heartbeatAt.getTime(), run.updatedAt.getTime());
      expect(action?.kind === "fail_stale").toBe(silent > input.dataset.policies.staleAfterMs);
    }
  }

  // Every unprotected succeeded run is pruned, as retention when it succeeded longer than
  // retention ago (its last event does not count: maintenance records events on it too).
  const succeeded = input.runs.filter((r) => r.status === "SUCCEEDED" && r.datasetId === DATASET);
  for (const r of succeeded) {
    if (pruneBlocker(input, r) !== null || held.has(r.runId)) continue;
    const at = (r.succeededAt ?? r.updatedAt).getTime();
    const old = input.now.getTime() - at > input.dataset.policies.retentionMs;
    expect(actionOf.get(r.runId)?.kind).toBe(old ? "retention" : "keep_runs");
  }
}

test.prop([historyArb], { numRuns: 400 })("planGc keeps every safety rail on random histories", (h) => {
  const input = buildInput(h);
  checkInvariants(input, planGc(input));
});

test.prop([historyArb], { numRuns: 200 })(
  "with nothing otherwise protected, keep_runs prunes exactly max(0, succeeded - keepRuns) runs",
  (h) => {
    const input = buildInput(h);
    // A stray `current` flag on a second run is protection too: it is kept as current.
    const free = (r: RunView) =>
      !(r.current && r.runId !== input.dataset.currentRunId) &&
      input.floors.every((f) => f.runId !== r.runId || f.protectedUntil <= input.now) &&
      (r.replacedAt === null ||
        r.replacedAt.getTime() + input.dataset.policies.safetyWindowMs <= input.now.getTime()) &&
      input.runUrls.has(r.runId);
    const succeeded = input.runs.filter((r) => r.status === "SUCCEEDED" && r.datasetId === DATASET);
    fc.pre(
      succeeded.every(
        (r) =>
          free(r) && pruneBlocker(input, r) !== "may become current" && pruneBlocker(input, r) !== "window",
      ),
    );
    const plan = planGc(input);
    const pruned = plan.actions.filter((a) => a.kind === "keep_runs" || a.kind === "retention");
    // Kept: the newest keepRuns, plus the current run wherever it ranks.
    const newestFirst = [...succeeded].sort((a, b) => (newer(a, b) ? -1 : 1));
    const kept = new Set(newestFirst.slice(0, input.dataset.policies.keepRuns).map((r) => r.runId));
    for (const r of succeeded) if (r.runId === input.dataset.currentRunId || r.current) kept.add(r.runId);
    const held = succeeded.filter((r) => markerHeld(input, plan).has(r.runId) && !kept.has(r.runId));
    expect(pruned).toHaveLength(succeeded.length - kept.size - held.length);
    for (const a of pruned) expect(a.runId === input.dataset.currentRunId).toBe(false);
  },
);

test.prop([historyArb, fc.integer({ min: -10 * D, max: 400 * D })], { numRuns: 200 })(
  "the current run is never touched, whatever the clock says",
  (h, skew) => {
    const input = buildInput(h, h.now + skew);
    const plan = planGc(input);
    const current = input.dataset.currentRunId;
    expect(plan.actions.some((a) => a.runId === current)).toBe(false);
    const currentUrls = input.runUrls.get(current ?? "");
    if (currentUrls) {
      const all = plan.actions.flatMap((a) => a.urls.map((u) => segments(u)!));
      for (const u of [...currentUrls.attemptUrls, ...currentUrls.winnerUrls]) {
        const s = segments(u);
        if (s) for (const planned of all) expect(overlaps(planned, s)).toBe(false);
      }
    }
    checkInvariants(input, plan);
  },
);

test.prop([historyArb], { numRuns: 200 })(
  "advancing the clock far enough plans every terminal run the rails do not keep",
  (h) => {
    const input = buildInput(h, 10 * 365 * D);
    const plan = planGc(input);
    checkInvariants(input, plan);
    const actionOf = new Map(plan.actions.map((a) => [a.runId, a.kind]));
    const held = markerHeld(input, plan);
    for (const run of input.runs) {
      const kind = actionOf.get(run.runId);
      const hasUrls = input.runUrls.has(run.runId);
      if (
        run.datasetId !== DATASET ||
        run.runId === input.dataset.currentRunId ||
        run.current ||
        held.has(run.runId)
      ) {
        expect(kind).toBeUndefined();
      } else if (run.status === "FAILED") expect(kind).toBe(hasUrls ? "stale" : undefined);
      else if (
        run.status === "SUCCEEDED" &&
        (pruneBlocker(input, run) === "may become current" || pruneBlocker(input, run) === "kept")
      )
        expect(kind).toBeUndefined();
      else if (run.status === "SUCCEEDED")
        expect(hasUrls ? ["keep_runs", "retention"] : [undefined]).toContain(kind);
      else if (run.publishProgress === "manifest_published") expect(kind).toBeUndefined();
      else expect(kind).toBe("fail_stale");
    }
  },
);

test.prop([historyArb, fc.infiniteStream(fc.double({ min: 0, max: 1, noNaN: true }))], { numRuns: 100 })(
  "the actions do not depend on the order the runs are given in",
  (h, keys) => {
    const input = buildInput(h);
    const shuffled = input.runs
      .map((r) => ({ r, k: keys.next().value as number }))
      .sort((a, b) => a.k - b.k)
      .map((x) => x.r);
    expect(planGc({ ...input, runs: shuffled }).actions).toEqual(planGc(input).actions);
  },
);
