/**
 * A move of `_CURRENT` the log never recorded: the PUT reached the store, and the publish (or
 * rollback) failed before its CurrentPointerMoved (a timeout on the PUT's answer, a crash). Readers
 * follow the store from then on. The next move must treat the run the store named as the one it
 * replaces: recorded as such, so that run keeps its safety window once readers are moved off it.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openObjectStore } from "../../src/adapters/objectstore/open-object-store.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { BACKEND } from "../support/database.js";
import { delegating, onTestClock, openTestLedger, testClock } from "../support/ledger.js";
import { writeAndPublish } from "../support/runs.js";

const HOUR = 3_600_000;

describe(`a pointer move the log never recorded (${BACKEND})`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  let clock: ReturnType<typeof testClock>;
  let landThenFail = false;

  beforeEach(async () => {
    clock = testClock();
    landThenFail = false;
    t = await openTestLedger({
      clock: clock.now,
      objectStore: (root) => {
        const store = onTestClock(openObjectStore(root), clock.now);
        return {
          ...delegating(store),
          async put(key, body, options) {
            await store.put(key, body, options);
            // The PUT reached the store; its answer did not reach us (a stand-in for a timeout).
            if (landThenFail && key === "_CURRENT") throw new Error("injected: timeout after the PUT landed");
          },
        };
      },
    });
    ledger = t.ledger;
    await ledger.createDataset({ datasetId: "ds", root: t.root, keepRuns: 1, safetyWindow: "1h" });
  });
  afterEach(() => t.close());

  const publish = async (runId: string) => {
    clock.advance(60_000);
    await writeAndPublish(ledger, { dir: t.dir, root: t.root, datasetId: "ds", runId, numShards: 1 });
  };
  const inStore = () =>
    (JSON.parse(readFileSync(join(t.dir, "_CURRENT"), "utf8")) as { runId: string }).runId;
  /** A publish whose `_CURRENT` PUT lands and whose caller sees an error: readers follow it now. */
  const publishLost = async (runId: string) => {
    landThenFail = true;
    await expect(publish(runId)).rejects.toThrow(/injected/);
    landThenFail = false;
    expect(inStore()).toBe(runId);
  };
  const moves = async () =>
    (await ledger.events({ stream: "dataset-ds", limit: 100 }))
      .filter((e) => e.type === "CurrentPointerMoved")
      .map((e) => {
        const d = e.data as { runId: string; previousRunId: string | null };
        return [d.previousRunId, d.runId];
      });

  it("the next publish records the move it finds and keeps the run readers followed for its safety window", async () => {
    await publish("r1");
    await publishLost("r2");
    expect((await ledger.dataset("ds")).currentRunId).toBe("r1");
    clock.advance(2 * HOUR); // nobody retried publish("r2")

    await publish("r3");
    expect(inStore()).toBe("r3");
    expect(await moves()).toEqual([
      [null, "r1"],
      ["r1", "r2"],
      ["r2", "r3"],
    ]);
    // r1 counts as replaced when the log learnt of it: later than it was, never earlier.
    const gc = await ledger.gc("ds");
    expect(gc.actions).toEqual([]);
    expect(gc.protected.find((p) => p.runId === "r2")?.why).toMatch(/safety window/);
    expect(gc.protected.find((p) => p.runId === "r1")?.why).toMatch(/safety window/);
    expect(existsSync(join(t.dir, "manifests/r2.json"))).toBe(true);
    expect(existsSync(join(t.dir, "data/r2/shard=00000/attempt=00/part-0"))).toBe(true);
    expect((await ledger.audit()).match).toBe(true);
    clock.advance(2 * HOUR);
    const later = await ledger.gc("ds");
    expect(later.actions.map((a) => [a.kind, a.runId])).toEqual([
      ["keep_runs", "r1"],
      ["keep_runs", "r2"],
    ]);
  });

  it("a rollback to the run the log calls current moves the store back to it", async () => {
    await publish("r1");
    await publishLost("r2");
    // The log still calls r1 current, but readers follow r2: rolling back to r1 is a real move.
    expect(await ledger.rollback("ds", "r1")).toMatchObject({ runId: "r1", previousRunId: "r2" });
    expect(inStore()).toBe("r1");
    expect(await moves()).toEqual([
      [null, "r1"],
      ["r1", "r2"],
      ["r2", "r1"],
    ]);
    expect((await ledger.gc("ds")).protected.find((p) => p.runId === "r2")?.why).toMatch(/safety window/);
    // With the store and the log agreeing again, r1 is the current run: nothing to roll back.
    await expect(ledger.rollback("ds", "r1")).rejects.toThrow(/already the current run/);
    expect((await ledger.audit()).match).toBe(true);
  });

  it("and after a rollback that crashed between writing _CURRENT and recording it", async () => {
    await publish("r1");
    await publish("r2");
    await publish("r3");
    // A rollback to r2 that crashed after writing _CURRENT.
    const pointer = JSON.parse(readFileSync(join(t.dir, "_CURRENT"), "utf8")) as Record<string, string>;
    writeFileSync(
      join(t.dir, "_CURRENT"),
      `${JSON.stringify({ ...pointer, runId: "r2", manifest: "manifests/r2.json", manifestUrl: `${t.root}/manifests/r2.json` })}\n`,
    );
    clock.advance(2 * HOUR);
    await publish("r4");
    expect(inStore()).toBe("r4");
    expect((await moves()).slice(-2)).toEqual([
      ["r3", "r2"],
      ["r2", "r4"],
    ]);
    const gc = await ledger.gc("ds");
    expect(gc.protected.find((p) => p.runId === "r2")?.why).toMatch(/safety window/);
    expect(existsSync(join(t.dir, "manifests/r2.json"))).toBe(true);
    expect((await ledger.audit()).match).toBe(true);
  });
});
