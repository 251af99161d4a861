import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import { ValidationError } from "../../errors.js";
import {
  assertSafeKey,
  assertSafePrefix,
  type DatasetRoot,
  parseDatasetRoot,
} from "../../storage/dataset-url.js";
import {
  classifyStoreError,
  type DeleteOutcome,
  type ListOptions,
  type ListPage,
  type ObjectInfo,
  type ObjectStore,
  ObjectStoreError,
  type ObjectStoreFailure,
  type PutOptions,
} from "../../storage/object-store.js";

/** S3 DeleteObjects takes at most this many keys per request. */
const DELETE_BATCH = 1000;
const DEFAULT_PAGE_SIZE = 1000;
const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

/**
 * Options of {@link createS3ObjectStore}. Without them the SDK's defaults apply: the standard
 * credential chain and AWS_* environment variables (AWS_REGION, AWS_ENDPOINT_URL, …);
 * `SHARDLEDGER_S3_ENDPOINT` and `SHARDLEDGER_S3_FORCE_PATH_STYLE=1` are honoured as well.
 *
 * @example
 * ```ts
 * const options: S3ObjectStoreOptions = { endpoint: "http://127.0.0.1:9000", forcePathStyle: true, region: "us-east-1" }
 * ```
 */
export interface S3ObjectStoreOptions {
  /** A client to use as is (the store then never destroys it); the other options are ignored. */
  client?: S3Client;
  endpoint?: string;
  region?: string;
  forcePathStyle?: boolean;
  credentials?: S3ClientConfig["credentials"];
  /** SDK attempts per request; default 1 (see below). */
  maxAttempts?: number;
  /** Per request; default 30 s. A request that takes longer fails with a transient `TimeoutError`. */
  requestTimeoutMs?: number;
}

/**
 * An object store on anything that speaks the S3 protocol, for an `s3://bucket/prefix` root.
 * Listing pages with ListObjectsV2 continuation tokens; deleting uses DeleteObjects in batches of
 * at most 1000 keys, where every per-key error in a 200 response, and every key the response does
 * not mention (`Unconfirmed`), is reported as a failure; `ifAbsent` puts are conditional.
 *
 * @example
 * ```ts
 * const store = createS3ObjectStore("s3://lake/events", { endpoint: "http://127.0.0.1:9000", forcePathStyle: true })
 * const { deleted, errors } = await store.deleteMany(["data/r1/shard=00003/attempt=00/part-0.parquet"])
 * await store.close?.()
 * ```
 */
export function createS3ObjectStore(
  root: DatasetRoot | string,
  options: S3ObjectStoreOptions = {},
): ObjectStore {
  const r = typeof root === "string" ? parseDatasetRoot(root) : root;
  if (r.scheme !== "s3" || r.bucket === undefined) {
    throw new ValidationError(
      "root",
      `${r.url} is not an s3:// root; use the filesystem object store for it`,
    );
  }
  if (options.client) return new S3ObjectStore(r, options.client, false);
  return new S3ObjectStore(r, new S3Client(clientConfig(options)), true);
}

function clientConfig(options: S3ObjectStoreOptions): S3ClientConfig {
  const env = process.env;
  const config: S3ClientConfig = {
    // The caller (maintenance) retries with its own policy (backoff, jitter, permanent errors not
    // retried) and counts every try; SDK retries underneath would hide tries and multiply delays.
    maxAttempts: options.maxAttempts ?? 1,
    requestHandler: {
      requestTimeout: options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
      connectionTimeout: Math.min(options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS, 10_000),
      throwOnRequestTimeout: true,
    },
  };
  const endpoint = options.endpoint ?? (env.SHARDLEDGER_S3_ENDPOINT || undefined);
  if (endpoint !== undefined) config.endpoint = endpoint;
  const forcePathStyle =
    options.forcePathStyle ??
    (env.SHARDLEDGER_S3_FORCE_PATH_STYLE === undefined
      ? undefined
      : ["1", "true", "yes"].includes(env.SHARDLEDGER_S3_FORCE_PATH_STYLE.toLowerCase()));
  if (forcePathStyle !== undefined) config.forcePathStyle = forcePathStyle;
  const customEndpoint = endpoint ?? (env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || undefined);
  if (options.region !== undefined) config.region = options.region;
  // On AWS the SDK resolves the region itself (AWS_REGION, the profile, ~/.aws/config). An
  // S3-compatible endpoint often has no region configured anywhere, and only signs with one:
  // us-east-1 (what MinIO, Ceph and s3rver expect by default) stands in there.
  else if (customEndpoint !== undefined && !env.AWS_REGION && !env.AWS_DEFAULT_REGION)
    config.region = "us-east-1";
  if (options.credentials !== undefined) config.credentials = options.credentials;
  return config;
}

