import { fc, test } from "@fast-check/vitest";
import { expect } from "vitest";
import { restoreRunState, serialiseRunState } from "../../src/machines/run-snapshot.js";
import { evolveRun, foldRun } from "../../src/machines/run-state.js";
import { commandArb, Live, RUN } from "../support/run-histories.js";

/*
 * A snapshot plus the tail is the fold: for random run histories (reports, selections, failures,
 * reopens, cleanup, prunes — most commands refused, as in the run machine's property) and every
 * point of the history, restoring the serialised state of the events so far and folding the rest
 * on top gives exactly the state of folding the whole history; and a restored state serialises to
 * the same text.
 */
test.prop([fc.array(commandArb, { minLength: 5, maxLength: 60, size: "max" }), fc.nat()], { numRuns: 150 })(
  "snapshot + tail == the whole fold, at every point of a random history",
  (commands, seed) => {
    const live = new Live();
    if (commands.length % 5 !== 0) live.run({ type: "start", runId: RUN, datasetId: "ds", numShards: 2 });
    for (const command of commands) {
      if (command.type === "advance") live.now += command.ms;
      else live.run(command);
      live.now += 1000;
    }
    const whole = foldRun(live.log);
    expect(whole).toStrictEqual(live.state);
    // Every cut for short histories; a few chosen by the seed for long ones.
    const cuts =
      live.log.length <= 20
        ? Array.from({ length: live.log.length }, (_, i) => i + 1)
        : [
            1,
            live.log.length,
            ...Array.from({ length: 8 }, (_, i) => ((seed + i * 7919) % live.log.length) + 1),
          ];
    for (const cut of cuts) {
      const prefix = foldRun(live.log.slice(0, cut));
      const text = serialiseRunState(prefix);
      const restored = restoreRunState(text);
      expect(restored).toStrictEqual(prefix);
      if (!restored) continue;
      expect(serialiseRunState(restored)).toBe(text);
      for (const e of live.log.slice(cut)) evolveRun(restored, e);
      expect(restored).toStrictEqual(whole);
    }
  },
);
