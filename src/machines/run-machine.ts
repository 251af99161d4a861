import { setup } from "xstate";
import { deriveTransitionTable, type TransitionTable } from "./transition-table.js";

/**
 * The status of a run (SPEC "Run lifecycle"), plus `NONE` for a run stream with no `RunStarted`.
 *
 * @example
 * ```ts
 * const terminal: RunStatus[] = ["SUCCEEDED", "FAILED"]
 * ```
 */
export type RunStatus = "NONE" | "STARTED" | "PUBLISHING" | "SUCCEEDED" | "FAILED" | "PRUNED";

/**
 * The events the run machine understands: the run stream's event types, with the facts their
 * guards need. `completesSelection` is true on the `WinnerSelected` that names the last shard
 * without a winner; `insideFailedRetention` is true when a reopen is asked while the run is inside
 * its failed-retention floor (a recorded `RunReopened` was, so the fold passes `true`).
 *
 * @example
 * ```ts
 * const e: RunMachineEvent = { type: "RunReopened", insideFailedRetention: true }
 * ```
 */
type RunMachineEvent =
  | { type: "RunStarted" }
  | { type: "RunHeartbeat" }
  | { type: "AttemptStarted" }
  | { type: "AttemptSucceeded" }
  | { type: "AttemptFailed" }
  | { type: "WinnerSelected"; completesSelection: boolean }
  | { type: "ShardCoverageFailed" }
  | { type: "ManifestPublished" }
  | { type: "RunSucceeded" }
  | { type: "RunFailed" }
  | { type: "RunReopened"; insideFailedRetention: boolean }
  | { type: "CleanupPlanned" }
  | { type: "CleanupSucceeded" }
  | { type: "CleanupFailed" }
  | { type: "CleanupRequeued" }
  | { type: "StaleAttemptCollected" }
  | { type: "Pruned" }
  | { type: "Archived" };

/** Attempt reports are recorded in every state of an existing, unpruned run: they stay where they are. */
const recordReports = <S extends string>(self: S) =>
  ({
    AttemptStarted: { target: self },
    AttemptSucceeded: { target: self },
    AttemptFailed: { target: self },
  }) as const;

/** Cleanup bookkeeping happens only once a run is terminal (losers after publish, stale data after failure). */
const recordCleanup = <S extends string>(self: S) =>
  ({
    CleanupPlanned: { target: self },
    CleanupSucceeded: { target: self },
    CleanupFailed: { target: self },
    CleanupRequeued: { target: self },
    StaleAttemptCollected: { target: self },
  }) as const;

/**
 * The run lifecycle as an XState v5 machine: `STARTED → PUBLISHING → SUCCEEDED`, `→ FAILED`
 * (coverage, writer abort, heartbeat timeout), `FAILED → STARTED` (reopen inside the
 * failed-retention floor), terminal `→ PRUNED`. `PUBLISHING` records how far a publish got
 * (`selecting → winnersSelected → manifestPublished`) so a crashed publish resumes where it
 * stopped; a run can fail while publishing only before its manifest is recorded. Heartbeats only
 * while `STARTED`; attempt reports in every state of an existing, unpruned run (reports after
 * publish make losers); cleanup events only once terminal. Context-free, so it can be tabulated.
 *
 * @example
 * ```ts
 * import { initialTransition, transition } from "xstate"
 * const [s0] = initialTransition(runMachine)
 * const [s1] = transition(runMachine, s0, { type: "RunStarted" })
 * s1.can({ type: "RunHeartbeat" }) // true
 * ```
 */
