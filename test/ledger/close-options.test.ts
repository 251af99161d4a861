import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { openObjectStore } from "../../src/adapters/objectstore/open-object-store.js";
import { isValidationError } from "../../src/errors.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import type { ObjectStore } from "../../src/storage/object-store.js";
import { openTestLedger } from "../support/ledger.js";
import { attemptKeyOf, writeAttempt } from "../support/runs.js";

/**
 * `close({ backgroundCleanup })`: the loser cleanup `publish` starts in the background is either
 * waited for (the default) or abandoned at its next safe point — and what an abandoned pass did
 * not delete is left as work the next cleanup pass finishes.
 */

const SHARDS = 6;

/** A filesystem store whose first delete request waits until the test lets it go. */
function gatedStore() {
  let entered!: () => void;
  const firstDelete = new Promise<void>((resolve) => {
    entered = resolve;
  });
  let release!: () => void;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  let calls = 0;
  const factory = (rootUrl: string): ObjectStore => {
    const inner = openObjectStore(rootUrl);
    return {
      rootUrl: inner.rootUrl,
      list: (prefix, options) => inner.list(prefix, options),
      put: (key, body, options) => inner.put(key, body, options),
      get: (key) => inner.get(key),
      async deleteMany(keys) {
        if (calls++ === 0) {
          entered();
          await gate;
        }
        return inner.deleteMany(keys);
      },
    };
  };
  return { factory, firstDelete, release };
}

/** A run of SHARDS shards, each with a winner (attempt 0) and a successful loser (attempt 1). */
async function publishWithLosers(ledger: Ledger, t: { dir: string; root: string }): Promise<void> {
  await ledger.createDataset({ datasetId: "ds", root: t.root });
  await ledger.startRun({ datasetId: "ds", numShards: SHARDS, runId: "r1" });
  for (let shard = 0; shard < SHARDS; shard++) {
    for (const attempt of [0, 1]) {
      const url = writeAttempt(t.dir, t.root, "r1", shard, attempt);
      await ledger.attemptSucceeded({ runId: "r1", shard, attempt, url });
    }
  }
  await ledger.publish("r1");
}

const onDisk = (dir: string, attempt: number) =>
  Array.from({ length: SHARDS }, (_, shard) => shard).filter((shard) =>
    existsSync(join(dir, attemptKeyOf("r1", shard, attempt))),
  );

let cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups) await c();
  cleanups = [];
});

describe("close({ backgroundCleanup })", () => {
  it('"wait" (the default) returns once the background cleanup has deleted and recorded every loser', async () => {
    const store = gatedStore();
    const t = await openTestLedger();
    cleanups.push(() => t.close());
    const ledger = await t.reopen({ cleanupAfterPublish: true, objectStore: store.factory });
    await publishWithLosers(ledger, t);
    await store.firstDelete;

    const closing = ledger.close();
    // Let the first delete go only after close() was called: close must wait for what follows.
    await new Promise((resolve) => setImmediate(resolve));
    store.release();
    await closing;

    expect(onDisk(t.dir, 1)).toEqual([]);
    expect(onDisk(t.dir, 0)).toEqual([0, 1, 2, 3, 4, 5]);
    const reader = await t.reopen();
    expect(await reader.pendingCleanup({ datasetId: "ds" })).toEqual([]);
    const { attempts } = await reader.run("r1");
    expect(attempts.filter((a) => a.attempt === 1).map((a) => a.status)).toEqual(
      Array(SHARDS).fill("DELETED"),
    );
  });

  it('"abandon" stops at the next safe point; the next cleanup pass deletes the rest', async () => {
    const store = gatedStore();
    const t = await openTestLedger();
    cleanups.push(() => t.close());
    const ledger = await t.reopen({ cleanupAfterPublish: true, objectStore: store.factory });
    await publishWithLosers(ledger, t);
    await store.firstDelete;

    const closing = ledger.close({ backgroundCleanup: "abandon" });
    store.release();
    await closing;

    // At most the prefix whose delete was in flight is gone; the other losers were left alone.
    const left = onDisk(t.dir, 1);
    expect(left.length).toBeGreaterThanOrEqual(SHARDS - 1);
    expect(onDisk(t.dir, 0)).toEqual([0, 1, 2, 3, 4, 5]);

    // Nothing is lost track of: the next pass (as `shardledger cleanup --retry-now` runs it)
    // finds every loser the abandoned pass did not finish, deletes it and records it.
    const next = await t.reopen();
    const report = await next.cleanup({ datasetId: "ds", retryNow: true });
    expect(report.failed).toEqual([]);
    expect(report.pending).toBe(0);
    expect(report.deleted.length).toBeGreaterThanOrEqual(left.length);
    expect(onDisk(t.dir, 1)).toEqual([]);
    expect(onDisk(t.dir, 0)).toEqual([0, 1, 2, 3, 4, 5]);
    const { attempts } = await next.run("r1");
    expect(attempts.filter((a) => a.attempt === 1).map((a) => a.status)).toEqual(
      Array(SHARDS).fill("DELETED"),
    );
  });

  it("refuses an unknown mode, naming the option, and closes nothing", async () => {
    const t = await openTestLedger();
    cleanups.push(() => t.close());
    const ledger = await t.reopen();
    const error = await ledger.close({ backgroundCleanup: "later" as unknown as "wait" }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(isValidationError(error) && error.field).toBe("backgroundCleanup");
    // Still open: it answers.
    expect(await ledger.datasets()).toEqual([]);
  });

  it("a second close is a no-op", async () => {
    const t = await openTestLedger();
    cleanups.push(() => t.close());
    const ledger = await t.reopen();
    await ledger.close();
    await expect(ledger.close({ backgroundCleanup: "abandon" })).resolves.toBeUndefined();
  });
});
