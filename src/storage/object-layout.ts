/**
 * Where things live under a dataset root (SPEC "Object-store layout"), and the rule that keeps a
 * run's attempts inside its own area. Pure: no I/O.
 */
import { isSafetyRailError, SafetyRailError } from "../errors.js";
import { type DatasetRoot, keyUnderRoot, parseDatasetRoot, urlForKey } from "./dataset-url.js";

/**
 * The manifest publish writes for a run.
 *
 * @example
 * ```ts
 * manifestKey("r7") // "manifests/r7.json"
 * ```
 */
export const manifestKey = (runId: string): string => `manifests/${runId}.json`;

/**
 * The pointer readers follow; written last by publish.
 *
 * @example
 * ```ts
 * await store.get(CURRENT_KEY)
 * ```
 */
export const CURRENT_KEY = "_CURRENT";

/** The folder under the root that holds every run's data area (`data/<runId>/`). */
export const DATA_AREA = "data/";

/**
 * The area a run's writers write to: every attempt URL of the run lies strictly inside it.
 *
 * @example
 * ```ts
 * runDataPrefix("r7") // "data/r7/"
 * ```
 */
export const runDataPrefix = (runId: string): string => `${DATA_AREA}${runId}/`;

/**
 * The run whose data area holds a key (`data/<runId>/…`), or null for a key outside every run's
 * area (a manifest, `_CURRENT`, the archive, or `data/` itself).
 *
 * @example
 * ```ts
 * runOfDataKey("data/r7/shard=00000/attempt=00/part-0") // "r7"
 * runOfDataKey("manifests/r7.json")                    // null
 * ```
 */
export function runOfDataKey(key: string): string | null {
  if (!key.startsWith(DATA_AREA)) return null;
  const end = key.indexOf("/", DATA_AREA.length);
  return end === -1 ? null : key.slice(DATA_AREA.length, end);
}

/**
 * The canonical URL of an attempt of `runId`, refused (SafetyRailError, details `{ url, rule }`)
 * unless it lies strictly inside the run's own data area `<root>/data/<runId>/`: not the area
 * itself, not `_CURRENT`, a manifest, the archive, `data/` or another run's data. So no attempt
 * report can ever make cleanup aim at something that is not that run's attempt data.
 *
 * @example
 * ```ts
 * attemptUrlOf("s3://lake/ev", "r7", "S3://lake/ev/data/r7/shard=00000/attempt=00/") // "s3://lake/ev/data/r7/shard=00000/attempt=00"
 * attemptUrlOf("s3://lake/ev", "r7", "s3://lake/ev/manifests/r7.json")              // throws SafetyRailError
 * ```
 */
export function attemptUrlOf(root: DatasetRoot | string, runId: string, url: string): string {
  // Parsed and split once: a group of a thousand reports canonicalises a thousand urls.
  const r = typeof root === "string" ? parseDatasetRoot(root) : root;
  let key: string;
  try {
    key = keyUnderRoot(r, url);
  } catch (e) {
    // The url is the caller's input: its refusal names the field, as every refusal of input does.
    if (isSafetyRailError(e)) throw new SafetyRailError(e.message, { ...e.details, field: "url" });
    throw e;
  }
  const area = runDataPrefix(runId);
  if (!key.startsWith(area) || key.length === area.length) {
    throw new SafetyRailError(
      `${JSON.stringify(url)} is not inside run ${runId}'s data area ${area} under the dataset root; an attempt of a run writes only there`,
      {
        field: "url",
        url,
        root: typeof root === "string" ? root : root.url,
        rule: "attempt url inside its run's data area",
        expected: area,
      },
    );
  }
  // The canonical url is the key's url (canonicalUrl = urlForKey ∘ keyUnderRoot).
  return urlForKey(r, key);
}
