/**
 * The "nothing outside the root" safety rail: parsing dataset root URLs and mapping URLs to
 * root-relative keys and back. Pure string logic, no I/O.
 *
 * A URL is decoded exactly once, where it enters: its path's percent-escapes become the key's
 * characters (`%20` → space, `%23` → `#`), and an escape that would hide a separator or a dot
 * segment (`%2F`, `%5C`, `%2E%2E`) is refused. A key — what a store lists — is never decoded: `#`,
 * `?`, `%2F`, spaces and non-ASCII in a key are just characters. {@link canonicalUrl} gives each
 * key one URL spelling, and that spelling is what the ledger stores and compares.
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
  /** The decoded path below the bucket (s3) or below `/` (file): no leading or trailing slash. */
  readonly prefix: string;
  /** The canonical URL: lower-case scheme and bucket, no trailing slash. */
  readonly url: string;
}

/** Longest key S3 accepts, in UTF-8 bytes. */
const MAX_KEY_BYTES = 1024;
const MAX_URL_LENGTH = 4096;
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const BUCKET = /^[a-z0-9][a-z0-9._-]{1,253}[a-z0-9]$/;

type Split =
  | { ok: true; scheme: "s3" | "file"; bucket?: string; segments: string[]; trailingSlash: boolean }
  | { ok: false; reason: string };

/** The checks on a URL's text before it is split: what no URL we accept may contain. */
function urlHygiene(text: string): string | null {
  if (CONTROL.test(text)) return "it contains a control character";
  if (text.includes("\\")) return "it contains a backslash";
  if (text.includes("?")) return "it contains a query string ('?'); percent-encode a '?' in a key as %3F";
  if (text.includes("#")) return "it contains a fragment ('#'); percent-encode a '#' in a key as %23";
  return null;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Decodes the percent-escapes of one path segment, exactly once. An escape that would put a
 * separator inside a segment (`%2F`, `%5C`) is refused, and so is a malformed escape or invalid
 * UTF-8: a URL must name one key, not several depending on who decodes it.
 */
function decodeSegment(
  segment: string,
  strict: boolean,
): { ok: true; text: string } | { ok: false; reason: string } {
  if (!segment.includes("%")) return { ok: true, text: segment };
  const bytes: number[] = [];
  for (let i = 0; i < segment.length; ) {
    if (segment[i] === "%") {
      const hex = segment.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) {
        return { ok: false, reason: "it contains a malformed percent-escape (write a literal '%' as %25)" };
      }
      const byte = Number.parseInt(hex, 16);
      if (byte === 0x2f || byte === 0x5c) {
        return { ok: false, reason: "it contains a percent-encoded slash or backslash" };
      }
      bytes.push(byte);
      i += 3;
    } else {
      const cp = segment.codePointAt(i) as number;
      const ch = String.fromCodePoint(cp);
      for (const b of new TextEncoder().encode(ch)) bytes.push(b);
      i += ch.length;
    }
  }
  let text: string;
  try {
    text = utf8.decode(new Uint8Array(bytes));
  } catch {
    return { ok: false, reason: "its percent-escapes are not valid UTF-8" };
  }
  // Encoded twice (`%252e`): harmless to us, who decode once, but a trick against any tool that
  // decodes again — refused, as the single-encoded separators are.
  if (strict && /%(?:25)*(?:2e|2f|5c)/i.test(text)) {
    return { ok: false, reason: "it contains a doubly percent-encoded dot, slash or backslash" };
  }
  return { ok: true, text };
}

/**
 * A URL path reduced to key segments: split on `/`, each segment percent-decoded once, then
 * checked. One trailing slash is remembered (a prefix URL, or a directory-marker key).
 */
