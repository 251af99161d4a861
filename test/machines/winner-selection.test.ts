import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { isShardCoverageError, isValidationError, ShardCoverageError } from "../../src/errors.js";
import { deterministicEventId } from "../../src/machines/event-ids.js";
import {
  compareAttempts,
  requireFullCoverage,
  type SelectableAttempt,
  selectWinners,
} from "../../src/machines/winner-selection.js";

const ok = (
  shard: number,
  attempt: number,
  taskAttemptId: string | bigint | null = null,
  url: string | null = null,
): SelectableAttempt => ({ shard, attempt, taskAttemptId, url, outcome: "SUCCEEDED" });

const sign = (n: number) => Math.sign(n);

describe("compareAttempts", () => {
  it("orders by attempt number first, whatever the taskAttemptId and url", () => {
    expect(sign(compareAttempts(ok(0, 0, null, "z"), ok(0, 1, "0", "a")))).toBe(-1);
    expect(sign(compareAttempts(ok(0, 2, "0"), ok(0, 1, null)))).toBe(1);
  });

  it("orders taskAttemptIds near 2^63 as 64-bit integers, a missing one counting as 2^63-1", () => {
    const below = ok(0, 0, "9223372036854775806");
    const max = ok(0, 0, "9223372036854775807");
    const none = ok(0, 0, null);
    expect(sign(compareAttempts(below, max))).toBe(-1);
    expect(sign(compareAttempts(max, below))).toBe(1);
    expect(sign(compareAttempts(below, none))).toBe(-1);
    // 2^63-1 and "none" are the same rank: the url decides, and with equal urls they tie.
    expect(compareAttempts(max, none)).toBe(0);
    expect(sign(compareAttempts(ok(0, 0, "9223372036854775807", "b"), ok(0, 0, null, "a")))).toBe(1);
    // Floats would make these two equal (both round to 2^63).
    expect(Number("9223372036854775806")).toBe(Number("9223372036854775807"));
  });

  it("compares taskAttemptIds numerically, not as text", () => {
    expect(sign(compareAttempts(ok(0, 0, "9"), ok(0, 0, "10")))).toBe(-1);
    expect(sign(compareAttempts(ok(0, 0, "100"), ok(0, 0, "99")))).toBe(1);
    expect(sign(compareAttempts(ok(0, 0, 10n), ok(0, 0, "9")))).toBe(1);
    expect(sign(compareAttempts(ok(0, 0, "007"), ok(0, 0, "10")))).toBe(-1);
    expect(compareAttempts(ok(0, 0, "007"), ok(0, 0, 7n))).toBe(0);
  });

  it("compares urls by UTF-16 code units, never by locale", () => {
    expect(sign(compareAttempts(ok(0, 0, null, "Z"), ok(0, 0, null, "a")))).toBe(-1);
    expect("Z".localeCompare("a")).toBe(1); // what a locale comparison would have said
    // U+FFFF is a single code unit 0xFFFF; an astral character starts with a surrogate 0xD83D.
    expect(sign(compareAttempts(ok(0, 0, null, "\uD83D\uDE00"), ok(0, 0, null, "\uFFFF")))).toBe(-1);
    expect(sign(compareAttempts(ok(0, 0, null, "e\u0301"), ok(0, 0, null, "\u00E9")))).toBe(-1);
    expect(sign(compareAttempts(ok(0, 0, null, null), ok(0, 0, null, "a")))).toBe(-1);
    expect(compareAttempts(ok(0, 0, null, null), ok(0, 0, null, ""))).toBe(0);
  });

  it("refuses a taskAttemptId that is not a 64-bit integer", () => {
    expect(() => compareAttempts(ok(0, 0, "12a"), ok(0, 0, "1"))).toThrow(/taskAttemptId/);
  });
});

