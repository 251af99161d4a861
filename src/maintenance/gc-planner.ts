import { effectiveSafetyWindowMs } from "../datasets/safety-window.js";
import { ValidationError } from "../errors.js";
import type { PruneReason } from "../events/catalogue.js";
import type { DatasetView, RetentionFloor, RunView } from "../projections/views.js";
import { type DatasetRoot, parseDatasetRoot, urlForKey } from "../storage/dataset-url.js";
import { manifestKey, runOfDataKey } from "../storage/object-layout.js";
import { comparable, OverlapIndex, reservedKeyReason } from "./url-overlap.js";

/**
 * The URLs recorded for one run: every attempt URL, the winner URLs, the manifest URL.
 *
 * @example
 * ```ts
 * const urls: RunUrls = { attemptUrls: ["s3://lake/events/data/r1/shard=00000/attempt=00"], winnerUrls: ["s3://lake/events/data/r1/shard=00000/attempt=00"], manifestUrl: "s3://lake/events/manifests/r1.json" }
 * ```
 */
export interface RunUrls {
  readonly attemptUrls: readonly string[];
  readonly winnerUrls: readonly string[];
  readonly manifestUrl: string | null;
}

/**
 * Everything {@link planGc} looks at, for one dataset.
 *
 * @example
 * ```ts
 * const input: GcInput = { now: new Date(), dataset, runs, floors, runUrls: new Map([["r1", urls]]) }
 * ```
 */
export interface GcInput {
  readonly now: Date;
  /** Policies, root and the current run. */
  readonly dataset: DatasetView;
  /** Every run of the dataset (registry rows). */
  readonly runs: readonly RunView[];
  /** The dataset's failed-retention floor rows. */
  readonly floors: readonly RetentionFloor[];
  /** The URLs of every run (a run without an entry is never pruned). */
  readonly runUrls: ReadonlyMap<string, RunUrls>;
  /**
   * The run the object store's `_CURRENT` names, when it could be read (else null or absent).
   * Kept as current whatever the log says: a publish or rollback that crashed between writing
   * `_CURRENT` and recording the move leaves readers on a run the log does not call current.
   */
  readonly pointerRunId?: string | null;
}

/**
 * What gc does to a run. `fail_stale`: mark an abandoned run FAILED (cause `heartbeat_timeout`),
 * deleting nothing. The others delete `urls` (attempt prefixes; the manifest URL, an object, last)
 * and then prune the run with `pruneReason`.
 *
 * @example
 * ```ts
 * const kind: GcActionKind = "keep_runs"
 * ```
 */
export type GcActionKind = "fail_stale" | "stale" | "keep_runs" | "retention";

/**
 * One planned action on one run.
 *
 * @example
 * ```ts
 * const a: GcAction = { kind: "stale", runId: "r3", urls: ["s3://lake/events/data/r3/shard=00000/attempt=00"], pruneReason: "failed_retention", reason: "failed 8d ago …" }
 * ```
 */
export interface GcAction {
  kind: GcActionKind;
  runId: string;
  /** URLs to delete, as recorded (not normalised), each under the root; empty for `fail_stale`. */
  urls: string[];
  /** The `Pruned` reason once the URLs are gone; null for `fail_stale`. */
  pruneReason: PruneReason | null;
  /** Why, for people. */
  reason: string;
}

/**
 * A run the plan deliberately keeps (or a URL of a run it refuses to delete), and why.
 *
 * @example
 * ```ts
 * const p: GcProtection = { runId: "r9", why: "current run: _CURRENT points to it" }
 * ```
 */
interface GcProtection {
  runId: string;
  why: string;
}

/**
 * The plan for one dataset: at most one action per run, and every run not acted on listed in
 * `protected` with the reason. A run whose action goes ahead may also appear in `protected` for
 * each URL of it that is refused (outside the root, reserved, or overlapping a URL of a run that
 * is not being pruned); such a URL is left in place.
 *
 * @example
 * ```ts
 * const plan: GcPlan = planGc(input)
 * for (const a of plan.actions) console.log(a.kind, a.runId, a.urls.length)
 * ```
 */
export interface GcPlan {
  actions: GcAction[];
  protected: GcProtection[];
}

