import type { AttemptPhaseInfo } from "./attempt-machine.js";
import {
  ATTEMPT_PHASES,
  ATTEMPT_TRANSITIONS,
  RUN_TRANSITIONS,
  type TransitionData,
} from "./machine-tables.generated.js";
import type { RunStatus } from "./run-machine.js";

/**
 * The run and attempt machines as the ledger folds them: lookup tables over checked-in data that
 * `scripts/generate-machine-tables.ts` derives from the XState machines (attempt-machine.ts,
 * run-machine.ts), which stay the one definition of behaviour. Folding a run, deciding a command
 * and every CLI invocation read these tables without loading XState or exploring a statechart at
 * start-up; `test/machines/machine-tables.test.ts` regenerates the data and fails if it differs.
 */

/**
 * A transition table: `next(state, event)` is the state the machine goes to, or `undefined` when
 * it refuses the event.
 *
 * @example
 * ```ts
 * RUN_TABLE.next("FAILED", "RunReopened.inside") // "STARTED"
 * ```
 */
export interface TransitionLookup {
  /** Key of the initial state. */
  readonly initial: string;
  /** Every reachable state key, in discovery order. */
  readonly states: readonly string[];
  /** Every event key the table knows. */
  readonly events: readonly string[];
  /** The state the machine goes to on `event` from `state`, or `undefined` when it refuses. */
  next(state: string, event: string): string | undefined;
}

function lookup(data: TransitionData): TransitionLookup {
  const rows = new Map(
    Object.entries(data.next).map(([state, row]) => [state, new Map(Object.entries(row))]),
  );
  return Object.freeze({
    initial: data.initial,
    states: Object.freeze([...data.states]),
    events: Object.freeze([...data.events]),
    next: (state: string, event: string) => rows.get(state)?.get(event),
  });
}

/**
 * The attempt machine's table. Phases are state-value keys such as
 * `"outcome.SUCCEEDED|disposition.LOSER"`.
 *
 * @example
 * ```ts
 * ATTEMPT_TABLE.next(ATTEMPT_TABLE.initial, "REPORT_SUCCEEDED") // "outcome.SUCCEEDED|disposition.UNCLASSIFIED"
 * ```
 */
export const ATTEMPT_TABLE: TransitionLookup = lookup(ATTEMPT_TRANSITIONS);

/**
 * The run machine's table. Phases: `"NONE"`, `"STARTED"`, `"PUBLISHING.selecting"`,
 * `"PUBLISHING.winnersSelected"`, `"PUBLISHING.manifestPublished"`, `"SUCCEEDED"`, `"FAILED"`,
 * `"PRUNED"`.
 *
 * @example
 * ```ts
 * RUN_TABLE.next("FAILED", "RunReopened") // undefined: outside the floor
 * ```
 */
export const RUN_TABLE: TransitionLookup = lookup(RUN_TRANSITIONS);

const PHASE_INFO: ReadonlyMap<string, AttemptPhaseInfo> = new Map(
  Object.entries(ATTEMPT_PHASES).map(([phase, info]) => [phase, Object.freeze({ ...info })]),
);

/**
 * The meaning of an attempt machine phase. Throws for a key that is not a reachable phase.
 *
 * @example
 * ```ts
 * attemptPhaseInfo(ATTEMPT_TABLE.initial) // { outcome: "STARTED", status: "STARTED", exhausted: false }
 * ```
 */
export function attemptPhaseInfo(phase: string): AttemptPhaseInfo {
  const info = PHASE_INFO.get(phase);
  if (!info) throw new Error(`unknown attempt phase ${JSON.stringify(phase)}`);
  return info;
}

/**
 * The run status of a run machine phase (its top-level state).
 *
 * @example
 * ```ts
 * runStatusOf("PUBLISHING.manifestPublished") // "PUBLISHING"
 * ```
 */
export function runStatusOf(phase: string): RunStatus {
  const dot = phase.indexOf(".");
  return (dot < 0 ? phase : phase.slice(0, dot)) as RunStatus;
}
