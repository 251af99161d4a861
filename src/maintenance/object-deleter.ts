import { classifyStoreError, type ObjectInfo, type ObjectStore } from "../storage/object-store.js";
import { dispatchFenced, type Fence, FenceRefusal } from "./fenced-store.js";
import type { PrefixCleanupResult } from "./prefix-deleter.js";

/**
 * Deletes one object (a manifest, an orphan) by its exact key — never as a prefix that could match
 * its siblings — and verifies it is gone. `authorise` runs before each request, which is sent in
 * the reaction to its success ({@link dispatchFenced}); what it throws is thrown, as is a
 * {@link FenceRefusal} of a fenced store (unwrapped): the pass must stop.
 *
 * With `spare`, the object is read again first (a one-key listing) and left alone when `spare`
 * keeps it: an orphan found old by one pass and retried from the pending set by a later one may
 * have been written again meanwhile, by an attempt that was not dead. That fails the call with
 * `InsideSafetyWindow` (transient), as a prefix deletion's spared objects do. (What is left is the
 * instant between that listing and the delete: no store offers a delete conditional on age.)
 */
export async function deleteObject(
  store: ObjectStore,
  key: string,
  authorise: Fence,
  spare?: (object: ObjectInfo) => boolean,
): Promise<PrefixCleanupResult> {
  try {
    if (spare) {
      // Keys list in order and a key sorts before every longer key it starts: if the object is
      // there, it is the first of a one-key page.
      const page = await dispatchFenced(authorise, () => store.list(key, { pageSize: 1 }));
      const now = page.objects[0]?.key === key ? page.objects[0] : undefined;
      if (now !== undefined && spare(now)) {
        return {
          status: "failed",
          deletedObjects: 0,
          tries: 1,
          error: {
            code: "InsideSafetyWindow",
            message: `${key} was written at ${now.lastModified.toISOString()}, less than the safety window ago; it is deleted once older`,
            transient: true,
          },
          remainingKeys: [key],
        };
      }
    }
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
