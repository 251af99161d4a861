import { summariseShards } from "./machines/shard-summary.js";
/**
 * Every error shardledger throws on purpose is a {@link ShardledgerError} with a stable `code`.
 * The CLI derives its exit code from the code, and the `isX()` guards check the code as well as
 * `instanceof`, so two installed copies of the package still agree on what an error is.
 *
 * @example
 * ```ts
 * try { await ledger.publish(runId) } catch (e) {
 *   if (isShardCoverageError(e)) console.error("missing shards", e.missingShards)
 * }
 * ```
 */
export type ErrorCode =
  | "VALIDATION"
  | "CONCURRENCY"
  | "SHARD_COVERAGE"
  | "SAFETY_RAIL"
  | "ILLEGAL_TRANSITION"
  | "CONTRADICTING_REPORT"
  | "NOT_FOUND"
  | "LOCKED"
  | "LEASE_LOST"
  | "OBJECT_STORE"
  | "ARCHIVE_MISSING"
  | "ARCHIVE_CORRUPT"
  | "USAGE"
  | "INTERRUPTED"
  | "INTERNAL";

/**
 * What each error code means outside the library: the CLI's exit code and the HTTP status the
 * service answers with. The one table both derive from; a new code cannot compile without a row.
 * 2 / 400 the input was wrong (repeating the same call can never succeed), 404 it names nothing,
 * 3 / 409 a rule refused it, 423 another pass holds the lock, 1 / 500 a bug. An interrupted
 * command exits 128 + the signal (SIGTERM 143; the table holds SIGINT's 130) and a server that is
 * stopping answers 503; an object store that failed is 502 (the fault is upstream, not ours), and so
 * is an archived stream whose archive is missing or does not match its checksum (1 / 502: nothing
 * the caller can fix by asking again; the events recorded as archived are not where they must be).
 *
 * @example
 * ```ts
 * const { exitCode, httpStatus } = ERROR_CODES["LOCKED"] // 3, 423
 * ```
 */
export const ERROR_CODES = {
  VALIDATION: { exitCode: 2, httpStatus: 400 },
  USAGE: { exitCode: 2, httpStatus: 400 },
  NOT_FOUND: { exitCode: 2, httpStatus: 404 },
  CONCURRENCY: { exitCode: 3, httpStatus: 409 },
  SHARD_COVERAGE: { exitCode: 3, httpStatus: 409 },
  SAFETY_RAIL: { exitCode: 3, httpStatus: 409 },
  ILLEGAL_TRANSITION: { exitCode: 3, httpStatus: 409 },
  CONTRADICTING_REPORT: { exitCode: 3, httpStatus: 409 },
  LEASE_LOST: { exitCode: 3, httpStatus: 409 },
  LOCKED: { exitCode: 3, httpStatus: 423 },
  OBJECT_STORE: { exitCode: 1, httpStatus: 502 },
  ARCHIVE_MISSING: { exitCode: 1, httpStatus: 502 },
  ARCHIVE_CORRUPT: { exitCode: 1, httpStatus: 502 },
  INTERRUPTED: { exitCode: 130, httpStatus: 503 },
  INTERNAL: { exitCode: 1, httpStatus: 500 },
} as const satisfies Record<ErrorCode, { exitCode: number; httpStatus: number }>;

/**
 * Base class of all deliberate shardledger errors. `code` is stable (see {@link ERROR_CODES});
 * `details` holds what the message names, as JSON-ready values.
 *
 * @example
 * ```ts
 * try { await ledger.publish(runId) } catch (e) {
 *   if (e instanceof ShardledgerError) console.error(e.code, e.details)
 * }
 * ```
 */
export class ShardledgerError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(
    code: ErrorCode,
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = Object.freeze({ ...(options.details ?? {}) });
  }
}

/**
 * Input that does not satisfy a schema: a CLI flag, a config value, an event's data.
 * `field` names the offending path (for example `data.numShards` or `policies.keepRuns`).
 *
 * @example
 * ```ts
 * throw new ValidationError("keepRuns", "must be an integer ≥ 1")
 * ```
 */
