/**
 * Properties of the "nothing outside the root" rail: safe keys round-trip through URLs, every
 * escape is refused, and no accepted key ever resolves outside the root.
 */
import path from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { isSafetyRailError, isValidationError } from "../../src/errors.js";
import {
  assertSafeKey,
  canonicalUrl,
  type DatasetRoot,
  keyUnderRoot,
  objectKeyOfUrl,
  parseDatasetRoot,
  urlForKey,
} from "../../src/storage/dataset-url.js";

const chars = (s: string) => fc.constantFrom(...Array.from(s));

/** A path segment that needs no escaping: letters, digits, punctuation, non-ASCII, `%20`. */
const segment = fc
  .array(fc.oneof(chars("abcxyzABZ0129_-=.~+,;@!$&'()*: é中😀"), fc.constant("%20")), {
    minLength: 1,
    maxLength: 8,
  })
  .map((parts) => parts.join(""))
  .filter((s) => s !== "." && s !== "..");
const segments = (min: number, max: number) => fc.array(segment, { minLength: min, maxLength: max });
const bucket = fc.stringMatching(/^[a-z0-9][a-z0-9-]{1,10}[a-z0-9]$/);

const root: fc.Arbitrary<DatasetRoot> = fc.oneof(
  fc
    .tuple(bucket, segments(0, 3))
    .map(([b, p]) => parseDatasetRoot(p.length ? `s3://${b}/${p.join("/")}` : `s3://${b}`)),
  segments(1, 3).map((p) => parseDatasetRoot(`file:///${p.join("/")}`)),
);
const key = segments(1, 5).map((s) => s.join("/"));

const refusedUnder = (r: DatasetRoot, url: string): boolean => {
  try {
    keyUnderRoot(r, url);
    return false;
  } catch (e) {
    if (!isSafetyRailError(e)) throw e;
    expect(e.details).toMatchObject({ url, root: r.url });
    expect(e.message).toContain(r.url);
    return true;
  }
};

/** Randomly upper-cases the hex digits of percent escapes. */
const encodedDotDot = fc.constantFrom(
  "%2e%2e",
  "%2E%2E",
  "%2e.",
  ".%2E",
  "%252e%252e",
  "%25252e%25252E",
  "..%2f",
  "%2F",
  "a%2fb",
  "%5c..",
  "%5C",
);

