/**
 * The intended semantics the safety oracle (safety-oracle.ts) relies on where the implementation
 * may spell them differently after a fix: how a URL is canonicalised, which stream holds what,
 * and the few readings of SPEC "Safety rails" that are a judgement call. This is the ONE place
 * to adjust them; the oracle imports everything it assumes from here.
 */

/**
 * Readings of the SPEC that the oracle enforces. Each one is a rule of SPEC "Safety rails" or
 * "Cleanup"; flip one only when the SPEC says otherwise.
 *
 * @example
 * ```ts
 * if (INTENDED.retentionMayPruneKeptRuns) { … }
 * ```
 */
export const INTENDED = Object.freeze({
  /**
   * SPEC "Safety rails" lists "the newest `keepRuns` SUCCEEDED runs" as protected, never
   * negotiable; SPEC "Cleanup" 4 prunes terminal runs older than `retention`. The oracle reads the
   * rail as the stronger rule: retention never takes one of the newest keepRuns runs.
   */
  retentionMayPruneKeptRuns: false,
  /**
   * A run is "silent" (SPEC "Run lifecycle": staleAfter) only when nothing at all came from its
   * writer: a heartbeat, a start, a reopen, and also an attempt report.
   */
  reportsAreSignsOfLife: true,
  /** SPEC: "Losers of a just-published run are not subject to [the safety window]". */
  losersExemptFromSafetyWindow: true,
  /**
   * A reported attempt url is the writer's claim that what lies under it is that attempt's output
   * (the ledger cannot tell who wrote an object): a loser's url covers its objects, whoever wrote
   * them, so they share the loser's exemption from the safety window.
   */
  reportedUrlClaimsItsObjects: true,
});

/**
 * Whether `url` lies strictly inside run `runId`'s own data area `data/<runId>/` under `root`
 * (SPEC "Safety rails"; issue "Safety core" item 12): an attempt url anywhere else — `data/`,
 * `_CURRENT`, a manifest, another run's data — is refused at report time with a SafetyRailError.
 *
 * @example
 * ```ts
 * insideRunArea("file:///lake/a", "r1", "FILE:///lake/a/data/r1/shard=00000/attempt=00") // true
 * insideRunArea("file:///lake/a", "r1", "file:///lake/a/data/r2/shard=00000/attempt=00") // false
 * ```
 */
export function insideRunArea(root: string, runId: string, url: string): boolean {
  const key = keyOf(root, url);
  return key?.startsWith(`data/${runId}/`) ?? false;
}

/** The stream that holds a run's events (SPEC is silent; see src/ledger/streams.ts). */
export const runStreamId = (runId: string): string => `run-${runId}`;
/** The stream that holds a dataset's registration and `_CURRENT` moves. */
export const datasetStreamId = (datasetId: string): string => `dataset-${datasetId}`;

/** Root-relative keys of the objects publish writes (SPEC "Object-store layout"). */
export const CURRENT_KEY = "_CURRENT";
/** @example `manifestKeyOf("r1") // "manifests/r1.json"` */
export const manifestKeyOf = (runId: string): string => `manifests/${runId}.json`;

/**
 * A URL split into its canonical parts (SPEC "Safety rails": "Every URL is reduced to one
 * canonical form when it enters (scheme and bucket case, percent-encoding, trailing slash)"):
 * lower-case scheme and bucket, every path segment percent-decoded, trailing slashes dropped.
 * `null` for what has no canonical form (another scheme, `.`/`..` or empty segments, a decoded
 * `/`, bad percent-encoding, a query or fragment).
 */
interface CanonicalUrl {
  scheme: "file" | "s3";
  bucket: string;
  segments: string[];
}

function canonicalUrl(url: string): CanonicalUrl | null {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)$/.exec(url);
  if (!m) return null;
  const scheme = m[1]!.toLowerCase();
  if (scheme !== "file" && scheme !== "s3") return null;
  const authority = m[2]!;
  if (scheme === "file" && authority !== "") return null;
  if (scheme === "s3" && authority === "") return null;
  const path = m[3]!.replace(/\/+$/, "");
  const raw = path === "" ? [] : path.replace(/^\//, "").split("/");
  const segments: string[] = [];
  for (const s of raw) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(s);
    } catch {
      return null;
    }
    if (decoded === "" || decoded === "." || decoded === ".." || decoded.includes("/")) return null;
    segments.push(decoded);
  }
  return { scheme, bucket: authority.toLowerCase(), segments };
}

/**
 * The root-relative key a URL names under a dataset root, in canonical form, or `null` when it
 * does not lie strictly under the root. This is what a recorded URL means to the oracle: a prefix
 * (a directory of objects) or one object, whichever exists.
 *
 * @example
 * ```ts
 * keyOf("file:///lake/a", "FILE:///lake/a/data/r1/shard=00000/attempt=00/part%20%230") // "data/r1/shard=00000/attempt=00/part #0"
 * keyOf("file:///lake/a", "file:///lake/ab/x") // null
 * ```
 */
export function keyOf(root: string, url: string): string | null {
  const r = canonicalUrl(root);
  const u = canonicalUrl(url);
  if (!r || !u || r.scheme !== u.scheme || r.bucket !== u.bucket) return null;
  if (u.segments.length <= r.segments.length) return null;
  if (!r.segments.every((s, i) => u.segments[i] === s)) return null;
  return u.segments.slice(r.segments.length).join("/");
}

/**
 * Whether the canonical key `prefix` names `key` itself or one of its ancestors, segment-wise
 * (`…/attempt=01` does not cover `…/attempt=010`).
 *
 * @example
 * ```ts
 * covers("data/r1/shard=00000", "data/r1/shard=00000/attempt=00/part-0") // true
 * covers("data/r1/shard=0", "data/r1/shard=00000/x") // false
 * ```
 */
export function covers(prefix: string, key: string): boolean {
  return key === prefix || key.startsWith(`${prefix}/`);
}