const KIND_ORDER: Readonly<Record<GcActionKind, number>> = {
  fail_stale: 0,
  stale: 1,
  keep_runs: 2,
  retention: 3,
};
const PRUNE_REASON: Readonly<Record<Exclude<GcActionKind, "fail_stale">, PruneReason>> = {
  stale: "failed_retention",
  keep_runs: "keep_runs",
  retention: "retention",
};

/**
 * What gc decides for one run: an action, or why it keeps the run.
 *
 * @example
 * ```ts
 * const d: RetentionDecision = { keep: "current run: _CURRENT points to it" }
 * ```
 */
export type RetentionDecision = { act: GcActionKind; reason: string } | { keep: string };

/**
 * Plans garbage collection for one dataset, purely (no I/O, no clock: `now` is given). Per run,
 * the first rule that applies decides:
 *
 * 1. another dataset's run, or the current run (`dataset.currentRunId` or the row's `current`
 *    flag), or the run the store's `_CURRENT` names (`pointerRunId`): kept, whatever any
 *    timestamp says;
 * 2. STARTED, or PUBLISHING before its manifest is recorded: `fail_stale` when its last sign of
 *    life, `max(heartbeatAt, updatedAt)`, is more than `staleAfter` ago, else kept as active.
 *    PUBLISHING with a recorded manifest is kept: `_CURRENT` may be moving to it, and only
 *    publish may finish it (the run machine refuses to fail it too);
 * 3. inside a failed-retention floor: a floor row of the run with `protectedUntil > now`, or a
 *    FAILED run with `now < failedAt + failedRetention`: kept;
 * 4. inside the safety window (the one in force at `now`: the policy's, or a longer one still held
 *    after a policy change shortened it, see `effectiveSafetyWindowMs`): replaced as current less
 *    than `safetyWindow` ago
 *    (`replacedAt + safetyWindow > now`), or FAILED with its last event
 *    (`max(updatedAt, heartbeatAt, failedAt)`) less than `safetyWindow` ago: kept;
 * 5. FAILED: `stale`, all its URLs (pruneReason `failed_retention`);
 * 6. SUCCEEDED and never current, and either no run is current or it succeeded after the
 *    current one: kept (publish may still be moving `_CURRENT` to it). A run that was current once
 *    (`replacedAt` set: a rollback moved `_CURRENT` back from it) is not: it is ordinary data;
 * 7. SUCCEEDED: the kept set is the newest `keepRuns` by `succeededAt` (ties: the greater runId
 *    is newer) plus the current run, never pruned (retention included: the newest keepRuns are a
 *    safety rail); outside it, once its last event is older than the safety window: `retention`
 *    when `updatedAt` is more than `retention` ago, else `keep_runs`.
 *
 * So a run is in at most one action, and the kinds never compete: `fail_stale` takes only active
 * runs, `stale` only FAILED ones, and a SUCCEEDED run beyond keepRuns is `retention` when it is
 * also past retention (the more telling reason), else `keep_runs`. A run that would be pruned but has no `runUrls` entry is kept.
 * A timestamp in the future, or an invalid one, never makes its own run collectable sooner (an
 * invalid `succeededAt` ranks as the newest).
 *
 * The URLs of a pruned run are its manifest URL (first: the marker goes before what it names; the
 * recorded one, else where publish writes it, see `allUrls`),
 * its attempt URLs and winner URLs, each mapped under
 * the root with `keyUnderRoot` and deduplicated across the plan. A URL that escapes the root, is
 * reserved (`_CURRENT`, `_archive/…`, the bare `data`/`manifests` areas), or equals, contains or
 * lies inside (segment-wise) any URL of a run that is not pruned by this plan, or the current
 * manifest, is left out and reported in `protected`. So the winners of a SUCCEEDED run are only
 * ever planned when that run is pruned; those of a FAILED run (selected before its publish failed,
 * never published) go with it. Throws ValidationError only for an invalid `now`, policy or root.
 *
 * `fail_stale` on a PUBLISHING run races a publisher that is merely slow: append its RunFailed
 * with the run stream's expected version, so that one of the two loses with a ConcurrencyError.
 *
 * @example
 * ```ts
 * const plan = planGc({ now: new Date(), dataset, runs, floors, runUrls })
 * // plan.actions   → [{ kind: "keep_runs", runId: "r1", urls: [...], pruneReason: "keep_runs", reason: "…" }]
 * // plan.protected → [{ runId: "r3", why: "current run: _CURRENT points to it" }, …]
 * ```
 */