describe("dataset URLs: properties", () => {
  it("a URL built from a root and safe segments maps back to its key, and the key back to the URL", () => {
    fc.assert(
      fc.property(root, key, (r, k) => {
        const url = `${r.url}/${k}`;
        // The URL's escapes are decoded exactly once into the key.
        const decoded = k.replaceAll("%20", " ");
        expect(keyUnderRoot(r, url)).toBe(decoded);
        expect(keyUnderRoot(r.url, url)).toBe(decoded);
        expect(keyUnderRoot(r, `${url}/`)).toBe(decoded);
        // The canonical URL is the decoded key, spelled literally (no '%', '#' or '?' here).
        expect(urlForKey(r, decoded)).toBe(`${r.url}/${decoded}`);
        expect(canonicalUrl(r, url)).toBe(`${r.url}/${decoded}`);
        expect(canonicalUrl(r, canonicalUrl(r, url))).toBe(canonicalUrl(r, url));
        expect(() => assertSafeKey(decoded)).not.toThrow();
        expect(parseDatasetRoot(r.url)).toEqual(r);
        expect(parseDatasetRoot(`${r.url}/`).url).toBe(r.url);
        // A root below this one (the URL itself) contains the rest of the key.
        const [first, ...rest] = k.split("/");
        if (rest.length > 0)
          expect(keyUnderRoot(`${r.url}/${first}`, url)).toBe(rest.join("/").replaceAll("%20", " "));
      }),
      { numRuns: 300 },
    );
  });

  it("refuses '..' and '.' segments anywhere, even where they would resolve back inside", () => {
    fc.assert(
      fc.property(
        root,
        segments(0, 3),
        segments(1, 3),
        fc.constantFrom("..", "."),
        (r, before, after, dots) => {
          expect(refusedUnder(r, `${r.url}/${[...before, dots, ...after].join("/")}`)).toBe(true);
          expect(refusedUnder(r, `${r.url}/${[...before, dots].join("/")}`)).toBe(true);
        },
      ),
    );
  });

  it("refuses percent-encoded dots, slashes and backslashes, in any case and any depth of encoding", () => {
    fc.assert(
      fc.property(root, segments(0, 2), encodedDotDot, segments(0, 2), (r, before, evil, after) => {
        const url = `${r.url}/${[...before, evil, ...after].join("/")}`;
        expect(refusedUnder(r, url)).toBe(true);
      }),
    );
  });

  it("refuses double slashes, backslashes, control characters, queries and fragments", () => {
    const damage = fc.constantFrom("//", "\\", "/\\", "\u0000", "\n", "\u007f", "?x=1", "#frag", "?");
    fc.assert(
      fc.property(root, key, damage, fc.nat(), (r, k, d, at) => {
        const url = `${r.url}/${k}`;
        const i = r.url.length + 1 + (at % (k.length + 1));
        expect(refusedUnder(r, url.slice(0, i) + d + url.slice(i))).toBe(true);
      }),
    );
  });

  it("refuses another bucket, another scheme, a sibling sharing the root as a string prefix, and the root", () => {
    fc.assert(
      fc.property(root, key, bucket, segment, (r, k, otherBucket, suffix) => {
        expect(refusedUnder(r, r.url)).toBe(true);
        expect(refusedUnder(r, `${r.url}/`)).toBe(true);
        if (r.scheme === "s3") {
          if (otherBucket !== r.bucket)
            expect(refusedUnder(r, `s3://${otherBucket}/${r.prefix}/${k}`)).toBe(true);
          expect(refusedUnder(r, `file:///${[r.bucket, r.prefix, k].filter(Boolean).join("/")}`)).toBe(true);
          // With an empty prefix, the sibling of s3://b is the bucket s3://b<suffix>.
          expect(refusedUnder(r, `${r.url}${suffix.replace(/[^a-z0-9]/g, "") || "x"}/${k}`)).toBe(true);
        } else {
          expect(refusedUnder(r, `s3://${otherBucket}/${r.prefix}/${k}`)).toBe(true);
          expect(refusedUnder(r, `${r.url}${suffix}/${k}`)).toBe(true);
        }
        for (const scheme of ["http", "https", "gs", "s3a", "hdfs"]) {
          expect(refusedUnder(r, `${scheme}://${r.bucket ?? "host"}/${r.prefix}/${k}`)).toBe(true);
        }
      }),
    );
  });

  it("never accepts a key that resolves outside the root, whatever the input", () => {
    const tricky = fc
      .array(
        fc.oneof(chars("/.%25efcFCa\\"), fc.constantFrom("..", "%2e", "%2f", "%5c", "//", "./", "../")),
        {
          maxLength: 12,
        },
      )
      .map((parts) => parts.join(""));
    fc.assert(
      fc.property(root, tricky, (r, tail) => {
        const dir = `/${r.prefix || r.bucket}`;
        let k: string;
        try {
          k = keyUnderRoot(r, `${r.url}/${tail}`);
        } catch (e) {
          expect(isSafetyRailError(e)).toBe(true);
          return;
        }
        expect(() => assertSafeKey(k)).not.toThrow();
        const resolved = path.posix.resolve(dir, k);
        expect(resolved.startsWith(`${dir}/`)).toBe(true);
        expect(path.posix.normalize(k)).toBe(k);
        // Even a consumer that percent-decodes the key stays inside.
        let decoded = k;
        try {
          decoded = decodeURIComponent(k);
        } catch {}
        expect(path.posix.resolve(dir, decoded).startsWith(`${dir}/`)).toBe(true);
        expect(keyUnderRoot(r, urlForKey(r, k))).toBe(k);
      }),
      { numRuns: 500 },
    );
  });

  it("gives every safe key one URL that maps back to it, and such keys resolve inside", () => {
    const tricky = fc.string({
      unit: fc.constantFrom(..."a/.%2eEfF5c\\?# é\u0000".split("")),
      maxLength: 10,
    });
    fc.assert(
      fc.property(tricky, (k) => {
        let safe = true;
        try {
          assertSafeKey(k);
        } catch (e) {
          expect(isSafetyRailError(e)).toBe(true);
          safe = false;
        }
        const r = parseDatasetRoot("s3://lake/events");
        if (!safe) return;
        // A key listed from a store ('#', '?', '%2F', spaces, a trailing '/' marker) is a key:
        // its canonical URL names it and nothing else.
        expect(objectKeyOfUrl(r, urlForKey(r, k))).toBe(k);
        expect(path.posix.resolve("/root", k).startsWith("/root/")).toBe(true);
      }),
      { numRuns: 500 },
    );
  });
});

describe("dataset URLs: examples", () => {
  it("normalises roots", () => {
    expect(parseDatasetRoot("s3://lake/events/")).toEqual({
      scheme: "s3",
      bucket: "lake",
      prefix: "events",
      url: "s3://lake/events",
    });
    expect(parseDatasetRoot("S3://lake")).toEqual({
      scheme: "s3",
      bucket: "lake",
      prefix: "",
      url: "s3://lake",
    });
    expect(parseDatasetRoot("file:///var/lake/")).toEqual({
      scheme: "file",
      prefix: "var/lake",
      url: "file:///var/lake",
    });
  });

  it.each([
    "",
    "lake/events",
    "/var/lake",
    "http://lake/events",
    "s3a://lake/events",
    "s3://",
    "s3:///events",
    "s3:lake/events",
    "s3://lake//events",
    "s3://lake/a/../b",
    "s3://lake/a/./b",
    "s3://lake/%2e%2e/b",
    "s3://lake/a%2Fb",
    "s3://lake/a\\b",
    "s3://lake/a?versionId=1",
    "s3://lake/a#x",
    "s3://lake/a\u0000",
    "s3://la/x",
    "file://relative/path",
    "file:relative",
    "file:/abs",
    "file:///",
    "file:////double",
  ])("refuses the root %j with a ValidationError on 'root'", (url) => {
    let error: unknown;
    try {
      parseDatasetRoot(url);
    } catch (e) {
      error = e;
    }
    expect(isValidationError(error)).toBe(true);
    expect(error).toMatchObject({ field: "root" });
  });

  it("refuses a sibling that shares the root as a string prefix", () => {
    expect(() => keyUnderRoot("s3://b1x/data", "s3://b1x/data2/x")).toThrow(
      /s3:\/\/b1x\/data2\/x.*s3:\/\/b1x\/data/,
    );
    expect(() => keyUnderRoot("file:///srv/data", "file:///srv/data2/x")).toThrow(
      expect.toSatisfy(isSafetyRailError),
    );
    expect(keyUnderRoot("s3://b1x/data", "s3://b1x/data/2/x")).toBe("2/x");
  });
});
