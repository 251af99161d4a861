import type {
  DeleteOutcome,
  ListOptions,
  ListPage,
  ObjectStore,
  PutOptions,
} from "../../storage/object-store.js";

/**
 * An {@link ObjectStore} whose implementation is created on its first request. The S3 store's
 * SDK costs more to load than most CLI commands take to run, and most never touch a bucket (an
 * attempt report, a run listing), so the SDK is imported only once a request needs it.
 *
 * @example
 * ```ts
 * const store = lazyObjectStore(root.url, async () => {
 *   const { createS3ObjectStore } = await import("./s3-object-store.js")
 *   return createS3ObjectStore(root)
 * })
 * ```
 */
export function lazyObjectStore(rootUrl: string, create: () => Promise<ObjectStore>): ObjectStore {
  let store: Promise<ObjectStore> | undefined;
  const open = () => {
    store ??= create();
    return store;
  };
  return {
    rootUrl,
    list: async (prefix: string, options?: ListOptions): Promise<ListPage> =>
      (await open()).list(prefix, options),
    deleteMany: async (keys: readonly string[]): Promise<DeleteOutcome> => (await open()).deleteMany(keys),
    put: async (key: string, body: string | Uint8Array, options?: PutOptions): Promise<void> =>
      (await open()).put(key, body, options),
    get: async (key: string): Promise<Uint8Array | null> => (await open()).get(key),
    async close(): Promise<void> {
      // Nothing was opened unless a request was made.
      if (store === undefined) return;
      await (await store).close?.();
    },
  };
}