class S3ObjectStore implements ObjectStore {
  readonly rootUrl: string;
  readonly #bucket: string;
  /** The key prefix of everything under the root: "" or "prefix/". */
  readonly #base: string;
  readonly #client: S3Client;
  readonly #ownsClient: boolean;

  constructor(root: DatasetRoot, client: S3Client, ownsClient: boolean) {
    this.rootUrl = root.url;
    this.#bucket = root.bucket!;
    this.#base = root.prefix === "" ? "" : `${root.prefix}/`;
    this.#client = client;
    this.#ownsClient = ownsClient;
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListPage> {
    assertSafePrefix(prefix);
    const pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 1000) {
      throw new ValidationError("pageSize", `must be an integer from 1 to 1000, got ${String(pageSize)}`);
    }
    const out = await this.#call(() =>
      this.#client.send(
        new ListObjectsV2Command({
          Bucket: this.#bucket,
          Prefix: this.#base + prefix,
          MaxKeys: pageSize,
          ...(options.token ? { ContinuationToken: options.token } : {}),
        }),
      ),
    );
    const objects: ObjectInfo[] = [];
    for (const o of out.Contents ?? []) {
      if (o.Key === undefined || !o.Key.startsWith(this.#base) || o.Key === this.#base) continue;
      objects.push({
        key: o.Key.slice(this.#base.length),
        size: o.Size ?? 0,
        lastModified: o.LastModified ?? new Date(0),
      });
    }
    return {
      objects,
      nextToken: out.IsTruncated && out.NextContinuationToken ? out.NextContinuationToken : null,
    };
  }

  async deleteMany(keys: readonly string[]): Promise<DeleteOutcome> {
    for (const key of keys) assertSafeKey(key);
    const unique = [...new Set(keys)];
    const deleted: string[] = [];
    const errors: ObjectStoreFailure[] = [];
    for (let i = 0; i < unique.length; i += DELETE_BATCH) {
      const batch = unique.slice(i, i + DELETE_BATCH);
      const out = await this.#call(() =>
        this.#client.send(
          new DeleteObjectsCommand({
            Bucket: this.#bucket,
            Delete: { Objects: batch.map((key) => ({ Key: this.#base + key })), Quiet: false },
          }),
        ),
      );
      const confirmed = new Set<string>();
      const failed = new Map<string, ObjectStoreFailure>();
      for (const d of out.Deleted ?? []) if (d.Key !== undefined) confirmed.add(d.Key);
      for (const e of out.Errors ?? []) {
        if (e.Key === undefined) continue;
        const key = e.Key.slice(this.#base.length);
        const c = classifyStoreError({ name: e.Code ?? "Unknown", message: e.Message ?? "" });
        failed.set(e.Key, { key, code: c.code, message: e.Message || c.code, transient: c.transient });
      }
      for (const key of batch) {
        const full = this.#base + key;
        const failure = failed.get(full);
        // An error for a key wins over a "Deleted" for it: only an unambiguous success counts.
        if (failure) errors.push(failure);
        else if (confirmed.has(full)) deleted.push(key);
        else {
          errors.push({
            key,
            code: "Unconfirmed",
            message: "the DeleteObjects response neither confirmed nor refused this key",
            transient: true,
          });
        }
      }
    }
    return { deleted, errors };
  }

  async put(key: string, body: string | Uint8Array, options: PutOptions = {}): Promise<void> {
    assertSafeKey(key);
    const full = this.#base + key;
    const input = {
      Bucket: this.#bucket,
      Key: full,
      Body: body,
      ...(options.contentType ? { ContentType: options.contentType } : {}),
    };
    if (!options.ifAbsent) {
      await this.#call(() => this.#client.send(new PutObjectCommand(input)), key);
      return;
    }
    // HEAD first, then a conditional PUT. Some S3-compatible servers (s3rver, older MinIO and Ceph)
    // silently ignore If-None-Match on PUT, so the HEAD is what refuses there; where the header is
    // honoured it also closes the race between the HEAD and the PUT.
    if (await this.#exists(key)) throw this.#preconditionFailed(key);
    try {
      await this.#call(() => this.#client.send(new PutObjectCommand({ ...input, IfNoneMatch: "*" })), key);
    } catch (e) {
      if (e instanceof ObjectStoreError && (e.status === 412 || e.storeCode === "PreconditionFailed")) {
        throw this.#preconditionFailed(key, e);
      }
      // The server rejects the header as unsupported: the HEAD above is all the protection left.
      if (e instanceof ObjectStoreError && (e.status === 501 || e.storeCode === "NotImplemented")) {
        await this.#call(() => this.#client.send(new PutObjectCommand(input)), key);
        return;
      }
      throw e;
    }
  }

  async get(key: string): Promise<Uint8Array | null> {
    assertSafeKey(key);
    try {
      const out = await this.#client.send(
        new GetObjectCommand({ Bucket: this.#bucket, Key: this.#base + key }),
      );
      if (!out.Body) return new Uint8Array();
      return await out.Body.transformToByteArray();
    } catch (e) {
      if (isNotFound(e)) return null;
      throw toStoreError(e, key);
    }
  }

  async close(): Promise<void> {
    if (this.#ownsClient) this.#client.destroy();
  }

  async #exists(key: string): Promise<boolean> {
    try {
      await this.#client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: this.#base + key }));
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw toStoreError(e, key);
    }
  }

  #preconditionFailed(key: string, cause?: unknown): ObjectStoreError {
    return new ObjectStoreError(`${this.rootUrl}/${key} already exists`, {
      code: "PreconditionFailed",
      transient: false,
      status: 412,
      key,
      ...(cause === undefined ? {} : { cause }),
    });
  }

  async #call<T>(request: () => Promise<T>, key?: string): Promise<T> {
    try {
      return await request();
    } catch (e) {
      throw toStoreError(e, key);
    }
  }
}

function isNotFound(e: unknown): boolean {
  const x = e as { name?: unknown; Code?: unknown; $metadata?: { httpStatusCode?: unknown } };
  if (x?.name === "NoSuchBucket" || x?.Code === "NoSuchBucket") return false;
  return (
    x?.name === "NoSuchKey" ||
    x?.name === "NotFound" ||
    x?.Code === "NoSuchKey" ||
    x?.$metadata?.httpStatusCode === 404
  );
}

function toStoreError(e: unknown, key?: string): ObjectStoreError {
  if (e instanceof ObjectStoreError) return e;
  const c = classifyStoreError(e);
  const status = (e as { $metadata?: { httpStatusCode?: unknown } } | null)?.$metadata?.httpStatusCode;
  return new ObjectStoreError(`${c.code}: ${c.message}`, {
    code: c.code,
    transient: c.transient,
    ...(typeof status === "number" ? { status } : {}),
    ...(key === undefined ? {} : { key }),
    cause: slimCause(e),
  });
}

/**
 * The SDK's error without `$response` (the raw HTTP response with its socket): logging or
 * serialising that drags megabytes of internals along.
 */
function slimCause(e: unknown): unknown {
  if (!(e instanceof Error) || !("$response" in e)) return e;
  const { $response: _dropped, ...rest } = e as Error & Record<string, unknown>;
  const slim = Object.assign(new Error(e.message), rest);
  slim.name = e.name;
  if (e.stack !== undefined) slim.stack = e.stack;
  return slim;
}