export class ValidationError extends ShardledgerError {
  readonly field: string;
  constructor(
    field: string,
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super("VALIDATION", `${field}: ${message}`, {
      ...options,
      details: { field, ...(options.details ?? {}) },
    });
    this.field = field;
  }
}

/**
 * A second append inside one log transaction (`log.transaction(fn)`); nothing was written for it.
 * An append reserves the transaction's global positions together with its transaction id, and a
 * second reservation would take positions above those of transactions that reserved in between
 * with a larger id, so `readAll` could move past one of their events before it commits and never
 * return it. Put all of the transaction's events in one append; let the error propagate, and the
 * whole transaction rolls back.
 *
 * @example
 * ```ts
 * new OneAppendPerTransactionError("run-r1")
 * ```
 */
export class OneAppendPerTransactionError extends ValidationError {
  constructor(streamId: string, options: { cause?: unknown } = {}) {
    super(
      "append",
      `a transaction may append to the log once; put all of its events in one append (the second append, to stream ${streamId}, wrote nothing)`,
      { ...options, details: { streamId } },
    );
  }
}

/**
 * An append whose expected stream version did not match; nothing was written.
 *
 * @example
 * ```ts
 * new ConcurrencyError("run-r1", 3, 4)
 * ```
 */
export class ConcurrencyError extends ShardledgerError {
  readonly streamId: string;
  readonly expected: number | "no_stream" | "any";
  /** The version found, or `null` when another writer changed the stream at the same moment. */
  readonly actual: number | null;
  constructor(streamId: string, expected: number | "no_stream" | "any", actual: number | null) {
    super(
      "CONCURRENCY",
      actual === null
        ? `stream ${streamId}: another writer changed it at the same moment (expected version ${String(expected)}); nothing was written`
        : `stream ${streamId}: expected version ${String(expected)}, but it is at ${actual}; nothing was written`,
      { details: { streamId, expected, actual } },
    );
    this.streamId = streamId;
    this.expected = expected;
    this.actual = actual;
  }
}

/**
 * Publish refused because some shards have no successful attempt; the run becomes FAILED.
 *
 * @example
 * ```ts
 * new ShardCoverageError("r1", [3, 7])
 * ```
 */
export class ShardCoverageError extends ShardledgerError {
  readonly runId: string;
  readonly missingShards: readonly number[];
  constructor(runId: string, missingShards: readonly number[], options: { datasetId?: string | null } = {}) {
    const shards = summariseShards(missingShards);
    // The message says how to finish the run, not only what is wrong: a writer that reads
    // "missing shards" and starts a new run rewrites every shard; reopening keeps the good ones.
    super(
      "SHARD_COVERAGE",
      `run ${runId}: no successful attempt for shard(s) ${shards}; nothing was published and the run is FAILED. ` +
        `To finish it, reopen it with \`${retryFailedCommand(options.datasetId, runId)}\` (inside its failed-retention floor; its successful attempts are kept), ` +
        `write shard(s) ${shards}, then publish again`,
      {
        details: {
          runId,
          ...(options.datasetId ? { datasetId: options.datasetId } : {}),
          missingShards: [...missingShards],
        },
      },
    );
    this.runId = runId;
    this.missingShards = Object.freeze([...missingShards]);
  }
}

/**
 * The CLI command that reopens a FAILED run inside its failed-retention floor, for messages that
 * must name the fix.
 *
 * @example
 * ```ts
 * retryFailedCommand("events", "r1") // "shardledger retry-failed events --run r1"
 * ```
 */
export function retryFailedCommand(datasetId: string | null | undefined, runId: string): string {
  return `shardledger retry-failed ${datasetId || "<datasetId>"} --run ${runId}`;
}

/**
 * A request that would break a safety rail (a URL outside the dataset root, deleting the current
 * run, …). Raised before any request is sent. `details.rule` names the rail (for example
 * `"url inside the dataset root"`), beside what it applies to (`url`, `root`, `key`, …).
 *
 * @example
 * ```ts
 * new SafetyRailError("url escapes the dataset root", { url, root, rule: "url inside the dataset root" })
 * ```
 */
export class SafetyRailError extends ShardledgerError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super("SAFETY_RAIL", message, { details });
  }
}

