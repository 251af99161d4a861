import type { RunView } from "../../src/projections/views.js";

/**
 * Attempt counts of a registry row with no attempts: a fresh copy each call, for RunView fixtures.
 *
 * @example
 * ```ts
 * const run: RunView = { …, attempts: noAttempts() }
 * ```
 */
export function noAttempts(): RunView["attempts"] {
  return {
    total: 0,
    started: 0,
    succeeded: 0,
    failed: 0,
    winner: 0,
    loser: 0,
    cleanupPending: 0,
    deleted: 0,
  };
}
