import { describe, expect, it } from "vitest";
import { currentOp, Interleaver } from "../support/faulty-store.js";

/**
 * The safety property's scheduler (test/support/faulty-store.ts). An operation may make several
 * store calls at once (cleanup with `--concurrency 16` deletes and lists in parallel); each call
 * parks at its own gate, and every one of them must be released in its turn. A scheduler that
 * kept one parked call per operation lost the first call's release when a second call of the same
 * operation parked beside it: the first call never returned, and the safety property reported a
 * "hung" step (R4) that was the harness's, not the ledger's.
 */
describe("Interleaver", () => {
  /** A store call as the safety harness makes one: it parks at the gate of its operation. */
  const storeCall = async (name: string, log: string[]) => {
    const ctx = currentOp();
    if (ctx?.interleaver) await ctx.interleaver.gate(ctx.op, `${ctx.label}: ${name}`);
    log.push(name);
  };

  it("releases every concurrent call of one operation, each in its turn", async () => {
    for (const choices of [[], [0, 1, 0, 1, 0], [1, 1, 1, 1], [2, 0, 1, 2, 0, 1]]) {
      const log: string[] = [];
      const il = new Interleaver(choices, { stallMs: 20 });
      const timeout = new Promise<"hung">((resolve) => setTimeout(() => resolve("hung"), 2_000).unref());
      const settled = Promise.race([
        il.run([
          {
            label: "parallel",
            fn: async () => {
              await Promise.all([storeCall("a", log), storeCall("b", log), storeCall("c", log)]);
            },
          },
          { label: "single", fn: () => storeCall("d", log) },
        ]),
        timeout,
      ]);
      const result = await settled;
      expect(result, `choices ${JSON.stringify(choices)}: ${il.trace.join(" → ")}`).not.toBe("hung");
      expect([...log].sort()).toEqual(["a", "b", "c", "d"]);
      // Every call passed its gate once: two starts and four calls. (A call that ends without
      // reaching another gate is not seen ending: the stall timer moves on from it.)
      expect(il.trace).toHaveLength(6);
    }
  });

  it("is a function of its choices: the same choices give the same order", async () => {
    const order = async (choices: number[]) => {
      const log: string[] = [];
      const il = new Interleaver(choices, { stallMs: 20 });
      const hung = new Promise<"hung">((resolve) => setTimeout(() => resolve("hung"), 2_000).unref());
      const result = await Promise.race([
        il.run([
          { label: "x", fn: () => Promise.all([storeCall("x1", log), storeCall("x2", log)]) },
          { label: "y", fn: () => Promise.all([storeCall("y1", log), storeCall("y2", log)]) },
        ]),
        hung,
      ]);
      expect(result, il.trace.join(" → ")).not.toBe("hung");
      return { log, trace: il.trace };
    };
    const first = await order([1, 0, 1, 0, 1, 0]);
    expect(await order([1, 0, 1, 0, 1, 0])).toEqual(first);
    expect(first.log).toEqual(["y1", "x1", "y2", "x2"]);
  });
});
