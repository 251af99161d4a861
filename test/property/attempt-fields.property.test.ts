import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { acceptAttemptData } from "../../src/events/attempt-fields.js";
import { eventDataSchemas } from "../../src/events/catalogue.js";
import { defaultCatalogue } from "../../src/events/event-catalogue.js";
import { acceptAttemptReport, attemptReportSchema } from "../../src/ledger/inputs.js";

// The plain-code checks of an attempt's fields answer for the common shape only; zod stays the
// authority. Whatever they accept, zod must accept with the very same value (keys, their order,
// types: the event's data is what gets stored); whatever zod refuses, they must leave to zod.
describe("attempt fields in plain code", () => {
  const edge = fc.oneof(
    fc.constantFrom("started", "succeeded", "failed", "exploded", ""),
    fc.integer({ min: -2, max: 10_000_002 }),
    fc.constantFrom(-0, 0.5, 1e6, 1e6 + 1, 1e7, 1e7 + 1, 2 ** 53, 2 ** 53 - 1, Number.NaN, Infinity),
    fc.bigInt({ min: -1n, max: 1n << 64n }),
    fc.constantFrom(
      "0",
      "00",
      "007",
      "-1",
      "123456789012345678",
      "1234567890123456789",
      "9223372036854775807",
      "9223372036854775808",
      " 1",
      "1e3",
    ),
    fc.constantFrom("r1", "a..b", "a/b", ".r", "R".repeat(128), "R".repeat(129), "", "ünï"),
    fc.constantFrom("s3://lake/d/data/r1/shard=0/attempt=0", "", "e".repeat(4096), "e".repeat(4097)),
    fc.string({ maxLength: 10 }),
    fc.constantFrom(null, undefined, true, {}, [], new Date(0)),
  );
  const mostly = <T>(valid: fc.Arbitrary<T>) =>
    fc.oneof({ weight: 5, arbitrary: valid }, { weight: 1, arbitrary: edge });
  const fields = {
    runId: mostly(fc.constantFrom("r1", "run-2026-11-23T10.00", "a_b-c")),
    shard: mostly(fc.nat(10_000_000)),
    attempt: mostly(fc.nat(1_000_000)),
    taskAttemptId: mostly(fc.oneof(fc.constant(null), fc.nat().map(String), fc.nat())),
    url: mostly(fc.constantFrom(null, "s3://lake/d/data/r1/shard=0/attempt=0", "file:///t/x")),
    error: mostly(fc.string({ maxLength: 20 })),
    kind: mostly(fc.constantFrom("started", "succeeded", "failed")),
    extra: edge,
  };
  type Fields = keyof typeof fields;
  /** Any subset of the fields (extra: a key no schema has), in any order, sometimes not an object. */
  const input = fc.oneof(
    {
      weight: 20,
      arbitrary: fc
        .tuple(fc.record(fields, { requiredKeys: [] }), fc.boolean())
        .map(([record, nullProto]) => {
          const keys = Object.keys(record) as Fields[];
          const out: Record<string, unknown> = nullProto ? Object.create(null) : {};
          for (const key of keys.reverse()) out[key] = record[key];
          return out;
        }),
    },
    { weight: 1, arbitrary: edge },
  );

  function sameAsZod(accepted: unknown, parsed: { success: boolean; data?: unknown }) {
    expect(parsed.success).toBe(true);
    expect(accepted).toStrictEqual(parsed.data);
    expect(Object.keys(accepted as object)).toEqual(Object.keys(parsed.data as object));
  }

  it("a library report: accepted only as attemptReportSchema parses it", () => {
    let accepted = 0;
    fc.assert(
      fc.property(input, (value) => {
        const fast = acceptAttemptReport(value);
        if (fast === undefined) return;
        accepted++;
        sameAsZod(fast, attemptReportSchema.safeParse(value));
      }),
      { numRuns: 20_000 },
    );
    // Not a check that never runs: the common shapes are answered here.
    expect(accepted).toBeGreaterThan(150);
  });

  it("an attempt event's data: accepted only as the catalogue's schema parses it", () => {
    let accepted = 0;
    for (const [type, withError] of [
      ["AttemptStarted", false],
      ["AttemptSucceeded", false],
      ["AttemptFailed", true],
    ] as const) {
      fc.assert(
        fc.property(input, (value) => {
          const fast = acceptAttemptData(value, withError);
          if (fast === undefined) return;
          accepted++;
          sameAsZod(fast, eventDataSchemas[type].safeParse(value));
          expect(defaultCatalogue.validate(type, value).data).toStrictEqual(fast);
        }),
        { numRuns: 10_000 },
      );
    }
    expect(accepted).toBeGreaterThan(30);
  });

  it("the common shapes are the ones answered in plain code", () => {
    const report = { kind: "succeeded", runId: "r1", shard: 7, attempt: 0, url: "s3://l/d/data/r1/x" };
    expect(acceptAttemptReport(report)).toEqual({
      runId: "r1",
      shard: 7,
      attempt: 0,
      url: report.url,
      kind: "succeeded",
    });
    expect(acceptAttemptReport({ ...report, kind: "failed" })).toEqual({
      runId: "r1",
      shard: 7,
      attempt: 0,
      url: report.url,
      error: "",
      kind: "failed",
    });
    const data = { runId: "r1", shard: 7, attempt: 0, taskAttemptId: 12, url: null };
    expect(acceptAttemptData(data, false)).toEqual({ ...data, taskAttemptId: "12" });
    // Left to zod (which accepts them): a bigint id, a 19-digit one, an explicit undefined.
    expect(acceptAttemptData({ ...data, taskAttemptId: 12n }, false)).toBeUndefined();
    expect(acceptAttemptReport({ ...report, taskAttemptId: "1234567890123456789" })).toBeUndefined();
    expect(acceptAttemptReport({ ...report, url: undefined })).toBeUndefined();
  });
});
