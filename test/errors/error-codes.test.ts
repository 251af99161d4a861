import { describe, expect, expectTypeOf, it } from "vitest";
import { cliExitCode, InterruptedError } from "../../src/cli/exit-codes.js";
import {
  ArchiveError,
  ConcurrencyError,
  ContradictingReportError,
  ERROR_CODES,
  type ErrorCode,
  errorBody,
  exitCodeFor,
  httpStatusFor,
  IllegalTransitionError,
  InternalError,
  isArchiveError,
  isConcurrencyError,
  isContradictingReportError,
  isIllegalTransitionError,
  isInternalError,
  isLeaseLostError,
  isLockedError,
  isNotFoundError,
  isSafetyRailError,
  isShardCoverageError,
  isShardledgerError,
  isUsageError,
  isValidationError,
  LeaseLostError,
  LockedError,
  NotFoundError,
  SafetyRailError,
  ShardCoverageError,
  ShardledgerError,
  UsageError,
  ValidationError,
} from "../../src/errors.js";
import { classifyStoreError, isObjectStoreError, ObjectStoreError } from "../../src/storage/object-store.js";

/**
 * One error of every code: its class, its guard, and the exit code the CLI has always given it
 * (the contract in SPEC "Interfaces"; this table is written out by hand so that a change to
 * ERROR_CODES that moves an exit code fails here), beside the HTTP status of the coming API.
 */
const EVERY_CODE: Record<
  ErrorCode,
  { error: ShardledgerError; guard: (e: unknown) => boolean; exit: number; http: number }
> = {
  VALIDATION: {
    error: new ValidationError("numShards", "must be ≥ 1"),
    guard: isValidationError,
    exit: 2,
    http: 400,
  },
  USAGE: {
    error: new UsageError("unknown option '--x'", { field: "--x" }),
    guard: isUsageError,
    exit: 2,
    http: 400,
  },
  NOT_FOUND: { error: new NotFoundError("run", "r1"), guard: isNotFoundError, exit: 2, http: 404 },
  CONCURRENCY: { error: new ConcurrencyError("run-r1", 3, 4), guard: isConcurrencyError, exit: 3, http: 409 },
  SHARD_COVERAGE: {
    error: new ShardCoverageError("r1", [3]),
    guard: isShardCoverageError,
    exit: 3,
    http: 409,
  },
  SAFETY_RAIL: {
    error: new SafetyRailError("escapes the root"),
    guard: isSafetyRailError,
    exit: 3,
    http: 409,
  },
  ILLEGAL_TRANSITION: {
    error: new IllegalTransitionError("publish", "SUCCEEDED", "already published"),
    guard: isIllegalTransitionError,
    exit: 3,
    http: 409,
  },
  CONTRADICTING_REPORT: {
    error: new ContradictingReportError("r1/3/0", "SUCCEEDED", "FAILED"),
    guard: isContradictingReportError,
    exit: 3,
    http: 409,
  },
  LEASE_LOST: {
    error: new LeaseLostError("events", 3, 4, "moved"),
    guard: isLeaseLostError,
    exit: 3,
    http: 409,
  },
  LOCKED: { error: new LockedError("held by another pass"), guard: isLockedError, exit: 3, http: 423 },
  OBJECT_STORE: {
    error: new ObjectStoreError("SlowDown: reduce your rate", { code: "SlowDown", transient: true }),
    guard: isObjectStoreError,
    exit: 1,
    http: 502,
  },
  ARCHIVE_MISSING: {
    error: new ArchiveError("ARCHIVE_MISSING", "the archive of run r1 is missing"),
    guard: (e) => isArchiveError(e) && e.code === "ARCHIVE_MISSING",
    exit: 1,
    http: 502,
  },
  ARCHIVE_CORRUPT: {
    error: new ArchiveError("ARCHIVE_CORRUPT", "the archive of run r1 does not match its checksum"),
    guard: (e) => isArchiveError(e) && e.code === "ARCHIVE_CORRUPT",
    exit: 1,
    http: 502,
  },
  INTERRUPTED: {
    error: new InterruptedError("SIGINT"),
    guard: (e) => e instanceof InterruptedError,
    exit: 130,
    http: 503,
  },
  INTERNAL: { error: new InternalError("migration failed: x"), guard: isInternalError, exit: 1, http: 500 },
};

