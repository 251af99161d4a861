/**
 * Segment-wise comparison of URLs under a dataset root, shared by the planners (internal).
 * `…/attempt=01` and `…/attempt=010` share a string prefix but no path: they never overlap.
 * URLs are compared by root-relative key and by their literal text, so that a quirk in how either
 * is spelled can only add overlaps (and refusals), never hide one.
 *
 * @internal
 */
import { type DatasetRoot, keyUnderRoot } from "../storage/dataset-url.js";

/**
 * How one URL relates to another (`"contains"`: it is an ancestor of the other).
 *
 * @internal
 * @example
 * ```ts
 * const r: Overlap = "lies inside" // ".../attempt=00/part-0" vs ".../attempt=00"
 * ```
 */
export type Overlap = "equals" | "contains" | "lies inside";

/**
 * A URL reduced to what it can be compared by: its root-relative key (when it maps under the root)
 * and its literal text split on `/` (always), so even a URL the root refuses is compared.
 *
 * @internal
 * @example
 * ```ts
 * const w = comparable(root, "s3://lake/events/data/r1/shard=00000/attempt=00")
 * ```
 */
export interface Comparable {
  readonly url: string;
  readonly key: string | null;
  /** Why the URL does not map under the root, when it does not. */
  readonly escapeReason: string | null;
  readonly keySegments: readonly string[] | null;
  readonly rawSegments: readonly string[];
}

/**
 * @internal
 * @example
 * ```ts
 * comparable(parseDatasetRoot("s3://lake/events"), "s3://lake/events/data/r1/").key // "data/r1"
 * ```
 */
export function comparable(root: DatasetRoot, url: string): Comparable {
  let key: string | null = null;
  let escapeReason: string | null = null;
  try {
    key = keyUnderRoot(root, url);
  } catch (e) {
    escapeReason = e instanceof Error ? e.message : String(e);
  }
  return {
    url,
    key,
    escapeReason,
    keySegments: key === null ? null : key.split("/"),
    rawSegments: url.replace(/\/+$/, "").split("/"),
  };
}

/**
 * Why a root-relative key must never be deleted as run data, or null: `_CURRENT`, the archive,
 * and the bare `data` and `manifests` areas (which hold every run).
 *
 * @internal
 * @example
 * ```ts
 * reservedKeyReason("manifests") // "it is the whole manifests/ area of the dataset"
 * ```
 */
export function reservedKeyReason(key: string): string | null {
  const first = key.split("/")[0];
  if (first === "_CURRENT") return "it is the dataset's _CURRENT pointer";
  if (first === "_archive") return "it lies in the dataset's _archive/";
  if (key === "data" || key === "manifests") return `it is the whole ${key}/ area of the dataset`;
  return null;
}

/**
 * Finds, among many registered URLs, one that a URL equals, contains or lies inside, in time
 * proportional to the URL's depth (not to the number registered): every registered path is
 * stored whole and as each of its ancestors.
 *
 * @internal
 * @example
 * ```ts
 * const index = new OverlapIndex<string>()
 * index.add(comparable(root, winnerUrl), "r1")
 * index.find(comparable(root, loserUrl)) // { relation: "contains", url: winnerUrl, label: "r1" } or null
 * ```
 */
export class OverlapIndex<L> {
  readonly #exact = new Map<string, { url: string; label: L }>();
  readonly #ancestors = new Map<string, { url: string; label: L }>();

  add(c: Comparable, label: L): void {
    for (const segments of spaces(c)) {
      const entry = { url: c.url, label };
      // From 2: the first segment is the space's tag, not part of the path.
      for (let i = 2; i < segments.length; i++) {
        const p = join(segments, i);
        if (!this.#ancestors.has(p)) this.#ancestors.set(p, entry);
      }
      const whole = join(segments, segments.length);
      if (!this.#exact.has(whole)) this.#exact.set(whole, entry);
    }
  }

  find(c: Comparable): { relation: Overlap; url: string; label: L } | null {
    for (const segments of spaces(c)) {
      for (let i = 2; i <= segments.length; i++) {
        const hit = this.#exact.get(join(segments, i));
        if (hit) return { relation: i === segments.length ? "equals" : "lies inside", ...hit };
      }
      const below = this.#ancestors.get(join(segments, segments.length));
      if (below) return { relation: "contains", ...below };
    }
    return null;
  }
}

/** Keys and literal text are separate spaces: a key never matches a literal URL by accident. */
function spaces(c: Comparable): string[][] {
  const out = [["raw", ...c.rawSegments]];
  if (c.keySegments !== null) out.unshift(["key", ...c.keySegments]);
  return out;
}

const join = (segments: readonly string[], n: number): string => segments.slice(0, n).join("/");
