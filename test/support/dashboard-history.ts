import { isShardCoverageError } from "../../src/errors.js";
import type { Ledger, LedgerOptions } from "../../src/ledger/open-ledger.js";
import type { ObjectStore } from "../../src/storage/object-store.js";
import { writeAttempt } from "./runs.js";

const DAY = 86_400_000;

/**
 * A wall clock that can be set back in time: the history is recorded partly "nine days ago" so
 * that gc has a failed run past its retention to prune, then at the real now, so that what the
 * page shows relative to the browser's clock ("expires in 7d") is true.
 */
export function historyClock(): { now: () => Date; setOffset(ms: number): void } {
  let offset = 0;
  return {
    now: () => new Date(Date.now() + offset),
    setOffset(ms: number) {
      offset = ms;
    },
  };
}

/** The error a deletion meets while the store is "unreachable" (what the pending item shows). */
export const UNREACHABLE = "connect ECONNREFUSED 10.255.0.1:443 (the object store is unreachable)";

/**
 * An object store whose deletions can be made to fail, standing in for an unreachable endpoint.
 */
export function historyStore(): {
  wrap: (store: ObjectStore) => ObjectStore;
  unreachable(on: boolean): void;
} {
  let down = false;
  return {
    wrap: (store) => ({
      rootUrl: store.rootUrl,
      list: (prefix, options) => store.list(prefix, options),
      put: (key, body, options) => store.put(key, body, options),
      get: (key) => store.get(key),
      deleteMany: async (keys) => {
        if (down) throw Object.assign(new Error(UNREACHABLE), { code: "ECONNREFUSED" });
        return store.deleteMany(keys);
      },
    }),
    unreachable(on: boolean) {
      down = on;
    },
  };
}

/** The ledger options the history needs: its clock, its store, quick in-pass retries, a long between-pass wait. */
export function historyLedgerOptions(
  clock: ReturnType<typeof historyClock>,
  store: ReturnType<typeof historyStore>,
  openStore: (url: string) => ObjectStore,
): Partial<LedgerOptions> {
  return {
    clock: clock.now,
    cleanupAfterPublish: false,
    objectStore: (url) => store.wrap(openStore(url)),
    sleep: async () => {},
    random: () => 1,
    maintenance: {
      deletion: { maxTries: 1, baseDelayMs: 1, maxDelayMs: 1 },
      pending: { maxTries: 5, baseDelayMs: 600_000, maxDelayMs: 3_600_000 },
    },
  };
}

/** What the history recorded, for a test to look for on the page. */
export interface DashboardHistory {
  datasetId: string;
  /** The current run: published, shard 1 retried (attempt 0 failed) and raced (attempt 2 lost). */
  currentRunId: string;
  winnerUrls: string[];
  loserUrl: string;
  /** The failed run inside the failed-retention floor (its coverage check failed). */
  failedRunId: string;
  /** A failed run nine days old that gc pruned past the floor (a rollup). */
  prunedRunId: string;
}

/**
 * A demo-like history in a fresh ledger: a failed run pruned by gc (a rollup), a published run
 * with a retried shard and a speculative duplicate (a loser), a cleanup pass while the store is
 * unreachable (a pending item with its error and next retry), and a run whose coverage check
 * failed (inside the failed-retention floor, which expires in 7 days).
 *
 * @example
 * ```ts
 * const history = await recordDashboardHistory(ledger, { dir, root, clock, store })
 * ```
 */
export async function recordDashboardHistory(
  ledger: Ledger,
  ctx: {
    dir: string;
    root: string;
    clock: ReturnType<typeof historyClock>;
    store: ReturnType<typeof historyStore>;
  },
): Promise<DashboardHistory> {
  const { dir, root, clock, store } = ctx;
  const datasetId = "clickstream";
  clock.setOffset(-9 * DAY);
  await ledger.createDataset({
    datasetId,
    root,
    keepRuns: 3,
    safetyWindow: "0s",
    failedRetention: "7d",
  });

  // Nine days ago: a writer gave up; past the 7-day floor now, so gc prunes it (a rollup).
  const prunedRunId = "run-0001";
  await ledger.startRun({ datasetId, numShards: 1, runId: prunedRunId });
  await ledger.failRun(prunedRunId, "writer gave up");
  clock.setOffset(0);
  await ledger.gc(datasetId);

  // The current run: shard 1 failed once and was retried; a speculative duplicate of it lost.
  const currentRunId = "run-0002";
  await ledger.startRun({ datasetId, numShards: 3, runId: currentRunId });
  const winnerUrls: string[] = [];
  for (const shard of [0, 2]) {
    const url = writeAttempt(dir, root, currentRunId, shard, 0);
    await ledger.attemptSucceeded({ runId: currentRunId, shard, attempt: 0, url });
  }
  await ledger.attemptFailed({
    runId: currentRunId,
    shard: 1,
    attempt: 0,
    url: writeAttempt(dir, root, currentRunId, 1, 0),
    error: "executor lost",
  });
  const retried = writeAttempt(dir, root, currentRunId, 1, 1);
  await ledger.attemptSucceeded({ runId: currentRunId, shard: 1, attempt: 1, url: retried });
  const loserUrl = writeAttempt(dir, root, currentRunId, 1, 2);
  await ledger.attemptSucceeded({ runId: currentRunId, shard: 1, attempt: 2, url: loserUrl });
  const published = await ledger.publish(currentRunId);
  for (const w of published.winners) if (w.url) winnerUrls.push(w.url);

  // Cleanup while the store is unreachable: the losers wait in the pending set with the error.
  store.unreachable(true);
  await ledger.cleanup({ datasetId });
  store.unreachable(false);

  // A run that loses a shard: publish refuses it, the run fails and enters the floor.
  const failedRunId = "run-0003";
  await ledger.startRun({ datasetId, numShards: 3, runId: failedRunId });
  for (const shard of [0, 2]) {
    const url = writeAttempt(dir, root, failedRunId, shard, 0);
    await ledger.attemptSucceeded({ runId: failedRunId, shard, attempt: 0, url });
  }
  await ledger.publish(failedRunId).catch((e: unknown) => {
    if (!isShardCoverageError(e)) throw e;
  });

  return { datasetId, currentRunId, winnerUrls, loserUrl, failedRunId, prunedRunId };
}