export function planGc(input: GcInput): GcPlan {
  const { dataset, runUrls } = input;
  const root = parseDatasetRoot(dataset.root);
  const decide = retentionDecider(input);
  const runs: RunView[] = [];
  const seen = new Set<string>();
  for (const run of input.runs) {
    if (seen.has(run.runId)) continue;
    seen.add(run.runId);
    runs.push(run);
  }

  const protectedList: GcProtection[] = [];
  const planned: { run: RunView; kind: GcActionKind; reason: string }[] = [];
  for (const run of runs) {
    const d = decide(run);
    if ("keep" in d) protectedList.push({ runId: run.runId, why: d.keep });
    else if (d.act !== "fail_stale" && !runUrls.has(run.runId)) {
      protectedList.push({
        runId: run.runId,
        why: `would be pruned (${d.act}), but no URLs are recorded for it`,
      });
    } else planned.push({ run, kind: d.act, reason: d.reason });
  }

  const pruned = new Set(planned.filter((p) => p.kind !== "fail_stale").map((p) => p.run.runId));
  // A run's manifest is the marker that names its data: it goes first, and a run whose manifest
  // cannot go (a URL of a run that stays overlaps it) is not pruned at all, or the marker would
  // outlive its data. Such a run stays, so its URLs are live for the others: until no more stay.
  const markerStays = new Map<string, string>();
  let live = liveIndex(root, runUrls, pruned, dataset.currentManifestUrl);
  for (let staying = true; staying; ) {
    staying = false;
    for (const runId of pruned) {
      const manifest = manifestUrlOf(root, runId, runUrls.get(runId)!);
      if (manifest === null) continue;
      const c = comparable(root, manifest);
      const hit = c.key === null ? null : live.find(c);
      const why =
        c.key === null
          ? (c.escapeReason ?? `it is not under the dataset root ${root.url}`)
          : hit && `it ${hit.relation} ${hit.url} of ${hit.label}, which is not pruned`;
      if (!why) continue;
      pruned.delete(runId);
      markerStays.set(runId, `its manifest ${manifest} cannot be deleted first: ${why}`);
      staying = true;
    }
    if (staying) live = liveIndex(root, runUrls, pruned, dataset.currentManifestUrl);
  }

  // In action order, so which of two pruned runs that share a URL gets it does not depend on the
  // order the runs were given in.
  planned.sort((a, b) => KIND_ORDER[a.kind] - KIND_ORDER[b.kind] || compareIds(a.run.runId, b.run.runId));
  const planKeys = new Set<string>();
  const actions: GcAction[] = [];
  for (const { run, kind, reason } of planned) {
    const urls: string[] = [];
    const stays = markerStays.get(run.runId);
    if (stays !== undefined) {
      protectedList.push({
        runId: run.runId,
        why: `not ${kind === "stale" ? "collected" : "pruned"}: ${stays}`,
      });
      continue;
    }
    if (kind !== "fail_stale") {
      const manifest = manifestUrlOf(root, run.runId, runUrls.get(run.runId)!);
      for (const url of allUrls(root, run.runId, runUrls.get(run.runId)!)) {
        const c = comparable(root, url);
        const refuse = (why: string) =>
          protectedList.push({ runId: run.runId, why: `url ${url} is not deleted: ${why}` });
        if (c.key === null) {
          refuse(c.escapeReason ?? `it is not under the dataset root ${root.url}`);
          continue;
        }
        if (planKeys.has(c.key)) continue;
        const reserved = reservedKeyReason(c.key);
        if (reserved !== null) {
          refuse(reserved);
          continue;
        }
        const hit = live.find(c);
        if (hit !== null) {
          refuse(`it ${hit.relation} ${hit.url} of ${hit.label}, which is not pruned`);
          continue;
        }
        // As the deletion guard judges it: a run's data goes from run data areas only, and its own
        // manifest is the one key outside them. (A legacy url at another run's manifest, planned
        // here as this run's, left that run's prune without its marker.)
        if (url !== manifest && !inRunDataArea(c.key)) {
          refuse("it lies outside every run's data area (_CURRENT, manifests, the archive)");
          continue;
        }
        planKeys.add(c.key);
        urls.push(url);
      }
    }
    actions.push({
      kind,
      runId: run.runId,
      urls,
      pruneReason: kind === "fail_stale" ? null : PRUNE_REASON[kind],
      reason,
    });
  }
  return { actions, protected: protectedList };
}

