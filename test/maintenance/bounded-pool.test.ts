import { fc, test } from "@fast-check/vitest";
import { describe, expect, it } from "vitest";
import { forEachBounded } from "../../src/maintenance/bounded-pool.js";
import { coalescedCheck } from "../../src/maintenance/coalesced-check.js";

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe("forEachBounded", () => {
  test.prop([fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 60 }), fc.integer({ min: 1, max: 8 })])(
    "does every item once, never more than `limit` at a time",
    async (delays, limit) => {
      let inFlight = 0;
      let peak = 0;
      const done: number[] = [];
      await forEachBounded(delays.entries(), limit, async ([i, d]) => {
        inFlight++;
        peak = Math.max(peak, inFlight);
        for (let k = 0; k < d; k++) await tick();
        done.push(i);
        inFlight--;
      });
      expect(done.sort((a, b) => a - b)).toEqual(delays.map((_, i) => i));
      expect(peak).toBeLessThanOrEqual(limit);
    },
  );

  it("pulls a generator lazily: it runs ahead of the workers by at most one item per worker", async () => {
    let produced = 0;
    let consumed = 0;
    let maxAhead = 0;
    async function* source() {
      for (let i = 0; i < 50; i++) {
        produced++;
        maxAhead = Math.max(maxAhead, produced - consumed);
        yield i;
      }
    }
    await forEachBounded(source(), 4, async () => {
      await tick();
      consumed++;
    });
    expect(consumed).toBe(50);
    expect(maxAhead).toBeLessThanOrEqual(4);
  });

  it("stops pulling after the first error, lets the items in flight finish, then throws it", async () => {
    const started: number[] = [];
    const finished: number[] = [];
    const error = new Error("boom");
    await expect(
      forEachBounded([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 3, async (i) => {
        started.push(i);
        await tick();
        if (i === 1) throw error;
        await tick();
        finished.push(i);
      }),
    ).rejects.toBe(error);
    expect(started.length).toBeLessThan(10);
    // Everything started other than the failing item finished.
    expect(finished.sort()).toEqual(started.filter((i) => i !== 1).sort());
  });

  it("refuses a limit that is not a positive integer", async () => {
    await expect(forEachBounded([1], 0, async () => {})).rejects.toThrow(RangeError);
  });
});

describe("coalescedCheck", () => {
  it("answers every caller with a check that started after it called, sharing one run among waiters", async () => {
    let runs = 0;
    const startedAt: number[] = [];
    let clock = 0;
    const releases: (() => void)[] = [];
    const check = coalescedCheck(() => {
      runs++;
      startedAt.push(clock);
      return new Promise<void>((resolve) => releases.push(resolve));
    });
    clock = 1;
    const first = check();
    clock = 2;
    const waiters = [check(), check(), check()];
    expect(runs).toBe(1);
    releases.shift()?.();
    await first;
    await tick();
    // One next run for the three waiters, started after they called (clock 2 > their calls at 2? ≥).
    expect(runs).toBe(2);
    expect(startedAt[1]).toBeGreaterThanOrEqual(2);
    releases.shift()?.();
    await Promise.all(waiters);
    expect(runs).toBe(2);
  });

  it("passes a failure to every caller that shared the run", async () => {
    const lost = new Error("lease lost");
    const check = coalescedCheck(async () => {
      await tick();
      throw lost;
    });
    const results = await Promise.allSettled([check(), check(), check()]);
    expect(results.every((r) => r.status === "rejected" && r.reason === lost)).toBe(true);
  });
});
