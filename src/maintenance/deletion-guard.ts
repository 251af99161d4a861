/**
 * The last word before anything is deleted: is this key still unprotected, on fresh state? Pure —
 * the maintenance service gathers the facts (fresh registry rows, the floors, fresh run states)
 * right before each deletion and asks. Planning decided what to delete; this decides whether it
 * may still be deleted now.
 */
import { effectiveSafetyWindowMs } from "../datasets/safety-window.js";
import type { RunState } from "../machines/run-state.js";
import type { DatasetView, RetentionFloor, RunView } from "../projections/views.js";
import { type DatasetRoot, keyUnderRoot, parseDatasetRoot } from "../storage/dataset-url.js";
import { manifestKey, runOfDataKey } from "../storage/object-layout.js";
import { type GcActionKind, retentionDecider } from "./gc-planner.js";
import { writerAtWork } from "./orphan-planner.js";

/**
 * Why a deletion is attempted: a loser of a published run, an orphan under a published run, or
 * the data of a run gc prunes (`stale`, `keep_runs`, `retention`).
 *
 * @example
 * ```ts
 * const purpose: DeletionPurpose = "loser"
 * ```
 */
export type DeletionPurpose = "loser" | "orphan" | Exclude<GcActionKind, "fail_stale">;

/**
 * A URL recorded by a run outside that run's own data area (written before attempt urls were
 * confined to `data/<runId>/`): it can overlap another run's data, so every deletion is checked
 * against it.
 *
 * @example
 * ```ts
 * const f: ForeignUrl = { runId: "r1", key: "data/r2/shard=00000/attempt=00", winner: true }
 * ```
 */
export interface ForeignUrl {
  readonly runId: string;
  readonly key: string;
  readonly winner: boolean;
}

/**
 * Everything {@link deletionRefusal} looks at. `runs`, `floors`, `dataset` and `states` must be
 * read right before the deletion; `foreign` may be read once per pass (new reports can only add
 * URLs inside their own run's area).
 *
 * @example
 * ```ts
 * const facts: GuardFacts = { now, dataset, runs, floors, states: new Map([[runId, state]]), foreign: [] }
 * ```
 */
export interface GuardFacts {
  readonly now: Date;
  readonly dataset: DatasetView;
  readonly runs: readonly RunView[];
  readonly floors: readonly RetentionFloor[];
  /** Fresh states of the item's run and of the run whose data area holds the key. */
  readonly states: ReadonlyMap<string, RunState>;
  readonly foreign: readonly ForeignUrl[];
  /**
   * The run the store's `_CURRENT` names, read right before a prune (`runId` null: no pointer, or
   * none that names a run): a rollback that crashed after writing it left a move the log never
   * recorded, which only the store knows. `unreadable`: the read failed, and a prune waits. Absent:
   * not read; then no prune goes.
   */
  readonly pointer?: { readonly runId: string | null } | { readonly unreadable: string };
}

/**
 * One deletion about to happen: `key` (root-relative; a prefix without its trailing slash, or one
 * object) on behalf of run `runId`.
 *
 * @example
 * ```ts
 * const item: GuardedDeletion = { runId: "r1", key: "data/r1/shard=00000/attempt=01", purpose: "loser" }
 * ```
 */
export interface GuardedDeletion {
  readonly runId: string;
  readonly key: string;
  readonly purpose: DeletionPurpose;
  /**
   * For a prune: the run's gc decision was already re-made on fresh state before the first
   * deletion of this prune (its manifest). Once the marker is gone nothing can make the run
   * current again, and the prune's own events must not make it look "recently updated".
   */
  readonly decisionConfirmed?: boolean;
}

