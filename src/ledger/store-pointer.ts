import { CURRENT_KEY } from "../storage/object-layout.js";
import type { ObjectStore } from "../storage/object-store.js";

/**
 * The run the store's `_CURRENT` names, or null when there is none or it cannot be parsed. The
 * store, not the log, is what readers follow: a rollback that crashed after writing `_CURRENT` left
 * a move the log never recorded. A read that fails (the store is down) throws: nothing may be
 * pruned without knowing. @internal
 *
 * @example
 * ```ts
 * const pointed = await storePointerRunId(store) // "r7", or null
 * ```
 */
export async function storePointerRunId(store: ObjectStore): Promise<string | null> {
  const body = await store.get(CURRENT_KEY);
  if (body === null) return null;
  try {
    const pointer = JSON.parse(new TextDecoder().decode(body)) as { runId?: unknown };
    return typeof pointer.runId === "string" ? pointer.runId : null;
  } catch {
    return null;
  }
}
