/**
 * The object store as the domain sees it: a flat namespace of keys relative to one dataset root.
 * Adapters (`src/adapters/objectstore`) implement it for the local filesystem and for anything
 * that speaks the S3 protocol. This file imports no SDK.
 */

import { ShardledgerError } from "../errors.js";

/**
 * One stored object, as a listing returns it.
 *
 * @example
 * ```ts
 * const info: ObjectInfo = { key: "data/r1/shard=00003/attempt=01/part-0.parquet", size: 812, lastModified: new Date() }
 * ```
 */
export interface ObjectInfo {
  /** Root-relative key, `/`-separated, never starting with `/`. */
  key: string;
  size: number;
  lastModified: Date;
}

/**
 * One page of a listing; `nextToken` is `null` on the last page.
 *
 * @example
 * ```ts
 * let token: string | null = null
 * do {
 *   const page: ListPage = await store.list("data/r1/", { token })
 *   token = page.nextToken
 * } while (token !== null)
 * ```
 */
export interface ListPage {
  objects: ObjectInfo[];
  nextToken: string | null;
}

/**
 * A key the store could not delete, or a request that failed as a whole. `transient` says whether
 * trying again may help (throttling, 5xx, resets, timeouts) or not (access denied, no bucket).
 *
 * @example
 * ```ts
 * const f: ObjectStoreFailure = { key: "data/r1/x", code: "SlowDown", message: "Please reduce your request rate", transient: true }
 * ```
 */
export interface ObjectStoreFailure {
  key: string;
  code: string;
  message: string;
  transient: boolean;
}

/**
 * What a `deleteMany` achieved. A key that did not exist counts as deleted: "nothing left to
 * delete" is success. Every requested key is in exactly one of the two lists.
 *
 * @example
 * ```ts
 * const { deleted, errors } = await store.deleteMany(keys)
 * const retryable = errors.filter((e) => e.transient).map((e) => e.key)
 * ```
 */
export interface DeleteOutcome {
  deleted: string[];
  errors: ObjectStoreFailure[];
}

/**
 * Options of {@link ObjectStore.list}.
 *
 * @example
 * ```ts
 * const options: ListOptions = { pageSize: 500, token: null }
 * ```
 */
export interface ListOptions {
  /** At most this many objects per page: 1 to 1000, default 1000. */
  pageSize?: number;
  /** The `nextToken` of the previous page; absent or `null` for the first page. */
  token?: string | null;
}

/**
 * Options of {@link ObjectStore.put}.
 *
 * @example
 * ```ts
 * await store.put("_CURRENT", "r7", { ifAbsent: true, contentType: "text/plain" } satisfies PutOptions)
 * ```
 */
export interface PutOptions {
  /** Refuse (ObjectStoreError `PreconditionFailed`) when the key already exists. */
  ifAbsent?: boolean;
  contentType?: string;
}

/**
 * The small object-store interface the domain owns. Every key is relative to {@link rootUrl};
 * an implementation refuses (SafetyRailError, before any request) a key that could leave it.
 *
 * @example
 * ```ts
 * const store = openObjectStore("s3://lake/events")
 * await store.put("manifests/r1.json", JSON.stringify(manifest), { contentType: "application/json" })
 * const page = await store.list("data/r1/", { pageSize: 1000 })
 * const outcome = await store.deleteMany(page.objects.map((o) => o.key))
 * ```
 */
export interface ObjectStore {
  /** The normalised dataset root URL this store is bound to (no trailing slash). */
  readonly rootUrl: string;
  /**
   * Objects whose root-relative key starts with `prefix` (`""` for everything under the root),
   * in lexicographic (UTF-8 byte) order, one page at a time.
   */
  list(prefix: string, options?: ListOptions): Promise<ListPage>;
  /**
   * Deletes the keys: one batch request per ≤ 1000 keys on S3. Per-key failures are reported in
   * the outcome, never thrown; a failure of a whole request throws {@link ObjectStoreError}.
   * Deleting is idempotent, so repeating a call after a throw is safe.
   */
  deleteMany(keys: readonly string[]): Promise<DeleteOutcome>;
  /** Writes an object atomically: readers see all of it or nothing. */
  put(key: string, body: string | Uint8Array, options?: PutOptions): Promise<void>;
  /** The object's bytes, or `null` when it does not exist. */
  get(key: string): Promise<Uint8Array | null>;
  /** Releases connections the store opened itself. */
  close?(): Promise<void>;
}