/**
 * Why `item` must not be deleted now, or `null` when it may. Refused, whatever was planned:
 *
 * - a key outside every run's data area (`_CURRENT`, manifests, the archive, `data/` itself),
 *   except the manifest of the run being pruned;
 * - a run gc prunes that gc would no longer prune on these facts (it became current, a newer
 *   run's publish failed, it was reopened, …);
 * - a key in another live run's data area;
 * - a key that equals, contains or lies inside a winner of a run that is not pruned (a pruned
 *   run's own winners go with it);
 * - a key inside the area of a run that is active, or FAILED inside its floor or safety window;
 * - a loser or an orphan of a run with a winner whose url is unknown (its data may be anywhere in
 *   the run's area);
 * - a key overlapping a URL another run recorded outside its own area that is still protected;
 * - a prune of the run the store's `_CURRENT` names, or any prune while that is unknown.
 *
 * @example
 * ```ts
 * const why = deletionRefusal({ runId, key, purpose: "loser" }, facts)
 * if (why !== null) recordRefused(why)
 * ```
 */
export function deletionRefusal(item: GuardedDeletion, facts: GuardFacts): string | null {
  const root = parseDatasetRoot(facts.dataset.root);
  const pruning = item.purpose !== "loser" && item.purpose !== "orphan";
  const isOwnManifest = pruning && item.key === manifestKey(item.runId);
  const area = isOwnManifest ? item.runId : areaOf(item.key);
  if (area === null) return "it lies outside every run's data area (_CURRENT, manifests, the archive)";
  const byId = new Map(facts.runs.map((r) => [r.runId, r]));

  const pointed = facts.pointer && "runId" in facts.pointer ? facts.pointer.runId : null;
  if (pruning) {
    const run = byId.get(item.runId);
    if (!run) return `run ${item.runId} is no longer in the registry`;
    if (run.status !== "SUCCEEDED" && run.status !== "FAILED") return `run ${item.runId} is ${run.status}`;
    // Even once its manifest is gone: readers follow _CURRENT to this run's data.
    if (!facts.pointer) return "the store's _CURRENT was not read";
    if ("unreadable" in facts.pointer)
      return `the store's _CURRENT could not be read: ${facts.pointer.unreadable}`;
    if (pointed === item.runId) {
      return `run ${item.runId} is named by _CURRENT in the object store (the log has not recorded that move)`;
    }
  }
  if (pruning && !item.decisionConfirmed) {
    const run = byId.get(item.runId) as RunView;
    const decision = retentionDecider({ ...facts, pointerRunId: pointed })(run);
    if ("keep" in decision) return `run ${item.runId} is kept now: ${decision.keep}`;
    if (decision.act !== item.purpose) {
      return `run ${item.runId} is no longer due for ${item.purpose} (now: ${decision.act})`;
    }
  } else if (!pruning) {
    // (A prune whose decision was confirmed before its manifest went takes the whole run, whatever
    // its status and its winners: the rules below are a loser's and an orphan's.)
    const state = facts.states.get(item.runId);
    if (state?.status !== "SUCCEEDED") {
      return `run ${item.runId} is ${state?.status ?? "unknown"}; only a SUCCEEDED run's ${item.purpose}s are deleted`;
    }
    // A winner whose url is unknown may lie anywhere in the run's area — under a loser's url too
    // (a writer that reported a loser at the winner's directory): nothing in the area is deleted
    // on the run's behalf until the whole run goes.
    if ([...state.winners.values()].some((w) => w.url === null)) {
      return `run ${item.runId} has a winner with no url: its data may lie anywhere in the run's area`;
    }
    if (item.purpose === "orphan") {
      const why = writerAtWork(state, facts);
      if (why !== null) return why;
    }
  }

  if (area !== item.runId) {
    const owner = byId.get(area);
    const ownerState = facts.states.get(area);
    if (owner || (ownerState && ownerState.status !== "NONE" && ownerState.status !== "PRUNED")) {
      return `it lies in the data area of run ${area}, not of run ${item.runId}`;
    }
  }
  const areaRun = byId.get(area);
  if (areaRun && area !== item.runId) {
    const why = wholeAreaProtection(areaRun, facts);
    if (why !== null) return why;
  }

  for (const [runId, state] of facts.states) {
    if (state.status === "PRUNED" || state.status === "NONE") continue;
    if (pruning && runId === item.runId) continue;
    const hit = winnerOverlap(root, state, item.key);
    if (hit !== null) return `it ${hit.relation} the winner ${hit.url} of run ${runId}`;
  }

  for (const f of facts.foreign) {
    if (f.runId === item.runId && pruning) continue;
    const relation = overlap(item.key, f.key);
    if (relation === null) continue;
    const run = byId.get(f.runId);
    if (!run) continue;
    if (f.winner) return `it ${relation} ${f.key}, a winner of run ${f.runId}`;
    const why = wholeAreaProtection(run, facts);
    if (why !== null) return `it ${relation} ${f.key}, recorded by run ${f.runId}: ${why}`;
  }
  return null;
}

