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
  | "USAGE"
  | "INTERRUPTED"
  | "INTERNAL";

/** Base class of all deliberate shardledger errors. */
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
  constructor(command: string, state: string, message: string, details: Record<string, unknown> = {}) {
    super("ILLEGAL_TRANSITION", message, { details: { ...details, command, state } });
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
    urls?: { recordedUrl: string; reportedUrl: string },
  ) {
    super(
      "CONTRADICTING_REPORT",
      urls === undefined
        ? `attempt ${identity} is already recorded as ${recorded}; a ${reported} report contradicts it`
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
 * try { await lease.assertHeld() } catch (e) {
 *   if (isLeaseLostError(e)) return // stop the pass; the next one resumes from the log
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

const hasCode = (e: unknown, code: ErrorCode): boolean =>
  e instanceof ShardledgerError || (typeof e === "object" && e !== null && "code" in e)
    ? (e as { code?: unknown }).code === code
    : false;

/** @example `if (isShardledgerError(e)) console.error(e.code)` */
export const isShardledgerError = (e: unknown): e is ShardledgerError =>
  e instanceof ShardledgerError ||
  (e instanceof Error && typeof (e as { code?: unknown }).code === "string" && "details" in e);
/** @example `if (isValidationError(e)) console.error(e.field)` */
export const isValidationError = (e: unknown): e is ValidationError => hasCode(e, "VALIDATION");
/** @example `if (isConcurrencyError(e)) retry()` */
export const isConcurrencyError = (e: unknown): e is ConcurrencyError => hasCode(e, "CONCURRENCY");
/** @example `if (isShardCoverageError(e)) console.error(e.missingShards)` */
export const isShardCoverageError = (e: unknown): e is ShardCoverageError => hasCode(e, "SHARD_COVERAGE");
/** @example `if (isIllegalTransitionError(e)) console.error(e.message)` */
export const isIllegalTransitionError = (e: unknown): e is IllegalTransitionError =>
  hasCode(e, "ILLEGAL_TRANSITION");
/** @example `if (isSafetyRailError(e)) process.exitCode = 3` */
export const isSafetyRailError = (e: unknown): e is SafetyRailError => hasCode(e, "SAFETY_RAIL");
/** @example `if (isLeaseLostError(e)) report.stopped = e.datasetId` */
export const isLeaseLostError = (e: unknown): e is LeaseLostError => hasCode(e, "LEASE_LOST");

/**
 * The CLI exit code for an error: 2 bad usage, invalid input or not found, 3 refused by a rule,
 * 1 anything unexpected. The README's "Exit codes and JSON errors" has the table.
 *
 * @example
 * ```ts
 * process.exitCode = exitCodeFor(new ValidationError("shards", "must be ≥ 1")) // 2
 * ```
 */
export function exitCodeFor(e: unknown): 1 | 2 | 3 {
  if (!isShardledgerError(e)) return 1;
  switch (e.code) {
    case "VALIDATION":
    case "USAGE":
    case "NOT_FOUND":
      return 2;
    case "CONCURRENCY":
    case "SHARD_COVERAGE":
    case "SAFETY_RAIL":
    case "ILLEGAL_TRANSITION":
    case "CONTRADICTING_REPORT":
    case "LOCKED":
    case "LEASE_LOST":
      return 3;
    default:
      return 1;
  }
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