/**
 * A whole-request failure of the object store (not a rule refusal: those are
 * `SafetyRailError`s). A {@link ShardledgerError} with code `OBJECT_STORE`; `storeCode` is the
 * store's own error code (S3's `SlowDown`, `AccessDenied`, `PreconditionFailed`, a node errno such
 * as `ECONNRESET`, …), and `transient` tells the caller's retry policy whether to try again.
 *
 * @example
 * ```ts
 * try { await store.put("_CURRENT", "r1", { ifAbsent: true }) } catch (e) {
 *   if (isObjectStoreError(e) && e.storeCode === "PreconditionFailed") console.log("already there")
 * }
 * ```
 */
export class ObjectStoreError extends ShardledgerError {
  /** The store's own error code (`SlowDown`, `AccessDenied`, `ECONNRESET`, …). */
  readonly storeCode: string;
  readonly transient: boolean;
  readonly status?: number;
  readonly key?: string;

  /** `options.code` is the store's own error code; it becomes {@link ObjectStoreError.storeCode}. */
  constructor(
    message: string,
    options: { code: string; transient: boolean; status?: number; key?: string; cause?: unknown },
  ) {
    super("OBJECT_STORE", message, {
      cause: options.cause,
      details: {
        storeCode: options.code,
        transient: options.transient,
        ...(options.status !== undefined ? { status: options.status } : {}),
        ...(options.key !== undefined ? { key: options.key } : {}),
      },
    });
    this.storeCode = options.code;
    this.transient = options.transient;
    if (options.status !== undefined) this.status = options.status;
    if (options.key !== undefined) this.key = options.key;
  }
}

/**
 * Whether a value is an {@link ObjectStoreError} (code `OBJECT_STORE`); checks the shape as well
 * as `instanceof`, so two installed copies of the package still agree.
 *
 * @example
 * ```ts
 * const e: unknown = new ObjectStoreError("SlowDown: reduce your request rate", { code: "SlowDown", transient: true })
 * if (isObjectStoreError(e) && e.transient) console.log("retry", e.storeCode)
 * ```
 */
export const isObjectStoreError = (e: unknown): e is ObjectStoreError =>
  e instanceof ObjectStoreError ||
  (e instanceof Error &&
    (e as { code?: unknown }).code === "OBJECT_STORE" &&
    typeof (e as { storeCode?: unknown }).storeCode === "string" &&
    typeof (e as { transient?: unknown }).transient === "boolean");

const TRANSIENT_CODES = new Set([
  "SlowDown",
  "ServiceUnavailable",
  "InternalError",
  "RequestTimeout",
  "RequestTimeTooSkewed",
  "Throttling",
  "ThrottlingException",
  "ThrottledException",
  "RequestThrottled",
  "RequestThrottledException",
  "TooManyRequestsException",
  "RequestLimitExceeded",
  "BandwidthLimitExceeded",
  "ProvisionedThroughputExceededException",
  "TransactionInProgressException",
  "ConditionalRequestConflict",
  "OperationAborted",
  "TimeoutError",
  "Unconfirmed",
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "UND_ERR_SOCKET",
  "UND_ERR_CONNECT_TIMEOUT",
]);

const PERMANENT_CODES = new Set([
  "AccessDenied",
  "AllAccessDisabled",
  "NoSuchBucket",
  "InvalidAccessKeyId",
  "SignatureDoesNotMatch",
  "InvalidBucketName",
  "AccountProblem",
  "InvalidSecurity",
  "InvalidToken",
  "ExpiredToken",
  "NotSignedUp",
  "PreconditionFailed",
  "NoSuchKey",
  "NotImplemented",
  "MethodNotAllowed",
  "MalformedXML",
  "InvalidArgument",
  "InvalidRequest",
  "InvalidURI",
  "KeyTooLongError",
  "EntityTooLarge",
  "InvalidObjectState",
  "NotFound",
]);

/** Names that say nothing about the failure; look further (Code, errno, status). */
const GENERIC_NAMES = new Set(["Error", "Unknown", "UnknownError", "S3ServiceException", ""]);

