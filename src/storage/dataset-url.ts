/**
 * The "nothing outside the root" safety rail: parsing dataset root URLs and mapping URLs to
 * root-relative keys and back. Pure string logic, no I/O.
 *
 * URLs are taken literally: no percent-decoding happens anywhere, so a key is exactly the text of
 * the URL's path below the root. Because other tools may decode, percent-encoded dots, slashes and
 * backslashes (`%2e`, `%2f`, `%5c`, also double-encoded as `%252e`, …) are refused outright.
 */
import { SafetyRailError, ValidationError } from "../errors.js";

/**
 * A parsed, normalised dataset root.
 *
 * @example
 * ```ts
 * parseDatasetRoot("s3://lake/events/") // { scheme: "s3", bucket: "lake", prefix: "events", url: "s3://lake/events" }
 * ```
 */
export interface DatasetRoot {
  readonly scheme: "s3" | "file";
  /** The bucket, for `s3` roots only. */
  readonly bucket?: string;
  /** The path below the bucket (s3) or below `/` (file): no leading or trailing slash. */
  readonly prefix: string;
  /** The normalised URL: lower-case scheme, no trailing slash. */
  readonly url: string;
}

/** Longest key S3 accepts, in UTF-8 bytes. */
const MAX_KEY_BYTES = 1024;
const MAX_URL_LENGTH = 4096;
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
/** `%2e` `.`, `%2f` `/`, `%5c` `\`, also encoded again any number of times (`%252e`, …). */
const ENCODED_SEPARATOR = /%(?:25)*(?:2e|2f|5c)/i;
const BUCKET = /^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$/;

type Split =
  | { ok: true; scheme: "s3" | "file"; bucket?: string; segments: string[] }
  | { ok: false; reason: string };

/** The checks every URL and every key share; returns the reason for refusing, or null. */
function hygiene(text: string): string | null {
  if (CONTROL.test(text)) return "it contains a control character";
  if (text.includes("\\")) return "it contains a backslash";
  if (ENCODED_SEPARATOR.test(text)) return "it contains a percent-encoded dot, slash or backslash";
  if (text.includes("?")) return "it contains a query string ('?')";
  if (text.includes("#")) return "it contains a fragment ('#')";
  return null;
}

function pathSegments(path: string): { ok: true; segments: string[] } | { ok: false; reason: string } {
  if (path === "" || path === "/") return { ok: true, segments: [] };
  let body = path.slice(1);
  if (body.endsWith("/")) body = body.slice(0, -1);
  const segments = body.split("/");
  if (segments.some((s) => s === "")) return { ok: false, reason: "it contains a double slash ('//')" };
  if (segments.some((s) => s === "." || s === "..")) {
    return { ok: false, reason: "it contains a '.' or '..' path segment" };
  }
  return { ok: true, segments };
}

function splitUrl(url: unknown): Split {
  if (typeof url !== "string" || url === "") return { ok: false, reason: "it is empty" };
  if (url.length > MAX_URL_LENGTH)
    return { ok: false, reason: `it is longer than ${MAX_URL_LENGTH} characters` };
  const bad = hygiene(url);
  if (bad !== null) return { ok: false, reason: bad };
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):(.*)$/s.exec(url);
  if (!m) return { ok: false, reason: "it has no scheme (expected s3:// or file://)" };
  const scheme = m[1]!.toLowerCase();
  const rest = m[2]!;
  if (scheme === "s3") {
    if (!rest.startsWith("//")) return { ok: false, reason: "an s3 URL must read s3://bucket/prefix" };
    const afterSlashes = rest.slice(2);
    const slash = afterSlashes.indexOf("/");
    const bucket = slash === -1 ? afterSlashes : afterSlashes.slice(0, slash);
    const path = slash === -1 ? "" : afterSlashes.slice(slash);
    if (bucket === "") return { ok: false, reason: "the bucket is empty" };
    if (!BUCKET.test(bucket) || bucket.includes("..")) {
      return { ok: false, reason: `${JSON.stringify(bucket)} is not a valid bucket name` };
    }
    const p = pathSegments(path);
    return p.ok ? { ok: true, scheme, bucket, segments: p.segments } : p;
  }
  if (scheme === "file") {
    if (!rest.startsWith("//")) {
      return { ok: false, reason: "a file URL must be absolute: file:///abs/path" };
    }
    if (!rest.startsWith("///")) {
      return { ok: false, reason: "a file URL must have an empty host: file:///abs/path" };
    }
    const p = pathSegments(rest.slice(2));
    return p.ok ? { ok: true, scheme, segments: p.segments } : p;
  }
  return { ok: false, reason: `the scheme ${JSON.stringify(scheme)} is not supported (only s3 and file)` };
}

/**
 * Parses and normalises a dataset root URL: `s3://bucket[/prefix]` or `file:///abs/path`. The
 * scheme is lower-cased and one trailing slash dropped; anything ambiguous is refused with a
 * `ValidationError` on the field `root`: other schemes, relative file paths, a host in a file URL,
 * an empty bucket, `.`/`..` segments, percent-encoded dots or slashes, double slashes, backslashes,
 * control characters, query strings, fragments, and the filesystem root itself.
 *
 * @example
 * ```ts
 * parseDatasetRoot("file:///var/lake/events/") // { scheme: "file", prefix: "var/lake/events", url: "file:///var/lake/events" }
 * parseDatasetRoot("s3://lake/a/../b")          // throws ValidationError("root", …)
 * ```
 */