function pathSegments(
  path: string,
  strict: boolean,
): { ok: true; segments: string[]; trailingSlash: boolean } | { ok: false; reason: string } {
  if (path === "" || path === "/") return { ok: true, segments: [], trailingSlash: false };
  let body = path.slice(1);
  const trailingSlash = body.endsWith("/");
  if (trailingSlash) body = body.slice(0, -1);
  const segments: string[] = [];
  for (const raw of body.split("/")) {
    if (raw === "") return { ok: false, reason: "it contains a double slash ('//')" };
    const decoded = decodeSegment(raw, strict);
    if (!decoded.ok) return decoded;
    if (decoded.text === "." || decoded.text === "..") {
      return { ok: false, reason: "it contains a '.' or '..' path segment (possibly percent-encoded)" };
    }
    if (CONTROL.test(decoded.text)) return { ok: false, reason: "it contains an encoded control character" };
    segments.push(decoded.text);
  }
  return { ok: true, segments, trailingSlash };
}

/**
 * Splits a URL into scheme, bucket and key segments. `strict: false` is only for URLs this module
 * wrote itself from a listed key ({@link urlForKey}): such a key may legally hold `%2e` as text.
 */
function splitUrl(url: unknown, strict = true): Split {
  if (typeof url !== "string" || url === "") return { ok: false, reason: "it is empty" };
  if (url.length > MAX_URL_LENGTH)
    return { ok: false, reason: `it is longer than ${MAX_URL_LENGTH} characters` };
  const bad = urlHygiene(url);
  if (bad !== null) return { ok: false, reason: bad };
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):(.*)$/s.exec(url);
  if (!m) return { ok: false, reason: "it has no scheme (expected s3:// or file://)" };
  const scheme = m[1]!.toLowerCase();
  const rest = m[2]!;
  if (scheme === "s3") {
    if (!rest.startsWith("//")) return { ok: false, reason: "an s3 URL must read s3://bucket/prefix" };
    const afterSlashes = rest.slice(2);
    const slash = afterSlashes.indexOf("/");
    // Bucket names are case-insensitive in URLs people type (S3 itself only has lower-case ones).
    const bucket = (slash === -1 ? afterSlashes : afterSlashes.slice(0, slash)).toLowerCase();
    const path = slash === -1 ? "" : afterSlashes.slice(slash);
    if (bucket === "") return { ok: false, reason: "the bucket is empty" };
    if (!BUCKET.test(bucket) || bucket.includes("..")) {
      return { ok: false, reason: `${JSON.stringify(bucket)} is not a valid bucket name` };
    }
    const p = pathSegments(path, strict);
    return p.ok ? { ok: true, scheme, bucket, segments: p.segments, trailingSlash: p.trailingSlash } : p;
  }
  if (scheme === "file") {
    if (!rest.startsWith("//")) {
      return { ok: false, reason: "a file URL must be absolute: file:///abs/path" };
    }
    if (!rest.startsWith("///")) {
      return { ok: false, reason: "a file URL must have an empty host: file:///abs/path" };
    }
    const p = pathSegments(rest.slice(2), strict);
    return p.ok ? { ok: true, scheme, segments: p.segments, trailingSlash: p.trailingSlash } : p;
  }
  return { ok: false, reason: `the scheme ${JSON.stringify(scheme)} is not supported (only s3 and file)` };
}

/**
 * The one spelling of a key segment inside a canonical URL: `%`, `#` and `?` escaped (they would
 * otherwise read as an escape, a fragment or a query), everything else literal.
 */