describe("selectWinners", () => {
  it("picks the smallest successful attempt of every shard", () => {
    const attempts = [
      ok(0, 1, "5", "s3://b/d/data/r/shard=00000/attempt=01-5"),
      ok(0, 1, "4", "s3://b/d/data/r/shard=00000/attempt=01-4"),
      { ...ok(0, 0, "1", "s3://b/d/data/r/shard=00000/attempt=00-1"), outcome: "FAILED" as const },
      { ...ok(0, 0, "2", "s3://b/d/data/r/shard=00000/attempt=00-2"), outcome: "STARTED" as const },
      ok(1, 0, null, "s3://b/d/data/r/shard=00001/attempt=00"),
      ok(1, 0, "9223372036854775806", "s3://b/d/data/r/shard=00001/attempt=00-x"),
    ];
    const { winners, missingShards } = selectWinners(2, attempts);
    expect(missingShards).toEqual([]);
    expect([...winners.keys()]).toEqual([0, 1]);
    expect(winners.get(0)?.taskAttemptId).toBe("4");
    expect(winners.get(1)?.taskAttemptId).toBe("9223372036854775806");
  });

  it("returns the caller's objects, in shard order", () => {
    const a = ok(2, 0);
    const b = ok(0, 0);
    const { winners } = selectWinners(3, [a, ok(1, 0), b]);
    expect(winners.get(2)).toBe(a);
    expect(winners.get(0)).toBe(b);
    expect([...winners.keys()]).toEqual([0, 1, 2]);
  });

  it("names every shard without a successful attempt, ascending", () => {
    const { winners, missingShards } = selectWinners(6, [
      ok(4, 0),
      { ...ok(1, 0), outcome: "FAILED" },
      { ...ok(3, 0), outcome: "STARTED" },
      ok(0, 2),
    ]);
    expect(missingShards).toEqual([1, 2, 3, 5]);
    expect([...winners.keys()]).toEqual([0, 4]);
  });

  it("turns missing shards into a ShardCoverageError naming them all", () => {
    const selection = selectWinners(30, [ok(0, 0)]);
    let error: unknown;
    try {
      requireFullCoverage("r1", selection);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ShardCoverageError);
    expect(isShardCoverageError(error)).toBe(true);
    const coverage = error as ShardCoverageError;
    expect(coverage.missingShards).toEqual(Array.from({ length: 29 }, (_, i) => i + 1));
    expect(coverage.runId).toBe("r1");
    expect(coverage.message).toContain("29 in all");
    expect(requireFullCoverage("r1", selectWinners(1, [ok(0, 0)])).size).toBe(1);
  });

  it("refuses a shard outside [0, numShards) with a ValidationError naming shard", () => {
    let error: unknown;
    try {
      selectWinners(2, [ok(2, 0)]);
    } catch (e) {
      error = e;
    }
    expect(isValidationError(error)).toBe(true);
    expect((error as { field: string }).field).toBe("shard");
    expect(() => selectWinners(0, [])).toThrow(/numShards/);
  });

  it("selects one winner per shard among 200,000 attempts with ids near 2^63", () => {
    const shards = 50_000;
    const attempts: SelectableAttempt[] = [];
    for (let i = 0; i < 200_000; i++) {
      attempts.push({
        shard: i % shards,
        attempt: (i * 7) % 3,
        taskAttemptId: String(9223372036854770000n + BigInt(i % 5000)),
        url: `s3://b/d/data/r/shard=${i % shards}/${i}`,
        outcome: Math.floor(i / shards) === 3 ? "FAILED" : "SUCCEEDED",
      });
    }
    // Speed is measured in bench/publish.ts, not asserted here.
    const { winners, missingShards } = selectWinners(shards, attempts);
    expect(missingShards).toEqual([]);
    expect(winners.size).toBe(shards);
    // Shard 0 saw i = 0, 50k, 100k, 150k (the last failed); attempt (i*7)%3 is 0 for i = 0 and 150k.
    expect(winners.get(0)).toMatchObject({ attempt: 0, taskAttemptId: "9223372036854770000" });
  });
});

describe("deterministicEventId", () => {
  it("is the RFC 4122 version-5 UUID (the DNS-namespace test vector)", () => {
    expect(deterministicEventId("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "www.example.com")).toBe(
      "2ed6657d-e927-568b-95e1-2665a8aea6a2",
    );
  });

  it("is stable for a name and differs between names and namespaces", () => {
    const ns = "3f0b7c52-8e1d-4a6f-9b2c-5d7e4a1c9f30";
    const a = deterministicEventId(ns, "r1/0/0/-/SUCCEEDED");
    expect(deterministicEventId(ns, "r1/0/0/-/SUCCEEDED")).toBe(a);
    expect(deterministicEventId(ns, "r1/0/0/-/FAILED")).not.toBe(a);
    expect(deterministicEventId("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "r1/0/0/-/SUCCEEDED")).not.toBe(a);
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(() => deterministicEventId("not-a-uuid", "x")).toThrow(/namespace/);
  });

  it("equals RFC 4122's construction over a Hash object for any name: non-ASCII, lone surrogates, long", () => {
    // The reference: SHA-1 over the namespace bytes then the UTF-8 name, version and variant bits
    // set on the first 16 bytes (the construction ids were derived with until the one-shot hash).
    const reference = (namespace: string, name: string) => {
      const bytes = createHash("sha1")
        .update(Buffer.from(namespace.replaceAll("-", ""), "hex"))
        .update(name, "utf8")
        .digest()
        .subarray(0, 16);
      bytes[6] = ((bytes[6] as number) & 0x0f) | 0x50;
      bytes[8] = ((bytes[8] as number) & 0x3f) | 0x80;
      const hex = bytes.toString("hex");
      return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
    };
    fc.assert(
      fc.property(
        fc.uuid(),
        fc.oneof(
          fc.string({ unit: "binary", maxLength: 40 }),
          fc.string({ unit: "grapheme", maxLength: 400 }),
          fc.string({ minLength: 300, maxLength: 5000 }),
        ),
        (namespace, name) => {
          expect(deterministicEventId(namespace, name)).toBe(reference(namespace, name));
        },
      ),
      { numRuns: 2000 },
    );
  });
});
