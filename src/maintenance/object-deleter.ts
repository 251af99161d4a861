import { classifyStoreError, type ObjectStore } from "../storage/object-store.js";
import type { PrefixCleanupResult } from "./prefix-deleter.js";

/**
 * Deletes one object (a manifest, an orphan) by its exact key — never as a prefix that could match
 * its siblings — and verifies it is gone; `authorise` runs before each request (the pass's lease).
 */
export async function deleteObject(
  store: ObjectStore,
  key: string,
  authorise: () => Promise<void>,
): Promise<PrefixCleanupResult> {
  await authorise();
  try {
    const outcome = await store.deleteMany([key]);
    const failure = outcome.errors[0];
    if (failure) {
      return {
        status: "failed",
        deletedObjects: 0,
        tries: 1,
        error: { code: failure.code, message: failure.message, transient: failure.transient },
        remainingKeys: [key],
      };
    }
    await authorise();
    if ((await store.get(key)) !== null) {
      return {
        status: "failed",
        deletedObjects: 0,
        tries: 1,
        error: { code: "StillPresent", message: `${key} is still there`, transient: true },
        remainingKeys: [key],
      };
    }
    return {
      status: "deleted",
      deletedObjects: outcome.deleted.length,
      tries: 1,
      error: null,
      remainingKeys: [],
    };
  } catch (e) {
    const c = classifyStoreError(e);
    return { status: "failed", deletedObjects: 0, tries: 1, error: c, remainingKeys: [key] };
  }
}
