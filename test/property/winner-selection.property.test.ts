import { fc, test } from "@fast-check/vitest";
import { expect } from "vitest";
import { MAX_TASK_ATTEMPT_ID } from "../../src/events/identifiers.js";
import {
  compareAttempts,
  type SelectableAttempt,
  selectWinners,
} from "../../src/machines/winner-selection.js";

const TASK_IDS = [null, "0", "1", "9", "10", "9223372036854775806", "9223372036854775807"] as const;
const URLS = [null, "", "Z", "a", "aa", "\uFFFF", "\uD83D\uDE00", "s3://b/x"] as const;

const attemptArb = (numShards: number) =>
  fc.record({
    shard: fc.integer({ min: 0, max: numShards - 1 }),
    attempt: fc.integer({ min: 0, max: 3 }),
    taskAttemptId: fc.constantFrom(...TASK_IDS),
    url: fc.constantFrom(...URLS),
    outcome: fc.constantFrom("STARTED", "SUCCEEDED", "SUCCEEDED", "FAILED"),
  }) as fc.Arbitrary<SelectableAttempt>;

/** A run's reports, and the same reports in another order with some reported again. */
const reportsArb = fc.integer({ min: 1, max: 6 }).chain((numShards) =>
  fc.array(attemptArb(numShards), { maxLength: 40 }).chain((attempts) =>
    fc
      .tuple(
        fc.array(fc.double({ noNaN: true }), { minLength: attempts.length, maxLength: attempts.length }),
        fc.subarray(attempts),
      )
      .map(([keys, repeated]) => {
        const reordered = [...attempts, ...repeated]
          .map((a, i) => ({ a, k: keys[i % Math.max(1, keys.length)] ?? 0, i }))
          .sort((x, y) => x.k - y.k || y.i - x.i)
          .map((x) => x.a);
        return { numShards, attempts, reordered };
      }),
  ),
);

/** The winner tuple with a missing taskAttemptId written out as 2^63-1, so equal ranks print equal. */
const rank = (a: SelectableAttempt) => [
  a.attempt,
  a.taskAttemptId === null ? MAX_TASK_ATTEMPT_ID.toString() : BigInt(a.taskAttemptId).toString(),
  a.url ?? "",
];

/** The obvious, slow reference: sort each shard's successes with a bigint comparator and take the first. */
function referenceWinners(numShards: number, attempts: readonly SelectableAttempt[]) {
  const out = new Map<number, ReturnType<typeof rank>>();
  for (let shard = 0; shard < numShards; shard++) {
    const successes = attempts
      .filter((a) => a.shard === shard && a.outcome === "SUCCEEDED")
      .map(rank)
      .sort((x, y) => {
        if (x[0] !== y[0]) return (x[0] as number) - (y[0] as number);
        const bx = BigInt(x[1] as string);
        const by = BigInt(y[1] as string);
        if (bx !== by) return bx < by ? -1 : 1;
        // Code-unit order, spelled out instead of trusting `<`.
        const ux = x[2] as string;
        const uy = y[2] as string;
        for (let i = 0; i < Math.min(ux.length, uy.length); i++) {
          const d = ux.charCodeAt(i) - uy.charCodeAt(i);
          if (d !== 0) return d;
        }
        return ux.length - uy.length;
      });
    if (successes[0]) out.set(shard, successes[0]);
  }
  return out;
}

const ranked = (winners: Map<number, SelectableAttempt>) =>
  new Map([...winners].map(([s, a]) => [s, rank(a)]));

test.prop([reportsArb], { numRuns: 200 })(
  "the winners do not depend on the order of the reports, nor on repeated reports",
  ({ numShards, attempts, reordered }) => {
    const first = selectWinners(numShards, attempts);
    const second = selectWinners(numShards, reordered);
    expect(ranked(second.winners)).toEqual(ranked(first.winners));
    expect(second.missingShards).toEqual(first.missingShards);
  },
);

test.prop([reportsArb], { numRuns: 200 })(
  "each winner is a success of its shard ranking at or before every other success; failures never win",
  ({ numShards, attempts }) => {
    const { winners, missingShards } = selectWinners(numShards, attempts);
    for (const [shard, winner] of winners) {
      expect(winner.shard).toBe(shard);
      expect(winner.outcome).toBe("SUCCEEDED");
      for (const other of attempts) {
        if (other.shard === shard && other.outcome === "SUCCEEDED") {
          expect(compareAttempts(winner, other)).toBeLessThanOrEqual(0);
        }
      }
    }
    const covered = new Set(attempts.filter((a) => a.outcome === "SUCCEEDED").map((a) => a.shard));
    expect(missingShards).toEqual(
      Array.from({ length: numShards }, (_, s) => s).filter((s) => !covered.has(s)),
    );
    expect(winners.size + missingShards.length).toBe(numShards);
  },
);

test.prop([reportsArb], { numRuns: 200 })(
  "agrees with a sort-based bigint reference",
  ({ numShards, attempts }) => {
    expect(ranked(selectWinners(numShards, attempts).winners)).toEqual(referenceWinners(numShards, attempts));
  },
);

test.prop(
  [fc.bigInt({ min: 0n, max: MAX_TASK_ATTEMPT_ID }), fc.bigInt({ min: 0n, max: MAX_TASK_ATTEMPT_ID })],
  {
    numRuns: 200,
  },
)("orders any two 64-bit taskAttemptIds as integers, given as strings or bigints", (x, y) => {
  const a = { attempt: 0, taskAttemptId: x.toString(), url: null };
  const b = { attempt: 0, taskAttemptId: y, url: null };
  expect(Math.sign(compareAttempts(a, b))).toBe(x < y ? -1 : x > y ? 1 : 0);
});
