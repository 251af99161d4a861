import { setup, stateIn } from "xstate";
import { deriveTransitionTable, type TransitionTable } from "./transition-table.js";
import type { AttemptOutcome } from "./winner-selection.js";

/**
 * Where an attempt is in its lifecycle (SPEC "Attempt lifecycle"): `STARTED → SUCCEEDED | FAILED`,
 * at publish `WINNER` or `LOSER`, and a loser ends `DELETED` or stays `CLEANUP_PENDING` until a
 * later pass deletes it.
 *
 * @example
 * ```ts
 * const done: AttemptStatus[] = ["WINNER", "DELETED"]
 * ```
 */
export type AttemptStatus =
  | "STARTED"
  | "SUCCEEDED"
  | "FAILED"
  | "WINNER"
  | "LOSER"
  | "CLEANUP_PENDING"
  | "DELETED";

/**
 * The events the attempt machine understands. The fold translates log events into these:
 * `AttemptStarted/Succeeded/Failed` into the reports, `WinnerSelected` into `SELECT_WINNER` for the
 * named attempt and `SELECT_LOSER` for the others, `RunFailed` during publishing into
 * `PUBLISH_UNDONE`, and the cleanup events of the attempt's url into the `CLEANUP_*` events.
 *
 * @example
 * ```ts
 * const e: AttemptMachineEvent = { type: "CLEANUP_FAILED", exhausted: true }
 * ```
 */
type AttemptMachineEvent =
  | { type: "REPORT_STARTED" }
  | { type: "REPORT_SUCCEEDED" }
  | { type: "REPORT_FAILED" }
  | { type: "SELECT_WINNER" }
  | { type: "SELECT_LOSER" }
  | { type: "PUBLISH_UNDONE" }
  | { type: "CLEANUP_FAILED"; exhausted: boolean }
  | { type: "CLEANUP_SUCCEEDED" }
  | { type: "CLEANUP_REQUEUED" };

/**
 * The attempt machine event of each reported outcome (`REPORT_*`), for every fold that steps it.
 *
 * @example
 * ```ts
 * ATTEMPT_TABLE.next(ATTEMPT_TABLE.initial, REPORT_EVENT.SUCCEEDED)
 * ```
 */
export const REPORT_EVENT = {
  STARTED: "REPORT_STARTED",
  SUCCEEDED: "REPORT_SUCCEEDED",
  FAILED: "REPORT_FAILED",
} as const satisfies Record<AttemptOutcome, AttemptMachineEvent["type"]>;

/**
 * The log event that records each reported outcome, and back.
 *
 * @example
 * ```ts
 * REPORTED_EVENT_TYPE.FAILED // "AttemptFailed"
 * ```
 */
export const REPORTED_EVENT_TYPE = {
  STARTED: "AttemptStarted",
  SUCCEEDED: "AttemptSucceeded",
  FAILED: "AttemptFailed",
} as const satisfies Record<AttemptOutcome, string>;

/** The outcome a report event records (`AttemptSucceeded` → `SUCCEEDED`), or undefined. */
export const OUTCOME_OF_REPORT: Readonly<Record<string, AttemptOutcome>> = Object.freeze({
  AttemptStarted: "STARTED",
  AttemptSucceeded: "SUCCEEDED",
  AttemptFailed: "FAILED",
});

/**
 * The attempt lifecycle as an XState v5 machine. Two parallel regions: `outcome` is what the
 * writer reported (`STARTED → SUCCEEDED | FAILED`, never back), `disposition` is what publish and
 * cleanup decided (`UNCLASSIFIED → WINNER | LOSER`, `LOSER → CLEANUP_PENDING ⇄ requeue → DELETED`).
 * Keeping the outcome apart is what lets a loser that was still running report its outcome later
 * (a speculative attempt finishing after publish) without leaving LOSER, and lets a contradicting
 * report be recognised. Only a `SUCCEEDED` attempt can be selected as winner. An unpublished
 * (failed) run's attempts go straight from `UNCLASSIFIED` to cleanup when stale data is collected.
 * The machine is context-free: its state value is all there is, so it can be tabulated.
 *
 * @example
 * ```ts
 * import { initialTransition, transition } from "xstate"
 * const [s0] = initialTransition(attemptMachine)
 * const [s1] = transition(attemptMachine, s0, { type: "REPORT_SUCCEEDED" })
 * s1.value // { outcome: "SUCCEEDED", disposition: "UNCLASSIFIED" }
 * ```
 */