const runMachine = setup({
  types: { events: {} as RunMachineEvent },
  guards: {
    completesSelection: ({ event }) => event.type === "WinnerSelected" && event.completesSelection,
    insideFailedRetention: ({ event }) => event.type === "RunReopened" && event.insideFailedRetention,
  },
}).createMachine({
  id: "run",
  initial: "NONE",
  states: {
    NONE: {
      on: { RunStarted: { target: "STARTED" } },
    },
    STARTED: {
      on: {
        RunHeartbeat: { target: "STARTED" },
        ...recordReports("STARTED"),
        WinnerSelected: [
          { guard: "completesSelection", target: "PUBLISHING.winnersSelected" },
          { target: "PUBLISHING.selecting" },
        ],
        ShardCoverageFailed: { target: "STARTED" },
        RunFailed: { target: "FAILED" },
      },
    },
    PUBLISHING: {
      initial: "selecting",
      states: {
        selecting: {
          on: {
            ...recordReports("selecting"),
            WinnerSelected: [
              { guard: "completesSelection", target: "winnersSelected" },
              { target: "selecting" },
            ],
            RunFailed: { target: "#run.FAILED" },
          },
        },
        winnersSelected: {
          on: {
            ...recordReports("winnersSelected"),
            ManifestPublished: { target: "manifestPublished" },
            RunFailed: { target: "#run.FAILED" },
          },
        },
        manifestPublished: {
          on: {
            ...recordReports("manifestPublished"),
            RunSucceeded: { target: "#run.SUCCEEDED" },
          },
        },
      },
    },
    SUCCEEDED: {
      on: {
        ...recordReports("SUCCEEDED"),
        ...recordCleanup("SUCCEEDED"),
        Pruned: { target: "PRUNED" },
      },
    },
    FAILED: {
      on: {
        ...recordReports("FAILED"),
        ...recordCleanup("FAILED"),
        RunReopened: { guard: "insideFailedRetention", target: "STARTED" },
        Pruned: { target: "PRUNED" },
      },
    },
    PRUNED: {
      on: { Archived: { target: "PRUNED" } },
    },
  },
});

const RUN_EVENT_SAMPLES: readonly RunMachineEvent[] = [
  { type: "RunStarted" },
  { type: "RunHeartbeat" },
  { type: "AttemptStarted" },
  { type: "AttemptSucceeded" },
  { type: "AttemptFailed" },
  { type: "WinnerSelected", completesSelection: false },
  { type: "WinnerSelected", completesSelection: true },
  { type: "ShardCoverageFailed" },
  { type: "ManifestPublished" },
  { type: "RunSucceeded" },
  { type: "RunFailed" },
  { type: "RunReopened", insideFailedRetention: false },
  { type: "RunReopened", insideFailedRetention: true },
  { type: "CleanupPlanned" },
  { type: "CleanupSucceeded" },
  { type: "CleanupFailed" },
  { type: "CleanupRequeued" },
  { type: "StaleAttemptCollected" },
  { type: "Pruned" },
  { type: "Archived" },
];

/**
 * The table key of a run machine event: its type, with `.completes` / `.inside` for the variants
 * whose guard passes.
 *
 * @example
 * ```ts
 * runEventKey({ type: "WinnerSelected", completesSelection: true }) // "WinnerSelected.completes"
 * ```
 */
function runEventKey(event: RunMachineEvent): string {
  if (event.type === "WinnerSelected")
    return event.completesSelection ? "WinnerSelected.completes" : event.type;
  if (event.type === "RunReopened") return event.insideFailedRetention ? "RunReopened.inside" : event.type;
  return event.type;
}

/**
 * The run machine as a transition table (derived once, at module load). Phases are
 * {@link stateValueKey} strings: `"NONE"`, `"STARTED"`, `"PUBLISHING.selecting"`,
 * `"PUBLISHING.winnersSelected"`, `"PUBLISHING.manifestPublished"`, `"SUCCEEDED"`, `"FAILED"`,
 * `"PRUNED"`.
 *
 * @example
 * ```ts
 * RUN_TABLE.next("FAILED", "RunReopened") // undefined: outside the floor
 * RUN_TABLE.next("FAILED", "RunReopened.inside") // "STARTED"
 * ```
 */
export const RUN_TABLE: TransitionTable = deriveTransitionTable(runMachine, RUN_EVENT_SAMPLES, runEventKey);

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
