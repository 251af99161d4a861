import { effectiveSafetyWindowMs, writtenInsideWindow } from "../datasets/safety-window.js";
import type { CleanupReason } from "../events/catalogue.js";
import type { DeletionPurpose } from "../maintenance/deletion-guard.js";
import { FENCED_BY_STORE, fenceStore } from "../maintenance/fenced-store.js";
import { deleteObject } from "../maintenance/object-deleter.js";
import { type DeletePrefixOptions, deletePrefix } from "../maintenance/prefix-deleter.js";
import { isExhausted, nextRetryAt } from "../maintenance/retry-policy.js";
import type { DatasetView } from "../projections/views.js";
import { keyUnderRoot, objectKeyOfUrl } from "../storage/dataset-url.js";
import { manifestKey, runDataPrefix } from "../storage/object-layout.js";
import type { ObjectInfo, ObjectStore } from "../storage/object-store.js";
import type { MaintenanceDeps, Pass } from "./maintenance-pass.js";

/** One deletion a pass works on: a loser, a pending item, a piece of a prune, an orphan. @internal */
export interface WorkItem {
  runId: string;
  url: string;
  reason: CleanupReason;
  /** Already planned by an earlier pass that did not report (a crash): resume, do not plan again. */
  planned: boolean;
  priorTries: number;
  /** The listed key of an orphan: a key is a key, never re-derived from its URL. */
  key?: string;
  /** A prune's later deletions: its gc decision was re-made before its first one. */
  decisionConfirmed?: boolean;
}

/** How one item ended. @internal */
export interface ItemOutcome {
  url: string;
  deleted: boolean;
  error: string | null;
  tries: number;
  /** Set when the guard refused the deletion on fresh state (nothing was planned or sent). */
  refused?: string;
}

/** The deletion-guard purpose of a cleanup reason. */
function purposeOf(reason: CleanupReason): DeletionPurpose {
  return reason === "failed_retention" ? "stale" : reason;
}

/**
 * Whether a cleanup item is one object (a manifest, an orphan file) rather than a prefix: an
 * object is deleted by its exact key, never as a prefix that could match its siblings.
 */
export function isObjectItem(runId: string, key: string, reason: CleanupReason): boolean {
  return reason === "orphan" || key === manifestKey(runId);
}

/** The item's root-relative key, or why it has none (a url that does not map under the root). @internal */
export function keyOf(dataset: DatasetView, item: WorkItem): { key: string } | { refused: string } {
  if (item.key !== undefined) return { key: item.key };
  try {
    return {
      key:
        item.reason === "orphan"
          ? objectKeyOfUrl(dataset.root, item.url)
          : keyUnderRoot(dataset.root, item.url),
    };
  } catch (e) {
    return { refused: e instanceof Error ? e.message : String(e) };
  }
}

/** Why the item must not be deleted now (asked of the pass's guard on fresh state), or null. @internal */
export async function itemRefusal(pass: Pass, dataset: DatasetView, item: WorkItem): Promise<string | null> {
  const k = keyOf(dataset, item);
  if ("refused" in k) return k.refused;
  const key = k.key.endsWith("/") && item.reason !== "orphan" ? k.key.slice(0, -1) : k.key;
  return pass.guard.refusal(item.runId, key, purposeOf(item.reason), {
    ...(item.decisionConfirmed ? { decisionConfirmed: true } : {}),
  });
}

/**
 * {@link itemRefusal} for a batch, on one read of fresh state (the concurrent pass judges a batch
 * of items right before it plans them). @internal
 */
export async function itemRefusals(
  pass: Pass,
  dataset: DatasetView,
  items: readonly WorkItem[],
): Promise<(string | null)[]> {
  const out: (string | null)[] = items.map(() => null);
  const requests: {
    index: number;
    runId: string;
    key: string;
    purpose: DeletionPurpose;
    decisionConfirmed?: boolean;
  }[] = [];
  for (const [index, item] of items.entries()) {
    const k = keyOf(dataset, item);
    if ("refused" in k) {
      out[index] = k.refused;
      continue;
    }
    const key = k.key.endsWith("/") && item.reason !== "orphan" ? k.key.slice(0, -1) : k.key;
    requests.push({
      index,
      runId: item.runId,
      key,
      purpose: purposeOf(item.reason),
      ...(item.decisionConfirmed ? { decisionConfirmed: true } : {}),
    });
  }
  const verdicts = await pass.guard.refusals(requests);
  for (const [i, r] of requests.entries()) out[r.index] = verdicts[i] ?? null;
  return out;
}

/**
 * What a prefix deletion for `reason` must leave alone: for anything but a loser of a just-published
 * run (which the safety window does not cover), every object written less than the dataset's safety
 * window before `now` — a writer may still be finishing it (SPEC: unreported or stale data is
 * collected only once its last write is older than the window). Undefined: spare nothing.
 * @internal
 */
export function youngObjects(
  dataset: DatasetView,
  reason: CleanupReason,
  now: Date,
): ((object: ObjectInfo) => boolean) | undefined {
  if (reason === "loser") return undefined;
  const windowMs = effectiveSafetyWindowMs(dataset, now);
  return (o) => writtenInsideWindow(o.lastModified, windowMs, now);
}

