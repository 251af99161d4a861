import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { GENERATED_PATH, renderMachineTables } from "../../scripts/generate-machine-tables.js";
import { deriveAttemptTable, phaseInfoOf } from "../../src/machines/attempt-machine.js";
import { ATTEMPT_TABLE, attemptPhaseInfo, RUN_TABLE } from "../../src/machines/machine-tables.js";
import { deriveRunTable } from "../../src/machines/run-machine.js";
import type { TransitionTable } from "../../src/machines/transition-table.js";

/**
 * The ledger folds with checked-in tables (machine-tables.generated.ts) instead of the XState
 * machines, so that no process pays for loading XState and exploring the statecharts at start-up.
 * These tests keep the two from drifting apart.
 */
describe("generated machine tables", () => {
  it("are what the generator derives from the machines now (run `npm run generate:machines` after changing a machine)", () => {
    expect(readFileSync(GENERATED_PATH, "utf8")).toBe(renderMachineTables());
  });

  const sameAs = (derived: TransitionTable, table: typeof RUN_TABLE) => {
    expect(table.initial).toBe(derived.initial);
    expect(table.states).toEqual(derived.states);
    expect(table.events).toEqual(derived.events);
    // Every state × event, including those the machine refuses (undefined on both sides).
    for (const state of [...derived.states, "NO_SUCH_STATE"]) {
      for (const event of [...derived.events, "NoSuchEvent"]) {
        expect({ state, event, next: table.next(state, event) }).toEqual({
          state,
          event,
          next: derived.next(state, event),
        });
      }
    }
  };

  it("answer every state × event exactly as the run machine does", () => {
    sameAs(deriveRunTable(), RUN_TABLE);
  });

  it("answer every state × event exactly as the attempt machine does, with each phase's meaning", () => {
    const derived = deriveAttemptTable();
    sameAs(derived, ATTEMPT_TABLE);
    for (const phase of derived.states) {
      expect(attemptPhaseInfo(phase)).toEqual(phaseInfoOf(derived.snapshot(phase)));
    }
    expect(() => attemptPhaseInfo("outcome.NOWHERE")).toThrow(/unknown attempt phase/);
  });
});