/**
 * A command the lifecycle refuses in the current state (publishing twice, reporting to a pruned
 * run, reopening a run outside the failed-retention floor, …).
 *
 * @example
 * ```ts
 * new IllegalTransitionError("publish", "SUCCEEDED", "run r1 is already published")
 * ```
 */
export class IllegalTransitionError extends ShardledgerError {
  /**
   * `state` is the status the refusal was decided on (a run's `STARTED`, `FAILED`, …); `details`
   * adds what names the subject, such as `runId` and `datasetId`.
   */
  constructor(
    command: string,
    state: string,
    message: string,
    details: Record<string, unknown> = {},
    options: { cause?: unknown } = {},
  ) {
    super("ILLEGAL_TRANSITION", message, { ...options, details: { ...details, command, state } });
  }
}

/**
 * The same attempt identity reported with two different outcomes, or at two different urls
 * (`urls`, when both reports name one).
 *
 * @example
 * ```ts
 * new ContradictingReportError("r1/3/0", "SUCCEEDED", "FAILED")
 * new ContradictingReportError("r1/3/0", "SUCCEEDED", "SUCCEEDED", { recordedUrl: "s3://b/d/x", reportedUrl: "s3://b/d/y" })
 * ```
 */
export class ContradictingReportError extends ShardledgerError {
  constructor(
    identity: string,
    recorded: string,
    reported: string,
    urls?: { recordedUrl: string | null; reportedUrl: string },
  ) {
    super(
      "CONTRADICTING_REPORT",
      urls === undefined
        ? `attempt ${identity} is already recorded as ${recorded}; a ${reported} report contradicts it`
        : urls.recordedUrl === null
          ? `attempt ${identity} is already recorded (${recorded}) without a url; a ${reported} report cannot add ${urls.reportedUrl} to it (report the url with the attempt's outcome: succeeded or failed)`
          : `attempt ${identity} is already recorded (${recorded}) at ${urls.recordedUrl}; a ${reported} report at ${urls.reportedUrl} contradicts it`,
      { details: { identity, recorded, reported, ...(urls ?? {}) } },
    );
  }
}

/**
 * A dataset, run or stream that does not exist (or not where it was looked for). `details` has
 * `kind` and `id`, and `field` when the caller knows which argument named it (the CLI's
 * `<runId>`, `--run`, …). Exit code 2: the id is invalid input, and repeating the same command
 * can never succeed.
 *
 * @example
 * ```ts
 * new NotFoundError("run", "r1")
 * new NotFoundError("run", "r1", { field: "--run", message: "run r1 belongs to dataset b, not a" })
 * ```
 */
