import { SafetyRailError, ValidationError } from "../errors.js";
import { type DatasetRoot, parseDatasetRoot } from "../storage/dataset-url.js";

/**
 * How a root lies relative to another: the same location, strictly inside it, or strictly
 * containing it.
 *
 * @example
 * ```ts
 * const r: RootRelation = "inside"
 * ```
 */
type RootRelation = "same" | "inside" | "contains";

interface Comparable {
  scheme: string;
  /** Lower-cased: S3 bucket names are case-insensitive in practice (DNS), so `Lake` is `lake`. */
  bucket: string;
  segments: readonly string[];
}

function comparable(root: DatasetRoot): Comparable {
  return {
    scheme: root.scheme,
    bucket: (root.bucket ?? "").toLowerCase(),
    segments: root.prefix === "" ? [] : root.prefix.split("/"),
  };
}

/**
 * Where `root` lies relative to `other`, or `null` when they are disjoint. Compared by scheme,
 * bucket (case-insensitively) and whole path segments, so `s3://b/a` and `s3://b/ab` are disjoint
 * and `s3://b` contains every root in bucket `b`.
 *
 * @example
 * ```ts
 * rootRelation(parseDatasetRoot("s3://b/a/data"), parseDatasetRoot("s3://B/a")) // "inside"
 * rootRelation(parseDatasetRoot("s3://b/ab"), parseDatasetRoot("s3://b/a"))     // null
 * ```
 */
function rootRelation(root: DatasetRoot, other: DatasetRoot): RootRelation | null {
  const a = comparable(root);
  const b = comparable(other);
  if (a.scheme !== b.scheme || a.bucket !== b.bucket) return null;
  const shared = Math.min(a.segments.length, b.segments.length);
  for (let i = 0; i < shared; i++) if (a.segments[i] !== b.segments[i]) return null;
  if (a.segments.length === b.segments.length) return "same";
  return a.segments.length > b.segments.length ? "inside" : "contains";
}

/**
 * Refuses (SafetyRailError) a dataset root that is equal to, inside or containing the root of
 * another registered dataset: two datasets on overlapping roots would read each other's
 * `_CURRENT` and delete each other's runs. `registered` may include `datasetId` itself (a
 * re-registration), which is skipped. Details name both datasets and the relation.
 *
 * @example
 * ```ts
 * assertRootIsolated("b", "s3://lake/a/data", [{ datasetId: "a", root: "s3://lake/a" }]) // throws
 * ```
 */
export function assertRootIsolated(
  datasetId: string,
  root: string,
  registered: Iterable<{ datasetId: string; root: string }>,
): void {
  const mine = parseDatasetRoot(root);
  for (const other of registered) {
    if (other.datasetId === datasetId) continue;
    const theirs = parseStored(other.root);
    const relation = rootRelation(mine, theirs);
    if (relation === null) continue;
    const how =
      relation === "same"
        ? "is the root of"
        : relation === "inside"
          ? "lies inside the root of"
          : "contains the root of";
    throw new SafetyRailError(
      `dataset root ${mine.url} ${how} dataset ${other.datasetId} (${other.root}); dataset roots never coincide or nest, so ${datasetId} was not registered`,
      {
        field: "root",
        datasetId,
        root: mine.url,
        otherDatasetId: other.datasetId,
        otherRoot: other.root,
        relation,
        rule: "dataset roots never coincide or nest",
      },
    );
  }
}

/**
 * A registered root, which was valid when it was recorded. Should a stricter parser refuse it
 * now, it is still compared (loosely, by its text) rather than ignored: ignoring it would let a
 * new dataset nest with it.
 */
function parseStored(url: string): DatasetRoot {
  try {
    return parseDatasetRoot(url);
  } catch (e) {
    if (!(e instanceof ValidationError)) throw e;
    const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(.*)$/s.exec(url);
    const scheme = (m?.[1] ?? "").toLowerCase() as DatasetRoot["scheme"];
    const parts = (m?.[2] ?? url).split("/").filter((s) => s !== "");
    if (scheme === "s3") {
      const [bucket = "", ...rest] = parts;
      return { scheme, bucket, prefix: rest.join("/"), url };
    }
    return { scheme, prefix: parts.join("/"), url };
  }
}
