import type { AttemptStatus } from "../machines/attempt-machine.js";
import { type DatasetRoot, parseDatasetRoot } from "../storage/dataset-url.js";
import { type Comparable, comparable, OverlapIndex, reservedKeyReason } from "./url-overlap.js";

/**
 * What {@link planLoserCleanup} needs of one attempt.
 *
 * @example
 * ```ts
 * const a: LoserCandidate = { url: "s3://lake/events/data/r1/shard=00000/attempt=01", status: "LOSER" }
 * ```
 */
export interface LoserCandidate {
  readonly url: string | null;
  readonly status: AttemptStatus;
}

/**
 * Input of {@link planLoserCleanup}.
 *
 * @example
 * ```ts
 * const input: LoserCleanupInput = { root: "s3://lake/events", attempts, winnerUrls: ["s3://lake/events/data/r1/shard=00000/attempt=00"] }
 * ```
 */
export interface LoserCleanupInput {
  /** The dataset root. */
  readonly root: string | DatasetRoot;
  /** The attempts of one published run. */
  readonly attempts: readonly LoserCandidate[];
  /** The winner URLs of every live (unpruned) run of the dataset, this one included. */
  readonly winnerUrls: readonly string[];
}

/**
 * One loser prefix to delete: the URL as recorded (for events) and its root-relative prefix with
 * a trailing `/` (for {@link deletePrefix}).
 *
 * @example
 * ```ts
 * const p: LoserPrefix = { url: "s3://lake/events/data/r1/shard=00000/attempt=01", prefix: "data/r1/shard=00000/attempt=01/" }
 * ```
 */
interface LoserPrefix {
  readonly url: string;
  readonly prefix: string;
}

/**
 * The plan: prefixes to delete, and URLs refused with the reason.
 *
 * @example
 * ```ts
 * const { prefixes, refused }: LoserCleanupPlan = planLoserCleanup(input)
 * ```
 */
export interface LoserCleanupPlan {
  readonly prefixes: LoserPrefix[];
  readonly refused: { url: string; reason: string }[];
}

/**
 * Plans the deletion of a published run's losers: every attempt in status `LOSER` or
 * `CLEANUP_PENDING` that has a URL. Each URL must map under the root (`keyUnderRoot`) and must not
 * equal, contain or lie inside any winner URL, compared by path segments (so
 * `…/attempt=01` and `…/attempt=010` are unrelated) — nor be `_CURRENT`, the archive, or a whole
 * `data`/`manifests` area. Anything else goes to `refused` with the reason, never throws the plan
 * away. Both lists are deduplicated by root-relative key (first URL wins) and keep input order.
 * Pure: no I/O.
 *
 * @example
 * ```ts
 * planLoserCleanup({
 *   root: "s3://lake/events",
 *   attempts: [
 *     { url: "s3://lake/events/data/r1/shard=00000/attempt=00", status: "WINNER" },
 *     { url: "s3://lake/events/data/r1/shard=00000/attempt=01", status: "LOSER" },
 *     { url: "s3://lake/events/data/r1/shard=00000", status: "LOSER" },
 *   ],
 *   winnerUrls: ["s3://lake/events/data/r1/shard=00000/attempt=00"],
 * })
 * // → prefixes: [{ url: "…/attempt=01", prefix: "data/r1/shard=00000/attempt=01/" }]
 * //   refused:  [{ url: "…/shard=00000", reason: "it contains the winner …/attempt=00" }]
 * ```
 */
export function planLoserCleanup(input: LoserCleanupInput): LoserCleanupPlan {
  const root = typeof input.root === "string" ? parseDatasetRoot(input.root) : input.root;
  const winners = new OverlapIndex<null>();
  for (const url of input.winnerUrls) winners.add(comparable(root, url), null);
  const prefixes: LoserPrefix[] = [];
  const refused: { url: string; reason: string }[] = [];
  const seen = new Set<string>();

  for (const attempt of input.attempts) {
    if (attempt.url === null || (attempt.status !== "LOSER" && attempt.status !== "CLEANUP_PENDING"))
      continue;
    const candidate = comparable(root, attempt.url);
    const dedupeKey = candidate.key ?? `\u0000${attempt.url}`;
    if (seen.has(dedupeKey)) continue;
    seen.add(dedupeKey);
    const reason = refusalReason(root, candidate, winners);
    if (reason !== null) refused.push({ url: attempt.url, reason });
    else prefixes.push({ url: attempt.url, prefix: `${candidate.key}/` });
  }
  return { prefixes, refused };
}

function refusalReason(root: DatasetRoot, candidate: Comparable, winners: OverlapIndex<null>): string | null {
  if (candidate.key === null) return candidate.escapeReason ?? `it is not under the dataset root ${root.url}`;
  const reserved = reservedKeyReason(candidate.key);
  if (reserved !== null) return reserved;
  const hit = winners.find(candidate);
  if (hit === null) return null;
  return hit.relation === "equals"
    ? `it is the winner ${hit.url}`
    : `it ${hit.relation} the winner ${hit.url}`;
}
