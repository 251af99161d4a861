import { type AnyMachineSnapshot, setup, stateIn } from "xstate";
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
export type AttemptMachineEvent =
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
 * The attempt machine as a transition table, derived from the machine with XState's pure
 * `transition()`. The ledger does not call this: it folds with the same table as generated,
 * checked-in data (`machine-tables.generated.ts`, see `machine-tables.ts`), so it never loads
 * XState; a test regenerates that file from here and fails when it is stale.
 *
 * @example
 * ```ts
 * deriveAttemptTable().next(deriveAttemptTable().initial, "REPORT_SUCCEEDED") // "outcome.SUCCEEDED|disposition.UNCLASSIFIED"
 * ```
 */
export function deriveAttemptTable(): TransitionTable {
  return deriveTransitionTable(attemptMachine, ATTEMPT_EVENT_SAMPLES, attemptEventKey);
}

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

/**
 * What a state of the attempt machine means: derived from its snapshot (its value and whether it
 * is in `CLEANUP_PENDING.exhausted`). Generated into `machine-tables.generated.ts` for every phase.
 *
 * @example
 * ```ts
 * const table = deriveAttemptTable()
 * phaseInfoOf(table.snapshot(table.initial)) // { outcome: "STARTED", status: "STARTED", exhausted: false }
 * ```
 */
export function phaseInfoOf(snapshot: AnyMachineSnapshot): AttemptPhaseInfo {
  const value = snapshot.value as { outcome: AttemptOutcome; disposition: string | Record<string, string> };
  const disposition =
    typeof value.disposition === "string" ? value.disposition : Object.keys(value.disposition)[0];
  const status = (disposition === "UNCLASSIFIED" ? value.outcome : disposition) as AttemptStatus;
  const exhausted = snapshot.matches({ disposition: { CLEANUP_PENDING: "exhausted" } });
  return { outcome: value.outcome, status, exhausted };
}
