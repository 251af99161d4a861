import { type DatasetRoot, parseDatasetRoot } from "../../storage/dataset-url.js";
import type { ObjectStore } from "../../storage/object-store.js";
import { createFilesystemObjectStore } from "./filesystem-object-store.js";
import { lazyObjectStore } from "./lazy-object-store.js";
import type { S3ObjectStoreOptions } from "./s3-object-store.js";

/**
 * Options of {@link openObjectStore}, per kind of store.
 *
 * @example
 * ```ts
 * const options: OpenObjectStoreOptions = { s3: { endpoint: "http://127.0.0.1:9000", forcePathStyle: true } }
 * ```
 */
export interface OpenObjectStoreOptions {
  /** Used for `s3://` roots only. */
  s3?: S3ObjectStoreOptions;
}

/**
 * The object store for a dataset root, chosen by its scheme: `file:///abs/path` → the local
 * filesystem, `s3://bucket/prefix` → S3 (or any S3-compatible endpoint). An invalid root throws
 * `ValidationError("root", …)`.
 *
 * @example
 * ```ts
 * const store = openObjectStore("file:///var/lake/events")
 * const page = await store.list("manifests/")
 * await store.close?.()
 * ```
 */
export function openObjectStore(
  rootUrl: string | DatasetRoot,
  options: OpenObjectStoreOptions = {},
): ObjectStore {
  const root = typeof rootUrl === "string" ? parseDatasetRoot(rootUrl) : rootUrl;
  if (root.scheme === "file") return createFilesystemObjectStore(root);
  // The AWS SDK is loaded on the store's first request, not by every command that opens a ledger.
  return lazyObjectStore(root.url, async () => {
    const { createS3ObjectStore } = await import("./s3-object-store.js");
    return createS3ObjectStore(root, options.s3 ?? {});
  });
}