/** The run whose data area holds a key: `data/<runId>/…`, or the area `data/<runId>` itself. */
function areaOf(key: string): string | null {
  const inside = runOfDataKey(key);
  if (inside !== null) return inside;
  const m = /^data\/([^/]+)$/.exec(key);
  return m ? (m[1] as string) : null;
}

/** Why every object in a run's area is protected, or null: active, or failed and still retained. */
function wholeAreaProtection(run: RunView, facts: GuardFacts): string | null {
  const now = facts.now.getTime();
  const p = facts.dataset.policies;
  if (run.status === "STARTED" || run.status === "PUBLISHING") {
    return `run ${run.runId} is active (${run.status})`;
  }
  if (run.status === "FAILED") {
    const failedAt = (run.failedAt ?? run.updatedAt).getTime();
    if (!(now >= failedAt + p.failedRetentionMs)) return `run ${run.runId} failed inside its floor`;
    const last = Math.max(run.updatedAt.getTime(), run.heartbeatAt.getTime(), failedAt);
    if (!(now >= last + effectiveSafetyWindowMs(facts.dataset, now)))
      return `run ${run.runId} is inside the safety window`;
  }
  if (facts.floors.some((f) => f.runId === run.runId && !(now >= f.protectedUntil.getTime()))) {
    return `run ${run.runId} is inside the failed-retention floor`;
  }
  return null;
}

const winnerKeyCache = new WeakMap<RunState, { stamp: string; keys: Set<string> }>();

/**
 * A run's winner keys, and every ancestor of them, cached on the state object until its selection
 * changes: a loser pass over a 100,000-shard run must not rebuild this per loser.
 */
function winnerKeys(root: DatasetRoot, state: RunState): Set<string> {
  const stamp = `${state.reopenCount}/${state.winners.size}/${state.publishProgress}`;
  const cached = winnerKeyCache.get(state);
  if (cached && cached.stamp === stamp) return cached.keys;
  const keys = new Set<string>();
  for (const w of state.winners.values()) {
    if (w.url === null) continue;
    let key: string;
    try {
      key = keyUnderRoot(root, w.url);
    } catch {
      continue;
    }
    keys.add(`=${key}`);
    const parts = key.split("/");
    for (let i = 1; i < parts.length; i++) keys.add(`<${parts.slice(0, i).join("/")}`);
  }
  winnerKeyCache.set(state, { stamp, keys });
  return keys;
}

function winnerOverlap(
  root: DatasetRoot,
  state: RunState,
  key: string,
): { relation: "is" | "contains" | "lies inside"; url: string } | null {
  const keys = winnerKeys(root, state);
  if (keys.size === 0) return null;
  if (keys.has(`=${key}`)) return { relation: "is", url: key };
  if (keys.has(`<${key}`)) return { relation: "contains", url: `${key}/…` };
  const parts = key.split("/");
  for (let i = 1; i < parts.length; i++) {
    const ancestor = parts.slice(0, i).join("/");
    if (keys.has(`=${ancestor}`)) return { relation: "lies inside", url: ancestor };
  }
  return null;
}

/** How key `a` relates to key `b`, by path segments; null when neither holds the other. */
function overlap(a: string, b: string): "is" | "contains" | "lies inside" | null {
  if (a === b) return "is";
  if (b.startsWith(`${a}/`)) return "contains";
  if (a.startsWith(`${b}/`)) return "lies inside";
  return null;
}