interface ErrorLike {
  name?: unknown;
  message?: unknown;
  code?: unknown;
  Code?: unknown;
  cause?: unknown;
  $metadata?: { httpStatusCode?: unknown };
  $response?: { statusCode?: unknown };
}

const str = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);

function statusOf(e: ErrorLike): number | undefined {
  const s = e.$metadata?.httpStatusCode ?? e.$response?.statusCode;
  return typeof s === "number" ? s : undefined;
}

function causedByTimeout(e: unknown, depth = 0): boolean {
  if (depth > 5 || typeof e !== "object" || e === null) return false;
  const x = e as ErrorLike;
  if (x.name === "TimeoutError" || x.code === "ETIMEDOUT" || x.code === "UND_ERR_CONNECT_TIMEOUT")
    return true;
  if (typeof x.message === "string" && /time(d)?[ -]?out/i.test(x.message)) return true;
  return causedByTimeout(x.cause, depth + 1);
}

/**
 * Classifies any failure of an object-store call by the S3 error `Code`, the node error `code`
 * (ECONNRESET, …), the SDK error `name`, then the HTTP status. Transient: throttling, 5xx, resets, timeouts and
 * unknown codes (the caller bounds its retries); permanent: access and bucket problems.
 *
 * @example
 * ```ts
 * classifyStoreError(Object.assign(new Error("Please reduce your request rate"), { name: "SlowDown" }))
 * // → { code: "SlowDown", message: "Please reduce your request rate", transient: true }
 * ```
 */
export function classifyStoreError(e: unknown): { code: string; message: string; transient: boolean } {
  if (isObjectStoreError(e)) return { code: e.storeCode, message: e.message, transient: e.transient };
  if (typeof e !== "object" || e === null) {
    return { code: "Unknown", message: String(e), transient: true };
  }
  const x = e as ErrorLike;
  const message = str(x.message) ?? String(e);
  const status = statusOf(x);
  const name = str(x.name);
  const errno = str(x.code);
  const isErrno = errno !== undefined && /^(E[A-Z0-9_]+|UND_ERR_[A-Z_]+)$/.test(errno);
  // The SDK names a reset socket "TimeoutError" but keeps the errno: the errno says more.
  const candidates = [str(x.Code), isErrno ? errno : undefined, name, isErrno ? undefined : errno].filter(
    (c): c is string => c !== undefined && !GENERIC_NAMES.has(c),
  );

  if (name === "AbortError") {
    return causedByTimeout(x.cause) || causedByTimeout({ message })
      ? { code: "TimeoutError", message, transient: true }
      : { code: "AbortError", message, transient: false };
  }
  for (const code of candidates) {
    if (PERMANENT_CODES.has(code)) return { code, message, transient: false };
    if (TRANSIENT_CODES.has(code) || code.startsWith("Throttl")) return { code, message, transient: true };
  }
  // The SDK's client has no region (no AWS_REGION, no profile): a configuration error, raised
  // before any request, that a retry cannot cure. It is a plain Error, so only its text says so.
  // (A CredentialsProviderError stays transient: on EC2 or EKS it is also what a throttled or
  // slow metadata endpoint gives, which a later try gets past.)
  if (candidates.length === 0 && status === undefined && /^Region is missing\b/.test(message))
    return { code: "RegionMissing", message, transient: false };
  if (/socket hang up/i.test(message))
    return { code: candidates[0] ?? "ECONNRESET", message, transient: true };

  const code = candidates[0] ?? (status !== undefined ? `Http${status}` : "Unknown");
  if (status !== undefined) {
    if (status === 401 || status === 403) return { code, message, transient: false };
    if (status === 412) return { code, message, transient: false };
    if (status === 408 || status === 429 || status >= 500) return { code, message, transient: true };
  }
  return { code, message, transient: true };
}

/**
 * Lexicographic order of keys as S3 lists them: by UTF-8 bytes (which is code-point order, not
 * JavaScript's UTF-16 order).
 *
 * @example
 * ```ts
 * ["b", "a/x", "a-y"].sort(compareKeys) // ["a-y", "a/x", "b"]
 * ```
 */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}

/** Surrogate halves stand for code points above U+FFFF, so they must rank after U+E000–U+FFFF. */
const codePointRank = (unit: number): number =>
  unit < 0xd800 ? unit : unit <= 0xdfff ? unit + 0x2000 : unit - 0x800;