/**
 * The gc decision for one run of a dataset, as {@link planGc} makes it: `act` with the action's
 * kind, or `keep` with the reason. Pure. Maintenance calls it again on fresh state right before
 * it acts, so a decision is only carried out while it still holds.
 *
 * @example
 * ```ts
 * const decide = retentionDecider({ now, dataset, runs, floors })
 * const d = decide(run) // { act: "keep_runs", reason: "…" } or { keep: "current run: …" }
 * ```
 */
export function retentionDecider(input: Omit<GcInput, "runUrls">): (run: RunView) => RetentionDecision {
  const { dataset } = input;
  const now = validNow(input.now);
  const policies = {
    ...validPolicies(dataset.policies),
    safetyWindowMs: effectiveSafetyWindowMs(dataset, now),
  };
  const runs = input.runs;
  const pointed = input.pointerRunId ?? null;
  const isCurrent = (run: RunView) => run.runId === dataset.currentRunId || run.current;
  const kept = keptSucceeded(runs, dataset, policies.keepRuns, isCurrent);
  // The dataset row names the current run; a stray `current` flag protects its run but is no
  // reference point for "newer than the current run".
  const current =
    runs.find((r) => r.runId === dataset.currentRunId && r.datasetId === dataset.datasetId) ?? null;
  const floorUntil = new Map<string, number>();
  for (const floor of input.floors) {
    const until = floor.protectedUntil.getTime();
    const prev = floorUntil.get(floor.runId);
    // An invalid date protects forever (NaN is kept as the "largest").
    floorUntil.set(floor.runId, prev === undefined || Number.isNaN(until) ? until : Math.max(prev, until));
  }

  return (run: RunView): RetentionDecision => {
    if (run.datasetId !== dataset.datasetId) {
      return { keep: `belongs to dataset ${run.datasetId}, not ${dataset.datasetId}` };
    }
    if (isCurrent(run)) return { keep: "current run: _CURRENT points to it" };
    if (run.runId === pointed) {
      return { keep: "named by _CURRENT in the object store (the log has not recorded that move)" };
    }

    if (run.status === "STARTED" || run.status === "PUBLISHING") {
      if (run.status === "PUBLISHING" && manifestRecorded(run)) {
        return {
          keep: `active: publishing with its manifest recorded (${run.publishProgress}); only publish may finish it`,
        };
      }
      const lastSign = latest(run.heartbeatAt, run.updatedAt);
      const silent = now - lastSign;
      if (silent > policies.staleAfterMs) {
        return {
          act: "fail_stale",
          reason: `${run.status} and silent for ${span(silent)} (last sign of life ${iso(lastSign)}), longer than staleAfter ${span(policies.staleAfterMs)}`,
        };
      }
      return {
        keep: `active (${run.status}): last sign of life ${iso(lastSign)}, within staleAfter ${span(policies.staleAfterMs)}`,
      };
    }

    const floor = floorUntil.get(run.runId);
    if (floor !== undefined && !(now >= floor)) {
      return { keep: `inside the failed-retention floor until ${iso(floor)}` };
    }
    if (run.status === "FAILED") {
      const failedAt = (run.failedAt ?? run.updatedAt).getTime();
      const until = failedAt + policies.failedRetentionMs;
      if (!(now >= until)) return { keep: `inside the failed-retention floor until ${iso(until)}` };
    }
    if (run.replacedAt !== null) {
      const until = run.replacedAt.getTime() + policies.safetyWindowMs;
      if (!(until <= now)) {
        return {
          keep: `inside the safety window: replaced as current at ${iso(run.replacedAt.getTime())}, kept until ${iso(until)}`,
        };
      }
    }

    if (run.status === "FAILED") {
      const lastEvent = latest(run.updatedAt, run.heartbeatAt, run.failedAt);
      const until = lastEvent + policies.safetyWindowMs;
      if (!(until <= now)) {
        return {
          keep: `inside the safety window: last event at ${iso(lastEvent)}, kept until ${iso(until)}`,
        };
      }
      const failedAt = (run.failedAt ?? run.updatedAt).getTime();
      return {
        act: "stale",
        reason: `failed ${span(now - failedAt)} ago (${iso(failedAt)}), past the failed-retention floor of ${span(policies.failedRetentionMs)}`,
      };
    }

    if (run.status === "SUCCEEDED") {
      // A run that succeeded after the current one and was never current is on its way to becoming
      // current (its `_CURRENT` write may be slow, or failed and will be resumed): never pruned.
      if (run.replacedAt === null && (current === null || succeededTime(run) > succeededTime(current))) {
        return {
          keep:
            current === null
              ? "succeeded and no run is current yet: publish may still move _CURRENT to it"
              : `succeeded after the current run ${current.runId} and never current: publish may still move _CURRENT to it`,
        };
      }
      const rank = kept.get(run.runId);
      if (rank !== undefined) {
        // The newest keepRuns (and the current run) are a safety rail, not a preference:
        // retention never takes them, however old.
        return {
          keep:
            rank > policies.keepRuns
              ? `current run (kept beside the newest ${policies.keepRuns})`
              : `one of the newest keepRuns (${rank} of ${policies.keepRuns} kept)`,
        };
      }
      const lastEvent = latest(run.updatedAt, run.succeededAt);
      if (!(lastEvent + policies.safetyWindowMs <= now)) {
        return {
          keep: `inside the safety window: last event at ${iso(lastEvent)}, kept until ${iso(lastEvent + policies.safetyWindowMs)}`,
        };
      }
      // The age is the run's success, not its last event: cleanup and gc record events on the run
      // (a first prune's failed deletion among them), and they must not turn a retention prune
      // into a keep_runs one between two passes. (Only the reason depends on it: a run beyond the
      // newest keepRuns is pruned either way.)
      const succeeded = succeededTime(run);
      const age = now - succeeded;
      if (age > policies.retentionMs) {
        return {
          act: "retention",
          reason: `beyond the newest ${policies.keepRuns} succeeded run(s) and succeeded ${span(age)} ago (${iso(succeeded)}), older than retention ${span(policies.retentionMs)}`,
        };
      }
      return {
        act: "keep_runs",
        reason: `older than the ${policies.keepRuns} succeeded run(s) kept (keepRuns ${policies.keepRuns}); succeeded at ${iso(succeededTime(run))}`,
      };
    }
    return { keep: `status ${String(run.status)} is not collected by gc` };
  };
}