const encodeSegment = (segment: string): string =>
  segment.replace(/[%#?]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

/**
 * Parses and normalises a dataset root URL: `s3://bucket[/prefix]` or `file:///abs/path`. The
 * scheme and bucket are lower-cased, percent-escapes decoded once, one trailing slash dropped;
 * anything ambiguous is refused with a `ValidationError` on the field `root`: other schemes,
 * relative file paths, a host in a file URL, an empty bucket, `.`/`..` segments (encoded or not),
 * encoded slashes, double slashes, backslashes, control characters, query strings, fragments, and
 * the filesystem root itself.
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
  const encoded = split.segments.map(encodeSegment).join("/");
  if (split.scheme === "file") {
    if (prefix === "") throw refuse("the filesystem root '/' cannot be a dataset root");
    return Object.freeze({ scheme: "file", prefix, url: `file:///${encoded}` });
  }
  const bucket = split.bucket!;
  return Object.freeze({
    scheme: "s3",
    bucket,
    prefix,
    url: prefix === "" ? `s3://${bucket}` : `s3://${bucket}/${encoded}`,
  });
}

// Counted without encoding (a lone surrogate counts 3 bytes, as TextEncoder writes U+FFFD for it).
const utf8Length = (text: string): number => Buffer.byteLength(text, "utf8");

const asRoot = (root: DatasetRoot | string): DatasetRoot =>
  typeof root === "string" ? parseDatasetRoot(root) : root;

/** A root's key segments, split once per root: a group of reports checks a thousand urls against one root. */
const ROOT_SEGMENTS = new WeakMap<DatasetRoot, readonly string[]>();
function segmentsOfRoot(r: DatasetRoot): readonly string[] {
  let segments = ROOT_SEGMENTS.get(r);
  if (!segments) {
    segments = r.prefix === "" ? [] : r.prefix.split("/");
    ROOT_SEGMENTS.set(r, segments);
  }
  return segments;
}

function splitUnderRoot(r: DatasetRoot, url: string, strict = true): { key: string; trailingSlash: boolean } {
  const refuse = (reason: string) =>
    new SafetyRailError(
      `${JSON.stringify(url)} is not under the dataset root ${r.url}: ${reason}; refused before any request`,
      { url, root: r.url, reason, rule: "url inside the dataset root" },
    );
  const split = splitUrl(url, strict);
  if (!split.ok) throw refuse(split.reason);
  if (split.scheme !== r.scheme) throw refuse(`it uses another scheme (${split.scheme}:)`);
  if (split.bucket !== r.bucket) throw refuse(`it is in another bucket (${split.bucket ?? ""})`);
  const rootSegments = segmentsOfRoot(r);
  const inside = rootSegments.every((s, i) => split.segments[i] === s);
  if (!inside) throw refuse("it lies outside the root");
  if (split.segments.length === rootSegments.length) throw refuse("it is the root itself");
  const key = split.segments.slice(rootSegments.length).join("/");
  if (utf8Length(key) > MAX_KEY_BYTES) {
    throw refuse(`its key is longer than ${MAX_KEY_BYTES} bytes`);
  }
  return { key, trailingSlash: split.trailingSlash };
}

/**
 * The root-relative key of a URL that lies strictly under the root: the URL's path below the
 * root with its percent-escapes decoded exactly once (`a%20b` → `a b`, `%23` → `#`). Anything
 * that could escape is refused with a `SafetyRailError` naming the URL and the root (details
 * `{ url, root, reason }`): `..` (encoded or not), encoded slashes, `//`, another bucket or
 * scheme, a sibling that merely shares the root as a string prefix (`s3://b/data2` under
 * `s3://b/data`), and the root itself. One trailing slash is accepted (a prefix URL) and dropped.
 *
 * @example
 * ```ts
 * keyUnderRoot("s3://lake/events", "S3://Lake/events/data/r1/shard=00003/attempt=01/part%200.parquet")
 * // → "data/r1/shard=00003/attempt=01/part 0.parquet"
 * keyUnderRoot("s3://lake/events", "s3://lake/events2/x") // throws SafetyRailError
 * ```
 */
export function keyUnderRoot(root: DatasetRoot | string, url: string): string {
  return splitUnderRoot(asRoot(root), url).key;
}

/**
 * The canonical spelling of a URL under the root — lower-case scheme and bucket, escapes decoded
 * once and re-encoded only where a key's character would otherwise be misread (`%`, `#`, `?`), no
 * trailing slash — or a `SafetyRailError` as {@link keyUnderRoot}. Every URL is reduced to this
 * form once, when it enters, and only this form is stored and compared.
 *
 * @example
 * ```ts
 * canonicalUrl("file:///lake/ev", "FILE:///lake/ev/data/r1/shard=00000/attempt=00/") // "file:///lake/ev/data/r1/shard=00000/attempt=00"
 * canonicalUrl("s3://lake/ev", "s3://lake/ev/data/r1/a%7Eb%20c")                    // "s3://lake/ev/data/r1/a~b c"
 * ```
 */
export function canonicalUrl(root: DatasetRoot | string, url: string): string {
  const r = asRoot(root);
  return urlForKey(r, keyUnderRoot(r, url));
}

/**
 * The key of one object's URL, as {@link urlForKey} wrote it from a listed key: like
 * {@link keyUnderRoot}, but a trailing slash is kept, because `…/` directory-marker objects (s3a,
 * consoles) are keys of their own, and a key's literal `%2e` is accepted (it was never an escape).
 *
 * @example
 * ```ts
 * objectKeyOfUrl("s3://lake/ev", "s3://lake/ev/data/r1/tmp/") // "data/r1/tmp/"
 * ```
 */
export function objectKeyOfUrl(root: DatasetRoot | string, url: string): string {
  const { key, trailingSlash } = splitUnderRoot(asRoot(root), url, false);
  return trailingSlash ? `${key}/` : key;
}

/**
 * Refuses (SafetyRailError) a root-relative key that could leave the root or name something
 * else than itself: empty, a leading `/`, an empty segment (`//`) except one trailing `/` (a
 * directory-marker key), `.` or `..` segments, backslashes, control characters, or more than 1024
 * UTF-8 bytes. Everything else is a legal key — `#`, `?`, `%2F`, spaces, non-ASCII: a key listed
 * from a store is a key, not a URL, and is never decoded.
 *
 * @example
 * ```ts
 * assertSafeKey("data/r1/shard=00003/attempt=01/part #1?.parquet") // ok
 * assertSafeKey("data/../_CURRENT")                               // throws SafetyRailError
 * ```
 */
export function assertSafeKey(key: string): void {
  const reason = unsafeKeyReason(key);
  if (reason !== null) {
    throw new SafetyRailError(`key ${JSON.stringify(key)} is not a safe root-relative key: ${reason}`, {
      key,
      reason,
      rule: "safe root-relative key",
    });
  }
}

/**
 * Like {@link assertSafeKey} for a listing prefix: `""` (everything under the root) is allowed.
 *
 * @example
 * ```ts
 * assertSafePrefix("data/r1/") // ok
 * assertSafePrefix("../")      // throws SafetyRailError
 * ```
 */
export function assertSafePrefix(prefix: string): void {
  if (prefix === "") return;
  const reason = unsafeKeyReason(prefix);
  if (reason !== null) {
    throw new SafetyRailError(
      `prefix ${JSON.stringify(prefix)} is not a safe root-relative prefix: ${reason}`,
      {
        prefix,
        reason,
        rule: "safe root-relative prefix",
      },
    );
  }
}

function unsafeKeyReason(key: unknown): string | null {
  if (typeof key !== "string" || key === "") return "it is empty";
  if (key.startsWith("/")) return "it starts with '/'";
  if (CONTROL.test(key)) return "it contains a control character";
  if (key.includes("\\")) return "it contains a backslash";
  const segments = (key.endsWith("/") ? key.slice(0, -1) : key).split("/");
  if (segments.some((s) => s === "")) return "it has an empty path segment ('//')";
  if (segments.some((s) => s === "." || s === "..")) return "it contains a '.' or '..' path segment";
  if (utf8Length(key) > MAX_KEY_BYTES) return `it is longer than ${MAX_KEY_BYTES} bytes`;
  return null;
}

/**
 * The canonical URL of a root-relative key; the inverse of {@link keyUnderRoot} (and, for a
 * directory-marker key ending in `/`, of {@link objectKeyOfUrl}).
 *
 * @example
 * ```ts
 * urlForKey(parseDatasetRoot("s3://lake/events"), "manifests/r1.json") // "s3://lake/events/manifests/r1.json"
 * urlForKey("s3://lake/events", "data/r1/50%#1")                       // "s3://lake/events/data/r1/50%25%231"
 * ```
 */
export function urlForKey(root: DatasetRoot | string, key: string): string {
  assertSafeKey(key);
  // Most keys hold none of the three characters encodeSegment escapes: nothing to split then.
  const encoded = /[%#?]/.test(key) ? key.split("/").map(encodeSegment).join("/") : key;
  return `${asRoot(root).url}/${encoded}`;
}