export function parseDatasetRoot(url: string): DatasetRoot {
  const split = splitUrl(url);
  const refuse = (reason: string) =>
    new ValidationError(
      "root",
      `${JSON.stringify(url)} is not a valid dataset root: ${reason}; expected s3://bucket/prefix or file:///abs/path`,
      { details: { url } },
    );
  if (!split.ok) throw refuse(split.reason);
  const prefix = split.segments.join("/");
  if (split.scheme === "file") {
    if (prefix === "") throw refuse("the filesystem root '/' cannot be a dataset root");
    return Object.freeze({ scheme: "file", prefix, url: `file:///${prefix}` });
  }
  const bucket = split.bucket!;
  return Object.freeze({
    scheme: "s3",
    bucket,
    prefix,
    url: prefix === "" ? `s3://${bucket}` : `s3://${bucket}/${prefix}`,
  });
}

const encoder = new TextEncoder();
const utf8Length = (text: string): number => encoder.encode(text).length;

const asRoot = (root: DatasetRoot | string): DatasetRoot =>
  typeof root === "string" ? parseDatasetRoot(root) : root;

/**
 * The root-relative key of a URL that lies strictly under the root. Anything that could escape is
 * refused with a `SafetyRailError` naming the URL and the root (details `{ url, root, reason }`):
 * `..`, encoded dots or slashes, `//`, another bucket or scheme, a sibling that merely shares the
 * root as a string prefix (`s3://b/data2` under `s3://b/data`), and the root itself. One trailing
 * slash is accepted (a prefix URL) and dropped.
 *
 * @example
 * ```ts
 * keyUnderRoot("s3://lake/events", "s3://lake/events/data/r1/shard=00003/attempt=01/part-0.parquet")
 * // → "data/r1/shard=00003/attempt=01/part-0.parquet"
 * keyUnderRoot("s3://lake/events", "s3://lake/events2/x") // throws SafetyRailError
 * ```
 */
export function keyUnderRoot(root: DatasetRoot | string, url: string): string {
  const r = asRoot(root);
  const refuse = (reason: string) =>
    new SafetyRailError(
      `${JSON.stringify(url)} is not under the dataset root ${r.url}: ${reason}; refused before any request`,
      { url, root: r.url, reason },
    );
  const split = splitUrl(url);
  if (!split.ok) throw refuse(split.reason);
  if (split.scheme !== r.scheme) throw refuse(`it uses another scheme (${split.scheme}:)`);
  if (split.bucket !== r.bucket) throw refuse(`it is in another bucket (${split.bucket ?? ""})`);
  const rootSegments = r.prefix === "" ? [] : r.prefix.split("/");
  const inside = rootSegments.every((s, i) => split.segments[i] === s);
  if (!inside) throw refuse("it lies outside the root");
  if (split.segments.length === rootSegments.length) throw refuse("it is the root itself");
  const key = split.segments.slice(rootSegments.length).join("/");
  if (utf8Length(key) > MAX_KEY_BYTES) {
    throw refuse(`its key is longer than ${MAX_KEY_BYTES} bytes`);
  }
  return key;
}

/**
 * Refuses (SafetyRailError) a root-relative key that is not plainly a path below the root: empty,
 * a leading `/`, empty (`//`, trailing `/`), `.` or `..` segments, backslashes, percent-encoded
 * dots or slashes, control characters, `?` or `#` (every safe key has a URL that maps back to it),
 * or more than 1024 UTF-8 bytes.
 *
 * @example
 * ```ts
 * assertSafeKey("data/r1/shard=00003/attempt=01/part-0.parquet") // ok
 * assertSafeKey("data/../_CURRENT")                               // throws SafetyRailError
 * ```
 */
export function assertSafeKey(key: string): void {
  const reason = unsafeKeyReason(key);
  if (reason !== null) {
    throw new SafetyRailError(`key ${JSON.stringify(key)} is not a safe root-relative key: ${reason}`, {
      key,
      reason,
    });
  }
}

/**
 * Like {@link assertSafeKey} for a listing prefix: `""` (everything under the root) and one
 * trailing slash are allowed.
 *
 * @example
 * ```ts
 * assertSafePrefix("data/r1/") // ok
 * assertSafePrefix("../")      // throws SafetyRailError
 * ```
 */
export function assertSafePrefix(prefix: string): void {
  if (prefix === "") return;
  const reason = unsafeKeyReason(prefix.endsWith("/") ? prefix.slice(0, -1) : prefix);
  if (reason !== null) {
    throw new SafetyRailError(
      `prefix ${JSON.stringify(prefix)} is not a safe root-relative prefix: ${reason}`,
      {
        prefix,
        reason,
      },
    );
  }
}

function unsafeKeyReason(key: unknown): string | null {
  if (typeof key !== "string" || key === "") return "it is empty";
  if (key.startsWith("/")) return "it starts with '/'";
  const bad = hygiene(key);
  if (bad !== null) return bad;
  const segments = key.split("/");
  if (segments.some((s) => s === "")) return "it has an empty path segment ('//' or a trailing '/')";
  if (segments.some((s) => s === "." || s === "..")) return "it contains a '.' or '..' path segment";
  if (utf8Length(key) > MAX_KEY_BYTES) return `it is longer than ${MAX_KEY_BYTES} bytes`;
  return null;
}

/**
 * The URL of a root-relative key; the inverse of {@link keyUnderRoot}.
 *
 * @example
 * ```ts
 * urlForKey(parseDatasetRoot("s3://lake/events"), "manifests/r1.json") // "s3://lake/events/manifests/r1.json"
 * ```
 */
export function urlForKey(root: DatasetRoot | string, key: string): string {
  assertSafeKey(key);
  return `${asRoot(root).url}/${key}`;
}
