import { classifyStoreError, type ObjectStore } from "../storage/object-store.js";
import { dispatchFenced, type Fence, FenceRefusal } from "./fenced-store.js";
import type { PrefixCleanupResult } from "./prefix-deleter.js";

/**
 * Deletes one object (a manifest, an orphan) by its exact key — never as a prefix that could match
 * its siblings — and verifies it is gone. `authorise` runs before each request, which is sent in
 * the reaction to its success ({@link dispatchFenced}); what it throws is thrown, as is a
 * {@link FenceRefusal} of a fenced store (unwrapped): the pass must stop.
 */
export async function deleteObject(
  store: ObjectStore,
  key: string,
  authorise: Fence,
): Promise<PrefixCleanupResult> {
  try {
    const outcome = await dispatchFenced(authorise, () => store.deleteMany([key]));
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
    if ((await dispatchFenced(authorise, () => store.get(key))) !== null) {
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
    if (e instanceof FenceRefusal) throw e.error;
    const c = classifyStoreError(e);
    return { status: "failed", deletedObjects: 0, tries: 1, error: c, remainingKeys: [key] };
  }
}