/**
 * What the deletion of a single object (an orphan, a pruned run's manifest) must leave alone: an
 * orphan written inside the window, which its writer may be writing still; not a manifest, which
 * the ledger wrote itself at publish. Undefined: spare nothing. @internal
 */
export function objectSpare(
  reason: CleanupReason,
  spare: ((object: ObjectInfo) => boolean) | undefined,
): ((object: ObjectInfo) => boolean) | undefined {
  return reason === "orphan" ? spare : undefined;
}

/** Batch deletes in flight while a run's whole area is listed on (gc of a pruned or stale run). */
const AREA_PIPELINE = 4;

/**
 * How the prefix deletion of a key of run `runId` is shaped, in the sequential and the concurrent
 * pass alike. An attempt url may name one object (a file) rather than a directory: both go. Not for
 * a run's whole area: `data/<runId>` is never an object, and listing it without its slash would
 * walk every run whose id starts with this one; that area may hold 100,000 objects, so it is
 * listed on while its pages are deleted. `spare`: what must be left alone ({@link youngObjects}).
 * @internal
 */
export function prefixShape(
  runId: string,
  key: string,
  spare: ((object: ObjectInfo) => boolean) | undefined,
): Pick<DeletePrefixOptions, "includeExactKey" | "pipeline" | "spare"> {
  const wholeArea = `${key}/` === runDataPrefix(runId);
  return {
    includeExactKey: !wholeArea,
    ...(wholeArea ? { pipeline: AREA_PIPELINE } : {}),
    // exactOptionalPropertyTypes: absent, not undefined, when nothing is spared.
    ...(spare ? { spare } : {}),
  };
}

/**
 * Justifies the deletion on fresh state (the guard), plans it (unless resuming), deletes,
 * verifies, records the outcome. A refused loser is recorded as a failed cleanup with the
 * reason, so it stays visible in the pending set and is looked at again when due. @internal
 */
export async function deleteItem(
  deps: MaintenanceDeps,
  dataset: DatasetView,
  store: ObjectStore,
  item: WorkItem,
  pass: Pass,
  signal?: AbortSignal,
): Promise<ItemOutcome> {
  const { runId, url } = item;
  const refused = await itemRefusal(pass, dataset, item);
  if (refused !== null) {
    const tries = item.priorTries + 1;
    if (item.reason === "loser") {
      await recordFailed(deps, pass, item, tries, {
        code: "Protected",
        message: `not deleted: ${refused}`,
        transient: true,
      });
    }
    deps.log?.({ level: "warn", msg: "deletion refused", datasetId: dataset.datasetId, runId, url, refused });
    return { url, deleted: false, error: `Protected: ${refused}`, tries, refused };
  }
  const key = (keyOf(dataset, item) as { key: string }).key;
  if (!item.planned) await pass.execute({ type: "planCleanup", runId, url, reason: item.reason });
  // Every request checks the lease right before it is sent (after a rate-limited store's wait).
  const fenced = fenceStore(store, () => pass.lease.assertHeld());
  // The window as it is now, not as the pass began: a policy raised meanwhile counts.
  const fresh = (await deps.queries.dataset(dataset.datasetId)) ?? dataset;
  const young = youngObjects(fresh, item.reason, deps.clock());
  const result = isObjectItem(runId, key, item.reason)
    ? await deleteObject(fenced, key, FENCED_BY_STORE, objectSpare(item.reason, young))
    : await deletePrefix(fenced, `${key}/`, {
        policy: deps.policies.deletion,
        ...prefixShape(runId, key, young),
        ...(deps.sleep ? { sleep: deps.sleep } : {}),
        ...(deps.random ? { random: deps.random } : {}),
        ...(signal ? { signal } : {}),
      });
  const tries = item.priorTries + Math.max(1, result.tries);
  if (result.status === "deleted") {
    if (item.reason === "stale") await pass.execute({ type: "recordStaleCollected", runId, url });
    else
      await pass.execute({
        type: "recordCleanupSucceeded",
        runId,
        url,
        deletedObjects: result.deletedObjects,
      });
    return { url, deleted: true, error: null, tries };
  }
  const error = result.error ?? { code: "Unknown", message: "deletion did not complete", transient: true };
  const exhausted = await recordFailed(deps, pass, item, tries, error);
  deps.log?.({
    level: "warn",
    msg: "cleanup failed",
    datasetId: dataset.datasetId,
    runId,
    url,
    code: error.code,
    tries,
    exhausted,
  });
  return { url, deleted: false, error: `${error.code}: ${error.message}`, tries };
}

/** Records a failed (or refused) cleanup with its next retry; returns whether it is exhausted. */
async function recordFailed(
  deps: MaintenanceDeps,
  pass: Pass,
  item: WorkItem,
  tries: number,
  error: { code: string; message: string; transient: boolean },
): Promise<boolean> {
  const exhausted = !error.transient || isExhausted(deps.policies.pending, tries);
  await pass.execute({
    type: "recordCleanupFailed",
    runId: item.runId,
    url: item.url,
    errorCode: error.code,
    errorMessage: error.message.slice(0, 8000),
    transient: error.transient,
    tries,
    exhausted,
    nextRetryAt: exhausted ? null : nextRetryAt(deps.policies.pending, tries, deps.clock(), deps.random),
  });
  return exhausted;
}
