import type { PendingCleanupItem } from "../projections/views.js";

/** Whether a pending item is up for this pass. Exhausted items wait for `retry-failed` (which re-queues them), even with `retryNow`. */
export function isDue(item: PendingCleanupItem, now: Date, retryNow = false): boolean {
  if (item.state === "exhausted") return false;
  if (item.state === "planned" || retryNow) return true;
  return item.nextRetryAt === null || item.nextRetryAt.getTime() <= now.getTime();
}

/** ISO time of the earliest next retry among the waiting (failed, not exhausted) items, or null. */
export function earliestRetry(items: readonly PendingCleanupItem[]): string | null {
  let earliest: Date | null = null;
  for (const i of items) {
    if (i.state === "exhausted" || i.nextRetryAt === null) continue;
    if (earliest === null || i.nextRetryAt.getTime() < earliest.getTime()) earliest = i.nextRetryAt;
  }
  return earliest === null ? null : earliest.toISOString();
}
