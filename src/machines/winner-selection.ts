import { ShardCoverageError, ValidationError } from "../errors.js";
import { MAX_TASK_ATTEMPT_ID } from "../events/identifiers.js";

/**
 * What a writer last reported about an attempt.
 *
 * @example
 * ```ts
 * const canWin = (o: AttemptOutcome) => o === "SUCCEEDED"
 * ```
 */
export type AttemptOutcome = "STARTED" | "SUCCEEDED" | "FAILED";

/**
 * The part of an attempt that ranks it against the other attempts of its shard.
 * `taskAttemptId` is a decimal string (as the catalogue stores it) or a bigint.
 *
 * @example
 * ```ts
 * const a: RankedAttempt = { attempt: 0, taskAttemptId: "9223372036854775806", url: "s3://b/p/a" }
 * ```
 */
export interface RankedAttempt {
  readonly attempt: number;
  readonly taskAttemptId: string | bigint | null;
  readonly url: string | null;
}

/**
 * An attempt as winner selection sees it: its shard, its rank and its outcome. Only
 * `SUCCEEDED` attempts can win.
 *
 * @example
 * ```ts
 * const a: SelectableAttempt = { shard: 3, attempt: 1, taskAttemptId: null, url: null, outcome: "SUCCEEDED" }
 * ```
 */
export interface SelectableAttempt extends RankedAttempt {
  readonly shard: number;
  readonly outcome: AttemptOutcome;
}

/**
 * The winners of a run, in shard order, and the shards that have no successful attempt
 * (ascending). A publish may go ahead only when `missingShards` is empty.
 *
 * @example
 * ```ts
 * const { winners, missingShards } = selectWinners(2, attempts)
 * ```
 */
export interface WinnerSelection<T extends SelectableAttempt> {
  readonly winners: Map<number, T>;
  readonly missingShards: number[];
}

const CANONICAL_DECIMAL = /^(?:0|[1-9]\d*)$/;

function taskAttemptRank(id: string | bigint | null): bigint {
  if (id === null) return MAX_TASK_ATTEMPT_ID;
  if (typeof id === "bigint") return id;
  if (!/^\d{1,19}$/.test(id)) {
    throw new ValidationError(
      "taskAttemptId",
      `must be a non-negative 64-bit integer (got ${JSON.stringify(id)})`,
    );
  }
  return BigInt(id);
}

/**
 * Orders two taskAttemptIds as 64-bit integers, a missing one counting as 2^63-1. Never goes
 * through a float: canonical decimal strings compare by length then digits (exactly the integer
 * order), anything else through BigInt.
 */
function compareTaskAttemptIds(a: string | bigint | null, b: string | bigint | null): number {
  if (a === b) return 0;
  if (
    typeof a === "string" &&
    typeof b === "string" &&
    CANONICAL_DECIMAL.test(a) &&
    CANONICAL_DECIMAL.test(b)
  ) {
    if (a.length !== b.length) return a.length < b.length ? -1 : 1;
    return a < b ? -1 : 1;
  }
  const x = taskAttemptRank(a);
  const y = taskAttemptRank(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * Orders attempts by the winner tuple `(attempt, taskAttemptId ?? 2^63-1, url ?? "")`, ascending:
 * the attempt number, then the taskAttemptId as a 64-bit integer, then the url by UTF-16 code
 * units (plain `<`, never a locale). Negative when `a` ranks first, positive when `b` does, zero
 * when the tuples are equal.
 *
 * @example
 * ```ts
 * compareAttempts(
 *   { attempt: 0, taskAttemptId: "9223372036854775806", url: null },
 *   { attempt: 0, taskAttemptId: null, url: null },
 * ) // < 0: a missing taskAttemptId counts as 2^63-1
 * ```
 */
export function compareAttempts(a: RankedAttempt, b: RankedAttempt): number {
  if (a.attempt !== b.attempt) return a.attempt < b.attempt ? -1 : 1;
  const byTask = compareTaskAttemptIds(a.taskAttemptId, b.taskAttemptId);
  if (byTask !== 0) return byTask;
  const ua = a.url ?? "";
  const ub = b.url ?? "";
  return ua === ub ? 0 : ua < ub ? -1 : 1;
}

/**
 * Picks the winner of every shard in `[0, numShards)`: among the shard's `SUCCEEDED` attempts, the
 * smallest by {@link compareAttempts}. One pass keeping the minimum per shard, so the result does
 * not depend on the order (or repetition) of `attempts`, and a million attempts take a fraction of
 * a second. Failed and unfinished attempts never win. Throws a {@link ValidationError} for a shard
 * outside the run.
 *
 * @example
 * ```ts
 * const { winners, missingShards } = selectWinners(2, [
 *   { shard: 0, attempt: 1, taskAttemptId: null, url: "s3://b/d/r/shard=00000/attempt=01", outcome: "SUCCEEDED" },
 *   { shard: 0, attempt: 0, taskAttemptId: null, url: "s3://b/d/r/shard=00000/attempt=00", outcome: "FAILED" },
 * ])
 * winners.get(0)?.attempt // 1
 * missingShards // [1]
 * ```
 */
export function selectWinners<T extends SelectableAttempt>(
  numShards: number,
  attempts: Iterable<T>,
): WinnerSelection<T> {
  if (!Number.isInteger(numShards) || numShards < 1) {
    throw new ValidationError("numShards", `must be an integer ≥ 1 (got ${numShards})`);
  }
  const best: (T | undefined)[] = new Array(numShards);
  for (const candidate of attempts) {
    if (candidate.outcome !== "SUCCEEDED") continue;
    const shard = candidate.shard;
    if (!Number.isInteger(shard) || shard < 0 || shard >= numShards) {
      throw new ValidationError("shard", `must be an integer in [0, ${numShards}) (got ${shard})`);
    }
    const current = best[shard];
    if (current === undefined || compareAttempts(candidate, current) < 0) best[shard] = candidate;
  }
  const winners = new Map<number, T>();
  const missingShards: number[] = [];
  for (let shard = 0; shard < numShards; shard++) {
    const winner = best[shard];
    if (winner === undefined) missingShards.push(shard);
    else winners.set(shard, winner);
  }
  return { winners, missingShards };
}

/**
 * Throws the {@link ShardCoverageError} that names every shard without a successful attempt, or
 * returns the winners when every shard is covered.
 *
 * @example
 * ```ts
 * const winners = requireFullCoverage("r1", selectWinners(4, attempts))
 * ```
 */
export function requireFullCoverage<T extends SelectableAttempt>(
  runId: string,
  selection: WinnerSelection<T>,
): Map<number, T> {
  if (selection.missingShards.length > 0) throw new ShardCoverageError(runId, selection.missingShards);
  return selection.winners;
}