describe("error codes", () => {
  it("ERROR_CODES has a row for every code and no other", () => {
    expectTypeOf<keyof typeof ERROR_CODES>().toEqualTypeOf<ErrorCode>();
    expect(Object.keys(ERROR_CODES).sort()).toEqual(Object.keys(EVERY_CODE).sort());
  });

  it.each(Object.entries(EVERY_CODE))(
    "%s: one class, its guard, its exit code and HTTP status",
    (code, c) => {
      expect(c.error).toBeInstanceOf(ShardledgerError);
      expect(c.error.code).toBe(code);
      expect(isShardledgerError(c.error)).toBe(true);
      expect(c.guard(c.error)).toBe(true);
      expect(cliExitCode(c.error)).toBe(c.exit);
      expect(httpStatusFor(c.error)).toBe(c.http);
      expect(ERROR_CODES[code as ErrorCode]).toEqual({ exitCode: c.exit, httpStatus: c.http });
      expect(errorBody(c.error).error.code).toBe(code);
    },
  );

  it("each guard accepts its own code only", () => {
    for (const [code, c] of Object.entries(EVERY_CODE)) {
      for (const [other, o] of Object.entries(EVERY_CODE)) {
        if (other === code) continue;
        expect({ guard: code, error: other, accepted: c.guard(o.error) }).toEqual({
          guard: code,
          error: other,
          accepted: false,
        });
      }
    }
  });

  it("guards recognise an error of another installed copy by its code and shape", () => {
    // Another copy of the package has its own ShardledgerError class: `instanceof` fails there.
    const foreign = Object.assign(new Error("maintenance of events is held"), {
      code: "LOCKED",
      details: {},
    });
    expect(foreign instanceof ShardledgerError).toBe(false);
    expect([
      isShardledgerError(foreign),
      isLockedError(foreign),
      exitCodeFor(foreign),
      httpStatusFor(foreign),
    ]).toEqual([true, true, 3, 423]);
    const foreignStore = Object.assign(new Error("x"), {
      code: "OBJECT_STORE",
      storeCode: "SlowDown",
      transient: true,
      details: {},
    });
    expect(isObjectStoreError(foreignStore)).toBe(true);
    // An error of some other library that happens to carry `code` and `details` is not ours.
    const pgLike = Object.assign(new Error("deadlock detected"), { code: "40P01", details: {} });
    expect([isShardledgerError(pgLike), exitCodeFor(pgLike), httpStatusFor(pgLike)]).toEqual([false, 1, 500]);
  });

  it("a bug (anything not a ShardledgerError) is exit 1 and HTTP 500", () => {
    for (const e of [new TypeError("x is undefined"), "thrown string", undefined]) {
      expect([exitCodeFor(e), httpStatusFor(e), errorBody(e).error.code]).toEqual([1, 500, "INTERNAL"]);
    }
  });

  it("SIGTERM exits 143, SIGINT 130", () => {
    expect([
      cliExitCode(new InterruptedError("SIGTERM")),
      cliExitCode(new InterruptedError("SIGINT")),
    ]).toEqual([143, 130]);
    expect(errorBody(new InterruptedError("SIGTERM")).error).toMatchObject({
      code: "INTERRUPTED",
      signal: "SIGTERM",
    });
  });

  it("an ObjectStoreError keeps the store's code apart from the error code", () => {
    const e = new ObjectStoreError("AccessDenied: no", {
      code: "AccessDenied",
      transient: false,
      status: 403,
      key: "k",
    });
    expect([e.code, e.storeCode, e.transient, e.status, e.key]).toEqual([
      "OBJECT_STORE",
      "AccessDenied",
      false,
      403,
      "k",
    ]);
    expect(errorBody(e)).toEqual({
      error: {
        code: "OBJECT_STORE",
        message: "AccessDenied: no",
        storeCode: "AccessDenied",
        transient: false,
        status: 403,
        key: "k",
      },
    });
    expect(classifyStoreError(e)).toEqual({
      code: "AccessDenied",
      message: "AccessDenied: no",
      transient: false,
    });
  });
});