const attemptMachine = setup({
  types: { events: {} as AttemptMachineEvent },
  guards: {
    succeeded: stateIn({ outcome: "SUCCEEDED" }),
    exhausted: ({ event }) => event.type === "CLEANUP_FAILED" && event.exhausted,
  },
}).createMachine({
  id: "attempt",
  type: "parallel",
  states: {
    outcome: {
      initial: "STARTED",
      states: {
        STARTED: {
          on: {
            REPORT_STARTED: { target: "STARTED" },
            REPORT_SUCCEEDED: { target: "SUCCEEDED" },
            REPORT_FAILED: { target: "FAILED" },
          },
        },
        SUCCEEDED: {},
        FAILED: {},
      },
    },
    disposition: {
      initial: "UNCLASSIFIED",
      states: {
        UNCLASSIFIED: {
          on: {
            SELECT_WINNER: { guard: "succeeded", target: "WINNER" },
            SELECT_LOSER: { target: "LOSER" },
            CLEANUP_FAILED: [
              { guard: "exhausted", target: "CLEANUP_PENDING.exhausted" },
              { target: "CLEANUP_PENDING.retrying" },
            ],
            CLEANUP_SUCCEEDED: { target: "DELETED" },
          },
        },
        WINNER: {
          on: { PUBLISH_UNDONE: { target: "UNCLASSIFIED" } },
        },
        LOSER: {
          on: {
            PUBLISH_UNDONE: { target: "UNCLASSIFIED" },
            CLEANUP_FAILED: [
              { guard: "exhausted", target: "CLEANUP_PENDING.exhausted" },
              { target: "CLEANUP_PENDING.retrying" },
            ],
            CLEANUP_SUCCEEDED: { target: "DELETED" },
          },
        },
        CLEANUP_PENDING: {
          initial: "retrying",
          on: {
            CLEANUP_FAILED: [{ guard: "exhausted", target: ".exhausted" }, { target: ".retrying" }],
            CLEANUP_SUCCEEDED: { target: "DELETED" },
          },
          states: {
            retrying: { on: { CLEANUP_REQUEUED: { target: "retrying" } } },
            exhausted: { on: { CLEANUP_REQUEUED: { target: "retrying" } } },
          },
        },
        DELETED: {},
      },
    },
  },
});

/** Every event variant the attempt machine distinguishes (guards read `exhausted`). */
const ATTEMPT_EVENT_SAMPLES: readonly AttemptMachineEvent[] = [
  { type: "REPORT_STARTED" },
  { type: "REPORT_SUCCEEDED" },
  { type: "REPORT_FAILED" },
  { type: "SELECT_WINNER" },
  { type: "SELECT_LOSER" },
  { type: "PUBLISH_UNDONE" },
  { type: "CLEANUP_FAILED", exhausted: false },
  { type: "CLEANUP_FAILED", exhausted: true },
  { type: "CLEANUP_SUCCEEDED" },
  { type: "CLEANUP_REQUEUED" },
];

/**
 * The table key of an attempt machine event: its type, with `.exhausted` for an exhausted
 * cleanup failure.
 *
 * @example
 * ```ts
 * attemptEventKey({ type: "CLEANUP_FAILED", exhausted: true }) // "CLEANUP_FAILED.exhausted"
 * ```
 */
function attemptEventKey(event: AttemptMachineEvent): string {
  return event.type === "CLEANUP_FAILED" && event.exhausted ? "CLEANUP_FAILED.exhausted" : event.type;
}

/**
 * The attempt machine as a transition table (derived once, at module load). Phases are
 * {@link stateValueKey} strings such as `"outcome.SUCCEEDED|disposition.LOSER"`.
 *
 * @example
 * ```ts
 * ATTEMPT_TABLE.next(ATTEMPT_TABLE.initial, "REPORT_SUCCEEDED") // "outcome.SUCCEEDED|disposition.UNCLASSIFIED"
 * ```
 */
export const ATTEMPT_TABLE: TransitionTable = deriveTransitionTable(
  attemptMachine,
  ATTEMPT_EVENT_SAMPLES,
  attemptEventKey,
);

/**
 * What a phase of the attempt machine means for the rest of the system.
 *
 * @example
 * ```ts
 * attemptPhaseInfo("outcome.STARTED|disposition.LOSER").status // "LOSER"
 * ```
 */
export interface AttemptPhaseInfo {
  /** What the writer reported. */
  readonly outcome: AttemptOutcome;
  /** The status shown to people: the disposition once classified, else the outcome. */
  readonly status: AttemptStatus;
  /** A cleanup failure that used up its retries (only in `CLEANUP_PENDING`). */
  readonly exhausted: boolean;
}

const PHASE_INFO: ReadonlyMap<string, AttemptPhaseInfo> = new Map(
  ATTEMPT_TABLE.states.map((phase) => {
    const snapshot = ATTEMPT_TABLE.snapshot(phase);
    const value = snapshot.value as { outcome: AttemptOutcome; disposition: string | Record<string, string> };
    const disposition =
      typeof value.disposition === "string" ? value.disposition : Object.keys(value.disposition)[0];
    const status = (disposition === "UNCLASSIFIED" ? value.outcome : disposition) as AttemptStatus;
    const exhausted = snapshot.matches({ disposition: { CLEANUP_PENDING: "exhausted" } });
    return [phase, Object.freeze({ outcome: value.outcome, status, exhausted })] as const;
  }),
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
