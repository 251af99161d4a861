/**
 * Pure planning of the archive pass (src/ledger/archive.ts): when a pruned run is due, and whether
 * a run stream read from the hot log may be archived at all. No I/O.
 */
import type { StoredEvent } from "../storage/archive-format.js";

/**
 * How long after its prune a run's events stay in the hot log when nothing else is said: long
 * enough for an operator to look at a pruned run's history with plain SQL for a week.
 *
 * @internal
 */
export const DEFAULT_ARCHIVE_AFTER_MS = 7 * 86_400_000;

/**
 * The latest prune time a run may have to be archived now: runs pruned at or before it are due.
 *
 * @internal
 * @example
 * ```ts
 * archiveCutoff(new Date("2026-01-08T00:00:00Z"), 7 * 86_400_000) // 2026-01-01T00:00:00Z
 * ```
 */
export function archiveCutoff(now: Date, afterMs: number): Date {
  return new Date(now.getTime() - afterMs);
}

/**
 * Why a run stream read from the hot log must not be archived, or null when it may: it must hold
 * events dense from version 1, all of the run's stream, with exactly one `Pruned` and that one
 * last (a pruned run accepts nothing after it). Anything else is left in the hot log and reported:
 * archiving must never delete an event of a run that is not pruned.
 *
 * @internal
 * @example
 * ```ts
 * archiveRefusal("r1", "run-r1", []) // "the hot log holds no event of run-r1"
 * ```
 */
export function archiveRefusal(
  runId: string,
  streamId: string,
  events: readonly StoredEvent[],
): string | null {
  if (events.length === 0) return `the hot log holds no event of ${streamId}`;
  let pruned = 0;
  for (const [i, e] of events.entries()) {
    if (e.streamId !== streamId) return `event ${e.eventId} belongs to ${e.streamId}, not ${streamId}`;
    if (e.streamVersion !== i + 1)
      return `${streamId} is not dense from version 1 (version ${e.streamVersion} at index ${i})`;
    if (e.type === "Pruned") {
      pruned++;
      if ((e.data as { runId?: unknown } | null)?.runId !== runId)
        return `the Pruned event at version ${e.streamVersion} names another run`;
    }
  }
  if (pruned !== 1) return `${streamId} holds ${pruned} Pruned events; only a pruned run is archived`;
  if (events.at(-1)?.type !== "Pruned")
    return `${streamId} has events after its Pruned event; only a stream that ends with its prune is archived`;
  return null;
}