export class NotFoundError extends ShardledgerError {
  readonly kind: string;
  readonly id: string;
  constructor(
    kind: string,
    id: string,
    options: { message?: string; field?: string; details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super("NOT_FOUND", options.message ?? `${kind} ${id} does not exist`, {
      cause: options.cause,
      details: {
        ...(options.details ?? {}),
        kind,
        id,
        ...(options.field !== undefined ? { field: options.field } : {}),
      },
    });
    this.kind = kind;
    this.id = id;
  }
}

/**
 * A maintenance pass lost its lease on a dataset: another pass acquired it (the stored epoch
 * moved past ours), or the connection that held the pass's advisory lock is gone. Raised by
 * `lease.assertHeld()` before a store request and by a fenced append, which then wrote nothing.
 * The pass must stop: whatever it still meant to do is the new holder's to decide.
 *
 * @example
 * ```ts
 * try { await ledger.gc("events") } catch (e) {
 *   if (isLeaseLostError(e)) return // the pass stopped; the next one resumes from the log
 * }
 * ```
 */
export class LeaseLostError extends ShardledgerError {
  readonly datasetId: string;
  /** The epoch this pass was granted. */
  readonly epoch: number;
  /** The epoch stored now (`null` when unknown: the row is missing or could not be read). */
  readonly currentEpoch: number | null;
  constructor(
    datasetId: string,
    epoch: number,
    currentEpoch: number | null,
    reason: string,
    options: { cause?: unknown; holder?: string | null } = {},
  ) {
    super(
      "LEASE_LOST",
      `maintenance lease of dataset ${datasetId} lost (ours: epoch ${epoch}${
        currentEpoch === null ? "" : `, stored: epoch ${currentEpoch}`
      }${options.holder ? ` held by ${options.holder}` : ""}): ${reason}; the pass stops and writes nothing more`,
      {
        cause: options.cause,
        details: { datasetId, epoch, currentEpoch, holder: options.holder ?? null, reason },
      },
    );
    this.datasetId = datasetId;
    this.epoch = epoch;
    this.currentEpoch = currentEpoch;
  }
}

/**
 * Another process or pass holds what this call needs: a PGlite directory open in another process,
 * a dataset's maintenance lease or publish lock. Nothing was done; trying again later can succeed.
 * `details` names the lock (`lock`) and, when known, who holds it (`holder`, `pid`).
 *
 * @example
 * ```ts
 * try { await ledger.gc("events") } catch (e) {
 *   if (isLockedError(e)) console.log("another pass is collecting events; skipping")
 * }
 * ```
 */
export class LockedError extends ShardledgerError {
  constructor(message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super("LOCKED", message, options);
  }
}

/**
 * An archived run stream that cannot be read through its archive: `ARCHIVE_MISSING` (no
 * `.complete` marker, or a marker without its content) or `ARCHIVE_CORRUPT` (a checksum or count
 * that disagrees with the marker or with the `Archived` event, or content that does not parse).
 * `details` names the run, the archive URL and the reason.
 *
 * @example
 * ```ts
 * try { await ledger.events({ stream: "2026-01-03" }) } catch (e) {
 *   if (isArchiveError(e)) console.error(e.code, e.details.archiveUrl)
 * }
 * ```
 */
export class ArchiveError extends ShardledgerError {
  constructor(
    code: "ARCHIVE_MISSING" | "ARCHIVE_CORRUPT",
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(code, message, options);
  }
}

/**
 * A command line the CLI cannot run: an unknown flag, a missing argument, a group without its
 * subcommand. `field` names the flag or argument when it is known.
 *
 * @example
 * ```ts
 * new UsageError("unknown option '--shard'", { field: "--shard" })
 * ```
 */
export class UsageError extends ShardledgerError {
  readonly field: string | undefined;
  constructor(
    message: string,
    options: { field?: string; cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super("USAGE", message, {
      cause: options.cause,
      details: {
        ...(options.field !== undefined ? { field: options.field } : {}),
        ...(options.details ?? {}),
      },
    });
    this.field = options.field;
  }
}

/**
 * A failure the ledger could not recover from and that no input of the caller explains: the
 * database cannot be reached, a migration failed. `cause` keeps the original error.
 *
 * @example
 * ```ts
 * new InternalError("cannot reach the database postgres://db/ledger: ECONNREFUSED", { cause: e })
 * ```
 */
export class InternalError extends ShardledgerError {
  constructor(message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super("INTERNAL", message, options);
  }
}

const hasCode = (e: unknown, code: ErrorCode): boolean =>
  e instanceof ShardledgerError || (typeof e === "object" && e !== null && "code" in e)
    ? (e as { code?: unknown }).code === code
    : false;

/**
 * Whether a value is a {@link ShardledgerError}. Like every `isX()` guard it checks the shape as
 * well as `instanceof`, so errors thrown by another installed copy of the package still count.
 *
 * @example
 * ```ts
 * try { await ledger.publish("r1") } catch (e) {
 *   if (isShardledgerError(e)) console.error(e.code, e.message)
 * }
 * ```
 */
export const isShardledgerError = (e: unknown): e is ShardledgerError =>
  e instanceof ShardledgerError ||
  (e instanceof Error &&
    typeof (e as { code?: unknown }).code === "string" &&
    Object.hasOwn(ERROR_CODES, (e as unknown as { code: string }).code) &&
    "details" in e);
/**
 * Whether `e` is an {@link ArchiveError} (code `ARCHIVE_MISSING` or `ARCHIVE_CORRUPT`).
 *
 * @example
 * ```ts
 * const e: unknown = new ArchiveError("ARCHIVE_MISSING", "the archive of run r1 is missing")
 * if (isArchiveError(e)) console.log(e.code)
 * ```
 */
export const isArchiveError = (e: unknown): e is ArchiveError =>
  hasCode(e, "ARCHIVE_MISSING") || hasCode(e, "ARCHIVE_CORRUPT");
/**
 * Whether `e` is a {@link ValidationError} (code `VALIDATION`).
 *
 * @example
 * ```ts
 * const e: unknown = new ValidationError("numShards", "must be ≥ 1")
 * if (isValidationError(e)) console.error(e.field)
 * ```
 */
export const isValidationError = (e: unknown): e is ValidationError => hasCode(e, "VALIDATION");
/**
 * Whether `e` is a {@link UsageError} (code `USAGE`).
 *
 * @example
 * ```ts
 * const e: unknown = new UsageError("unknown option '--shard'", { field: "--shard" })
 * if (isUsageError(e)) console.error(e.message)
 * ```
 */
export const isUsageError = (e: unknown): e is UsageError => hasCode(e, "USAGE");
/**
 * Whether `e` is a {@link NotFoundError} (code `NOT_FOUND`).
 *
 * @example
 * ```ts
 * const e: unknown = new NotFoundError("run", "r1")
 * if (isNotFoundError(e)) console.error(`${e.kind} ${e.id} does not exist`)
 * ```
 */
export const isNotFoundError = (e: unknown): e is NotFoundError => hasCode(e, "NOT_FOUND");
/**
 * Whether `e` is a {@link ConcurrencyError} (code `CONCURRENCY`): read the stream again and retry.
 *
 * @example
 * ```ts
 * const e: unknown = new ConcurrencyError("run-r1", 3, 4)
 * if (isConcurrencyError(e)) console.error(`expected ${e.expected}, found ${e.actual}`)
 * ```
 */
export const isConcurrencyError = (e: unknown): e is ConcurrencyError => hasCode(e, "CONCURRENCY");
/**
 * Whether `e` is a {@link ShardCoverageError} (code `SHARD_COVERAGE`).
 *
 * @example
 * ```ts
 * const e: unknown = new ShardCoverageError("r1", [3])
 * if (isShardCoverageError(e)) console.error(e.missingShards)
 * ```
 */
export const isShardCoverageError = (e: unknown): e is ShardCoverageError => hasCode(e, "SHARD_COVERAGE");
/**
 * Whether `e` is an {@link IllegalTransitionError} (code `ILLEGAL_TRANSITION`).
 *
 * @example
 * ```ts
 * const e: unknown = new IllegalTransitionError("publish", "SUCCEEDED", "run r1 is already published")
 * if (isIllegalTransitionError(e)) console.error(e.details.state)
 * ```
 */
export const isIllegalTransitionError = (e: unknown): e is IllegalTransitionError =>
  hasCode(e, "ILLEGAL_TRANSITION");
/**
 * Whether `e` is a {@link ContradictingReportError} (code `CONTRADICTING_REPORT`).
 *
 * @example
 * ```ts
 * const e: unknown = new ContradictingReportError("r1/3/0", "SUCCEEDED", "FAILED")
 * if (isContradictingReportError(e)) console.error(e.details.recorded)
 * ```
 */
export const isContradictingReportError = (e: unknown): e is ContradictingReportError =>
  hasCode(e, "CONTRADICTING_REPORT");
/**
 * Whether `e` is a {@link SafetyRailError} (code `SAFETY_RAIL`).
 *
 * @example
 * ```ts
 * const e: unknown = new SafetyRailError("url escapes the dataset root", { rule: "url inside the dataset root" })
 * if (isSafetyRailError(e)) console.error(e.details.rule)
 * ```
 */
export const isSafetyRailError = (e: unknown): e is SafetyRailError => hasCode(e, "SAFETY_RAIL");
/**
 * Whether `e` is a {@link LeaseLostError} (code `LEASE_LOST`): the pass must stop.
 *
 * @example
 * ```ts
 * const e: unknown = new LeaseLostError("events", 3, 4, "another pass acquired the lease")
 * if (isLeaseLostError(e)) console.error(`lost ${e.datasetId} at epoch ${e.epoch}`)
 * ```
 */
export const isLeaseLostError = (e: unknown): e is LeaseLostError => hasCode(e, "LEASE_LOST");
/**
 * Whether `e` is a {@link LockedError} (code `LOCKED`): try again later.
 *
 * @example
 * ```ts
 * const e: unknown = new LockedError("maintenance of dataset events is held by another pass")
 * if (isLockedError(e)) console.error(e.details.holder ?? "another pass")
 * ```
 */
export const isLockedError = (e: unknown): e is LockedError => hasCode(e, "LOCKED");
/**
 * Whether `e` is an {@link InternalError} (code `INTERNAL`).
 *
 * @example
 * ```ts
 * const e: unknown = new InternalError("migration failed: syntax error")
 * if (isInternalError(e)) console.error(e.cause)
 * ```
 */
export const isInternalError = (e: unknown): e is InternalError => hasCode(e, "INTERNAL");

/**
 * The CLI exit code for an error, from {@link ERROR_CODES}: 2 bad usage, invalid input or not
 * found, 3 refused by a rule, 1 anything unexpected (including anything that is not a
 * {@link ShardledgerError}). The README's "Exit codes and JSON errors" has the table.
 *
 * @example
 * ```ts
 * process.exitCode = exitCodeFor(new ValidationError("shards", "must be ≥ 1")) // 2
 * ```
 */
export function exitCodeFor(e: unknown): number {
  return isShardledgerError(e) ? (ERROR_CODES[e.code]?.exitCode ?? 1) : 1;
}

/**
 * The HTTP status for an error, from {@link ERROR_CODES}: 400 invalid input (the body names the
 * field), 404 not found, 409 refused by a rule or a conflict, 423 locked, 502 the object store
 * failed, 503 stopping, and 500 only for a bug (anything that is not a {@link ShardledgerError}).
 *
 * @example
 * ```ts
 * httpStatusFor(new NotFoundError("run", "r1")) // 404
 * ```
 */
export function httpStatusFor(e: unknown): number {
  return isShardledgerError(e) ? (ERROR_CODES[e.code]?.httpStatus ?? 500) : 500;
}

/**
 * The JSON body of an error, as `--json` prints it on stdout (and as an HTTP API answers it):
 * `{ "error": { "code", "message", "field"?, …details } }`. The details of the error are spread
 * beside `code` and `message` (they never replace them): `missingShards` for `SHARD_COVERAGE`,
 * `expected`/`actual` for `CONCURRENCY`, `url`/`root`/`rule` for `SAFETY_RAIL`, `state` for
 * `ILLEGAL_TRANSITION`, `kind`/`id` for `NOT_FOUND`, `field` for `VALIDATION`, … Anything that
 * is not a {@link ShardledgerError} is a bug or an outage: code `INTERNAL`, its message kept.
 *
 * @example
 * ```ts
 * errorBody(new ShardCoverageError("r1", [3]))
 * // { error: { code: "SHARD_COVERAGE", message: "run r1: no successful attempt for shard(s) 3; …", runId: "r1", missingShards: [3] } }
 * ```
 */
export function errorBody(e: unknown): ErrorBody {
  if (!isShardledgerError(e)) {
    return { error: { code: "INTERNAL", message: `unexpected error: ${describeError(e)}` } };
  }
  const { code: _code, message: _message, ...details } = (e.details ?? {}) as Record<string, unknown>;
  return { error: { code: e.code, message: e.message, ...details } };
}

/**
 * The body {@link errorBody} builds.
 *
 * @example
 * ```ts
 * const body: ErrorBody = { error: { code: "NOT_FOUND", message: "run r1 does not exist", kind: "run", id: "r1" } }
 * ```
 */
export interface ErrorBody {
  error: {
    code: ErrorCode;
    message: string;
    /** The argument or input field that was wrong (VALIDATION, USAGE, NOT_FOUND), when known. */
    field?: string;
    [detail: string]: unknown;
  };
}

/**
 * A one-line description of anything thrown. Node reports a refused connection to `localhost`
 * as an AggregateError with an empty message, one error per address tried.
 *
 * @example `describeError(new AggregateError([new Error("connect ECONNREFUSED ::1:5432")])) // "connect ECONNREFUSED ::1:5432"`
 */
export function describeError(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  if (e.message) return e.message;
  if (e instanceof AggregateError) return e.errors.map(describeError).join("; ");
  const code = (e as { code?: unknown }).code;
  return typeof code === "string" ? code : e.name;
}
