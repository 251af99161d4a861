import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { isValidationError } from "../../src/errors.js";
import { attemptReportSchema } from "../../src/ledger/inputs.js";
import { batchItemReport } from "../../src/server/routes/attempts.js";
import { batchReportSchema } from "../../src/server/schemas.js";
import { parseWithSchema } from "../../src/validation.js";

// The batch endpoint validates its items with the library's report schema (with the path's run),
// while the OpenAPI document describes them with batchReportSchema: the two must accept the same
// items, or the document would promise what the server refuses (or the reverse).
describe("batch report items", () => {
  const value = fc.oneof(
    fc.constantFrom("started", "succeeded", "failed", "exploded", ""),
    fc.integer({ min: -2, max: 10_000_001 }),
    fc.constantFrom(0.5, 2 ** 53, Number.NaN),
    fc.bigInt({ min: -1n, max: 1n << 64n }),
    fc.constantFrom("42", "-1", "9223372036854775807", "9223372036854775808", "x", "r1", "a..b"),
    fc.constantFrom("s3://lake/d/data/r1/shard=0/attempt=0", "", "e".repeat(4097)),
    fc.string({ maxLength: 10 }),
    fc.constantFrom(null, undefined, true, {}, []),
  );
  // Mostly valid fields, so that whole items are accepted often enough to compare both ways.
  const mostly = <T>(valid: fc.Arbitrary<T>) =>
    fc.oneof({ weight: 6, arbitrary: valid }, { weight: 1, arbitrary: value });
  const item = fc.record(
    {
      kind: mostly(fc.constantFrom("started", "succeeded", "failed")),
      shard: mostly(fc.nat(1000)),
      attempt: mostly(fc.nat(5)),
      taskAttemptId: mostly(fc.constantFrom(null, "7", 7, 7n)),
      url: mostly(fc.constantFrom(null, "s3://lake/d/data/r1/shard=0/attempt=0")),
      error: fc.oneof(
        { weight: 3, arbitrary: fc.constant(undefined) },
        { weight: 1, arbitrary: mostly(fc.string({ maxLength: 20 })) },
      ),
      runId: fc.constantFrom("r1", undefined, "r2"),
    },
    { requiredKeys: ["kind", "shard", "attempt"] },
  );
  // Now and then a key neither schema knows.
  const withExtra = fc
    .tuple(item, fc.oneof({ weight: 8, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: value }))
    .map(([fields, extra]) => (extra === null ? fields : { ...fields, extra }));

  const fieldOf = (parse: () => unknown): string | null => {
    try {
      parse();
      return null;
    } catch (e) {
      if (!isValidationError(e)) throw e;
      return e.field;
    }
  };

  it("are accepted and refused (naming the same field) by the library's report schema as by batchReportSchema, which documents them", () => {
    const seen = { accepted: 0, refused: 0 };
    fc.assert(
      fc.property(withExtra, (candidate) => {
        // The server's own rule on top of either schema: `error` only on a "failed" report.
        const pairing =
          candidate.error === undefined || !(candidate.kind === "started" || candidate.kind === "succeeded");
        // …and the path's run: a report naming another run is refused on that field first.
        const otherRun = candidate.runId === "r2";
        const documented = !otherRun && pairing && batchReportSchema.safeParse(candidate).success;
        // The field a refusal names: before, batchReportSchema's first issue (or the pairing rule);
        // now, batchItemReport's own checks, then the library's schema.
        const documentedField = documented
          ? null
          : otherRun
            ? "runId"
            : !pairing
              ? "error"
              : fieldOf(() => parseWithSchema(batchReportSchema, candidate, "body"));
        const libraryField = fieldOf(() =>
          parseWithSchema(attemptReportSchema, batchItemReport(candidate, "r1"), "report"),
        );
        expect(libraryField === null).toBe(documented);
        if (!documented) expect(libraryField).toBe(documentedField);
        seen[documented ? "accepted" : "refused"] += 1;
      }),
      { numRuns: 5000 },
    );
    expect(seen.accepted).toBeGreaterThan(500);
    expect(seen.refused).toBeGreaterThan(500);
  });
});