/** The SUCCEEDED runs inside keepRuns, with their rank (1 = kept first). */
function keptSucceeded(
  runs: readonly RunView[],
  dataset: DatasetView,
  keepRuns: number,
  isCurrent: (run: RunView) => boolean,
): Map<string, number> {
  const succeeded = runs.filter((r) => r.status === "SUCCEEDED" && r.datasetId === dataset.datasetId);
  // Newest first; an invalid time counts as the newest, so it is kept rather than pruned.
  const time = (r: RunView) => {
    const t = succeededTime(r);
    return Number.isNaN(t) ? Number.POSITIVE_INFINITY : t;
  };
  succeeded.sort((a, b) => {
    const ta = time(a);
    const tb = time(b);
    return ta === tb ? compareIds(b.runId, a.runId) : tb > ta ? 1 : -1;
  });
  const kept = new Map<string, number>();
  // The newest keepRuns succeeded runs, plus the current run whatever its age (it may be older
  // than all of them after a rollback, or when the clock put it in the past).
  for (const r of succeeded) {
    if (kept.size >= keepRuns) break;
    kept.set(r.runId, kept.size + 1);
  }
  for (const r of succeeded) if (isCurrent(r) && !kept.has(r.runId)) kept.set(r.runId, kept.size + 1);
  return kept;
}

const succeededTime = (r: RunView): number => (r.succeededAt ?? r.updatedAt).getTime();

function manifestRecorded(run: RunView): boolean {
  return run.publishProgress === "manifest_published" || run.publishProgress === "succeeded";
}

/**
 * The manifest first: it is the marker that names the data, so it goes before the data does. It
 * is where publish writes it even when no event records it: a publish whose record of the manifest
 * was refused after it had put the object (the run failed meanwhile: gc's `fail_stale`, a crash)
 * leaves a manifest that only its path names, and it must not outlive the data it lists. Deleting
 * a manifest that was never written deletes nothing.
 */
