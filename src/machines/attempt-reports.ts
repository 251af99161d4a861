import type { AttemptMachineEvent } from "./attempt-machine.js";
import type { AttemptOutcome } from "./winner-selection.js";

// The names that tie a writer's report to the attempt machine, kept apart from the machine itself
// so that every fold (run state, projection) can step the generated tables without loading XState.

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