function* allUrls(root: DatasetRoot, runId: string, urls: RunUrls): Iterable<string> {
  const manifest = manifestUrlOf(root, runId, urls);
  if (manifest !== null) yield manifest;
  yield* urls.attemptUrls;
  yield* urls.winnerUrls;
}

/** Every URL of the runs that stay (not in `pruned`), and the current manifest. */
function liveIndex(
  root: DatasetRoot,
  runUrls: ReadonlyMap<string, RunUrls>,
  pruned: ReadonlySet<string>,
  currentManifestUrl: string | null,
): OverlapIndex<string> {
  const live = new OverlapIndex<string>();
  for (const [runId, urls] of runUrls) {
    if (pruned.has(runId)) continue;
    for (const url of allUrls(root, runId, urls)) live.add(comparable(root, url), `run ${runId}`);
  }
  if (currentManifestUrl !== null) live.add(comparable(root, currentManifestUrl), "the current manifest");
  return live;
}

/** Whether a root-relative key is a run's data area (`data/<runId>`) or lies inside one. */
function inRunDataArea(key: string): boolean {
  return runOfDataKey(key) !== null || /^data\/[^/]+$/.test(key);
}

/** The run's manifest: where its record says, else where publish writes it (null: nowhere). */
function manifestUrlOf(root: DatasetRoot, runId: string, urls: RunUrls): string | null {
  return urls.manifestUrl ?? pathOfManifest(root, runId);
}

/**
 * Where publish writes the run's manifest, or null for a run id that makes no safe key (ids are
 * validated at the boundary; one recorded by another writer of the log is not refused here: gc of
 * the dataset goes on, and such a run's manifest path cannot exist).
 */
function pathOfManifest(root: DatasetRoot, runId: string): string | null {
  try {
    return urlForKey(root, manifestKey(runId));
  } catch {
    return null;
  }
}

/** The latest of some timestamps; NaN when any is invalid, which makes every "old enough" test false. */
function latest(...dates: (Date | null)[]): number {
  let out = Number.NEGATIVE_INFINITY;
  for (const d of dates) {
    if (d === null) continue;
    const t = d.getTime();
    if (Number.isNaN(t)) return Number.NaN;
    out = Math.max(out, t);
  }
  return out;
}

const compareIds = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

function validNow(now: Date): number {
  const t = now instanceof Date ? now.getTime() : Number.NaN;
  if (Number.isNaN(t)) throw new ValidationError("now", "must be a valid Date");
  return t;
}

function validPolicies(p: DatasetView["policies"]): DatasetView["policies"] {
  const check = (field: keyof DatasetView["policies"], ok: boolean, rule: string) => {
    if (!ok) throw new ValidationError(`policies.${field}`, `must be ${rule}, got ${String(p[field])}`);
  };
  const duration = (v: number, min: number) => Number.isSafeInteger(v) && v >= min;
  check("keepRuns", Number.isSafeInteger(p.keepRuns) && p.keepRuns >= 1, "an integer ≥ 1");
  check("retentionMs", duration(p.retentionMs, 1), "a positive integer (ms)");
  check("failedRetentionMs", duration(p.failedRetentionMs, 1), "a positive integer (ms)");
  check("staleAfterMs", duration(p.staleAfterMs, 1), "a positive integer (ms)");
  check("safetyWindowMs", duration(p.safetyWindowMs, 0), "a non-negative integer (ms)");
  return p;
}

const iso = (t: number): string => (Number.isFinite(t) ? new Date(t).toISOString() : "an invalid time");

/** A duration for people, its two largest units: `3d 4h`, `12m 5s`, `850ms`. */
function span(ms: number): string {
  if (!Number.isFinite(ms)) return "an unknown time";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  let rest = Math.floor(ms / 1000);
  const parts: string[] = [];
  for (const [unit, size] of [
    ["d", 86_400],
    ["h", 3_600],
    ["m", 60],
    ["s", 1],
  ] as const) {
    const n = Math.floor(rest / size);
    rest -= n * size;
    if (n > 0) parts.push(`${n}${unit}`);
  }
  return parts.slice(0, 2).join(" ");
}
