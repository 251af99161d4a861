/**
 * A model of S3 for benchmarks and fault tests: a real HTTP server on 127.0.0.1 that speaks the
 * handful of S3 calls the S3 adapter sends (ListObjectsV2, DeleteObjects, DeleteObject,
 * HeadObject, GetObject, PutObject; path-style), keeps objects in memory, and behaves like S3 where
 * that matters to cleanup: every request waits a latency drawn from a documented distribution,
 * each partition prefix has a request-rate limit beyond which S3 answers 503 SlowDown, and faults
 * can be injected per request (resets, any error) or per key (an `<Error>` inside a 200
 * DeleteObjects response).
 *
 * It is a measuring instrument, not a product part. Why a model server of our own rather than a
 * proxy in front of s3rver: s3rver keeps objects as files, so its ListObjectsV2 walks directories
 * (21 ms per list of a 2,000-prefix run, growing with the run) and seeding 100,000 objects takes
 * ~21 s, while its DeleteObject is cheap (1.7 ms): its own costs would dominate and distort every
 * ratio we want to measure. Here the costs are the model's, stated and controllable: a sorted
 * in-memory key index makes a listing O(page), seeding instant, and all time is modelled latency.
 *
 * The numbers (defaults; see {@link DEFAULT_S3_MODEL}):
 * - Latency: log-normal per request, median 25 ms, p99 150 ms for LIST, DeleteObjects and the
 *   single-object calls, plus 0.02 ms per key of a DeleteObjects. Source: the AWS S3 performance
 *   guidelines ("Optimizing Amazon S3 performance", docs.aws.amazon.com/AmazonS3/latest/userguide/
 *   optimizing-performance.html) give small-object latencies of "roughly 100–200 milliseconds"
 *   (first byte, as the tail here), and in-region LIST/DELETE round trips are commonly measured at
 *   a p50 of 20–30 ms; the model takes 25 ms as the median and puts the guideline's 150 ms at p99.
 * - Rate: S3 supports "at least 3,500 PUT/COPY/POST/DELETE or 5,500 GET/HEAD requests per second
 *   per partitioned Amazon S3 prefix" (same page) and answers 503 SlowDown beyond it while it
 *   repartitions. A DeleteObjects of n keys counts as n deletes. The model enforces the limit
 *   per partition (bucket + the first `partitionDepth` segments of the key) as a token bucket
 *   with `burstSeconds` of burst; the bench states the scale it uses.
 */
import { randomUUID } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { S3Client } from "@aws-sdk/client-s3";

/**
 * The S3 operations the model serves.
 *
 * @example
 * ```ts
 * expect(model.stats.requests["DeleteObjects" satisfies S3ModelOp]).toBe(2)
 * ```
 */
export type S3ModelOp =
  | "ListObjectsV2"
  | "DeleteObjects"
  | "DeleteObject"
  | "HeadObject"
  | "GetObject"
  | "PutObject"
  | "Other";

/** A latency distribution: log-normal with this median and 99th percentile, in ms. */
export interface LatencyModel {
  medianMs: number;
  p99Ms: number;
  /** Added per key of a DeleteObjects (S3 deletes each key). */
  perKeyMs?: number;
}

/**
 * The model's parameters.
 *
 * @example
 * ```ts
 * const model = await startS3Model({ buckets: ["lake"], deletesPerSecond: 2000 })
 * ```
 */
export interface S3ModelOptions {
  buckets: readonly string[];
  /** Latency of every request; `null` for none (unit tests that only want the protocol). */
  latency: LatencyModel | null;
  /** Deleted keys (and PUTs) per second per partition; beyond it, 503 SlowDown. `Infinity`: no limit. */
  deletesPerSecond: number;
  /** GET/HEAD/LIST requests per second per partition. */
  readsPerSecond: number;
  /** How many seconds of the rate a partition may take at once (the token bucket's depth). */
  burstSeconds: number;
  /** Segments of the key (after the bucket) that name a partition: 1 → `bucket/dataset`. */
  partitionDepth: number;
  /** Seed of the latency sampler, so a run can be repeated. */
  seed: number;
}

/** The defaults, as documented in the file header. */
export const DEFAULT_S3_MODEL: Omit<S3ModelOptions, "buckets"> = Object.freeze({
  latency: Object.freeze({ medianMs: 25, p99Ms: 150, perKeyMs: 0.02 }),
  deletesPerSecond: 3_500,
  readsPerSecond: 5_500,
  burstSeconds: 0.25,
  partitionDepth: 1,
  seed: 1,
});

/**
 * What a fault hook sees of a request.
 *
 * @example
 * ```ts
 * model.onRequest = (r: S3ModelRequest) => (r.op === "DeleteObjects" ? { status: 503, code: "SlowDown" } : null)
 * ```
 */
export interface S3ModelRequest {
  op: S3ModelOp;
  bucket: string;
  /** The object key, the listing prefix, or the keys of a DeleteObjects. */
  keys: readonly string[];
  /** How many requests the model has seen before this one. */
  index: number;
}

/** A fault to inject: an error response, or a reset connection (`"reset"`, nothing is done). */
export type S3ModelFault = { status: number; code: string; message?: string } | "reset" | null;

/**
 * Counters the model keeps: requests by operation, throttled requests, keys deleted (and how often
 * each key was deleted while it existed), and deletes per second of wall time.
 */
export interface S3ModelStats {
  requests: Record<S3ModelOp, number>;
  throttled: number;
  resets: number;
  injected: number;
  deletedKeys: number;
  /** Keys deleted per whole second since `resetStats()`, index = second. */
  deletesPerSecond: number[];
}

/**
 * A running model. `seed` writes objects without a request; `keys` reads what is stored.
 *
 * @example
 * ```ts
 * const model = await startS3Model({ buckets: ["lake"] })
 * model.seed("lake", ["sales/data/r1/shard=00000/attempt=00/part-0"])
 * const store = createS3ObjectStore("s3://lake/sales", { client: model.client() })
 * await model.stop()
 * ```
 */
export interface S3ModelHandle {
  readonly endpoint: string;
  readonly options: S3ModelOptions;
  readonly stats: S3ModelStats;
  /** Per-request fault hook, consulted after the rate limit; null answers normally. */
  onRequest: ((r: S3ModelRequest) => S3ModelFault) | null;
  /** Keys whose delete answers this error inside a 200 DeleteObjects (or as DeleteObject's status). */
  readonly keyErrors: Map<string, { code: string; message?: string }>;
  client(options?: { requestTimeoutMs?: number }): S3Client;
  seed(bucket: string, keys: readonly string[], body?: string, lastModified?: Date): void;
  keys(bucket: string, prefix?: string): string[];
  resetStats(): void;
  /** Changes the per-partition delete limit from now on (every partition starts with a full bucket). */
  setDeleteRate(deletesPerSecond: number): void;
  stop(): Promise<void>;
}

/**
 * Starts the model on an ephemeral port of 127.0.0.1.
 *
 * @example
 * ```ts
 * const model = await startS3Model({ buckets: ["lake"], latency: null })
 * ```
 */
export async function startS3Model(
  input: Partial<S3ModelOptions> & { buckets: readonly string[] },
): Promise<S3ModelHandle> {
  const options: S3ModelOptions = { ...DEFAULT_S3_MODEL, ...input };
  const buckets = new Map(options.buckets.map((b) => [b, new BucketIndex()]));
  const random = mulberry32(options.seed);
  const limits = new Map<string, TokenBucket>();
  const started = { at: performance.now() };
  const stats = emptyStats();
  const handle: S3ModelHandle = {
    endpoint: "",
    options,
    stats,
    onRequest: null,
    keyErrors: new Map(),
    client: (clientOptions = {}) => s3ModelClient(handle.endpoint, clientOptions),
    seed(bucket, keys, body = "x", lastModified = new Date()) {
      const index = bucketOf(bucket);
      const bytes = Buffer.from(body);
      for (const key of keys) index.put(key, { body: bytes, lastModified });
    },
    keys: (bucket, prefix = "") => bucketOf(bucket).list(prefix, "", Number.MAX_SAFE_INTEGER).keys,
    resetStats() {
      Object.assign(stats, emptyStats());
      started.at = performance.now();
    },
    setDeleteRate(deletesPerSecond) {
      options.deletesPerSecond = deletesPerSecond;
      limits.clear();
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const bucketOf = (bucket: string): BucketIndex => {
    const index = buckets.get(bucket);
    if (!index) throw new Error(`the model has no bucket ${bucket}`);
    return index;
  };

  const limited = (bucket: string, key: string, cost: number, write: boolean): boolean => {
    const rate = write ? options.deletesPerSecond : options.readsPerSecond;
    if (!Number.isFinite(rate)) return false;
    const partition = `${write ? "w" : "r"}:${bucket}/${key.split("/").slice(0, options.partitionDepth).join("/")}`;
    let bucketLimit = limits.get(partition);
    if (!bucketLimit) {
      bucketLimit = new TokenBucket(rate, Math.max(1, rate * options.burstSeconds));
      limits.set(partition, bucketLimit);
    }
    return !bucketLimit.take(cost, performance.now());
  };

  const latencyOf = (op: S3ModelOp, keys: number): number => {
    const l = options.latency;
    if (l === null) return 0;
    // Log-normal: median·e^(σ·z), with σ chosen so that the 99th percentile (z = 2.326) is p99Ms.
    const sigma = Math.log(l.p99Ms / l.medianMs) / 2.326;
    const base = l.medianMs * Math.exp(sigma * gaussian(random));
    return base + (op === "DeleteObjects" ? keys * (l.perKeyMs ?? 0) : 0);
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      void serve(req, res, decodeBody(req, Buffer.concat(chunks)));
    });
  });

  const serve = async (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer) => {
    const url = new URL(req.url ?? "/", "http://model");
    const [, bucket = "", ...rest] = url.pathname.split("/");
    const key = decodeURIComponent(rest.join("/"));
    const op = opOf(req.method ?? "GET", url, key);
    const keys =
      op === "DeleteObjects"
        ? [...body.toString("utf8").matchAll(/<Key>([\s\S]*?)<\/Key>/g)].map((m) => xmlUnescape(m[1] ?? ""))
        : op === "ListObjectsV2"
          ? [url.searchParams.get("prefix") ?? ""]
          : [key];
    const index = stats.requests[op];
    stats.requests[op] = index + 1;
    const request: S3ModelRequest = {
      op,
      bucket,
      keys,
      index: Object.values(stats.requests).reduce((a, b) => a + b, 0) - 1,
    };
    const write = op === "DeleteObjects" || op === "DeleteObject" || op === "PutObject";
    const throttled = limited(bucket, keys[0] ?? "", write ? Math.max(1, keys.length) : 1, write);
    const fault: S3ModelFault = throttled
      ? { status: 503, code: "SlowDown", message: "Please reduce your request rate." }
      : (handle.onRequest?.(request) ?? null);
    await sleep(latencyOf(op, keys.length));
    if (fault === "reset") {
      stats.resets++;
      req.socket.destroy();
      return;
    }
    if (fault !== null) {
      if (throttled) stats.throttled++;
      else stats.injected++;
      return sendError(res, fault.status, fault.code, fault.message ?? fault.code);
    }
    const store = buckets.get(bucket);
    if (!store) return sendError(res, 404, "NoSuchBucket", "The specified bucket does not exist");
    const countDeleted = (n: number) => {
      stats.deletedKeys += n;
      const second = Math.floor((performance.now() - started.at) / 1000);
      while (stats.deletesPerSecond.length <= second) stats.deletesPerSecond.push(0);
      stats.deletesPerSecond[second] = (stats.deletesPerSecond[second] ?? 0) + n;
    };
    switch (op) {
      case "ListObjectsV2": {
        const max = Math.min(1000, Number(url.searchParams.get("max-keys") ?? 1000));
        const token = url.searchParams.get("continuation-token");
        const after = token === null ? "" : Buffer.from(token, "base64url").toString("utf8");
        const prefix = keys[0] ?? "";
        const page = store.list(prefix, after, max);
        const encode = url.searchParams.get("encoding-type") === "url";
        const k = (s: string) => xmlEscape(encode ? encodeURIComponent(s).replace(/%2F/g, "/") : s);
        const contents = page.keys
          .map((key) => {
            const o = store.get(key);
            return `<Contents><Key>${k(key)}</Key><LastModified>${o?.lastModified.toISOString()}</LastModified><ETag>&quot;0&quot;</ETag><Size>${o?.body.length ?? 0}</Size><StorageClass>STANDARD</StorageClass></Contents>`;
          })
          .join("");
        const next = page.truncated
          ? `<NextContinuationToken>${Buffer.from(page.keys.at(-1) ?? "", "utf8").toString("base64url")}</NextContinuationToken>`
          : "";
        return sendXml(
          res,
          `<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>${bucket}</Name><Prefix>${k(prefix)}</Prefix><KeyCount>${page.keys.length}</KeyCount><MaxKeys>${max}</MaxKeys>${encode ? "<EncodingType>url</EncodingType>" : ""}<IsTruncated>${page.truncated}</IsTruncated>${next}${contents}</ListBucketResult>`,
        );
      }
      case "DeleteObjects": {
        const parts: string[] = [];
        let n = 0;
        for (const key of keys) {
          const injected = handle.keyErrors.get(key);
          if (injected) {
            parts.push(
              `<Error><Key>${xmlEscape(key)}</Key><Code>${injected.code}</Code><Message>${xmlEscape(injected.message ?? injected.code)}</Message></Error>`,
            );
            continue;
          }
          if (store.delete(key)) n++;
          parts.push(`<Deleted><Key>${xmlEscape(key)}</Key></Deleted>`);
        }
        countDeleted(n);
        return sendXml(
          res,
          `<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">${parts.join("")}</DeleteResult>`,
        );
      }
      case "DeleteObject": {
        const injected = handle.keyErrors.get(key);
        if (injected) return sendError(res, 503, injected.code, injected.message ?? injected.code);
        if (store.delete(key)) countDeleted(1);
        res.writeHead(204).end();
        return;
      }
      case "HeadObject":
      case "GetObject": {
        const o = store.get(key);
        if (!o) {
          if (op === "HeadObject") return void res.writeHead(404).end();
          return sendError(res, 404, "NoSuchKey", "The specified key does not exist.");
        }
        res.writeHead(200, {
          "Content-Length": o.body.length,
          "Last-Modified": o.lastModified.toUTCString(),
          ETag: '"0"',
        });
        res.end(op === "GetObject" ? o.body : undefined);
        return;
      }
      case "PutObject": {
        if (req.headers["if-none-match"] === "*" && store.get(key)) {
          return sendError(res, 412, "PreconditionFailed", "At least one of the preconditions failed");
        }
        store.put(key, { body, lastModified: new Date() });
        res.writeHead(200, { ETag: '"0"' }).end();
        return;
      }
      default:
        return sendError(res, 501, "NotImplemented", `the model does not serve ${req.method} ${url.search}`);
    }
  };

  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  (handle as { endpoint: string }).endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return handle;
}

/**
 * An S3 client for a model at `endpoint` (path-style, one attempt: the ledger does the retrying).
 *
 * @example
 * ```ts
 * const client = s3ModelClient(model.endpoint)
 * ```
 */
export function s3ModelClient(endpoint: string, options: { requestTimeoutMs?: number } = {}): S3Client {
  return new S3Client({
    endpoint,
    forcePathStyle: true,
    region: "us-east-1",
    credentials: { accessKeyId: "MODEL", secretAccessKey: "MODEL" },
    maxAttempts: 1,
    requestHandler: { requestTimeout: options.requestTimeoutMs ?? 30_000, throwOnRequestTimeout: true },
  });
}

function opOf(method: string, url: URL, key: string): S3ModelOp {
  if (method === "GET" && key === "" && url.searchParams.get("list-type") === "2") return "ListObjectsV2";
  if (method === "POST" && url.searchParams.has("delete")) return "DeleteObjects";
  if (method === "DELETE" && key !== "") return "DeleteObject";
  if (method === "HEAD" && key !== "") return "HeadObject";
  if (method === "GET" && key !== "") return "GetObject";
  if (method === "PUT" && key !== "") return "PutObject";
  return "Other";
}

const emptyStats = (): S3ModelStats => ({
  requests: {
    ListObjectsV2: 0,
    DeleteObjects: 0,
    DeleteObject: 0,
    HeadObject: 0,
    GetObject: 0,
    PutObject: 0,
    Other: 0,
  },
  throttled: 0,
  resets: 0,
  injected: 0,
  deletedKeys: 0,
  deletesPerSecond: [],
});

interface StoredObject {
  body: Buffer;
  lastModified: Date;
}

/**
 * Keys of one bucket: a map plus a sorted key array (UTF-8 byte order, as S3 lists) rebuilt
 * lazily after inserts; deletes leave tombstones that a listing skips, compacted when they pile
 * up, so neither deleting nor listing 100,000 keys costs O(n) per request.
 */
class BucketIndex {
  readonly #objects = new Map<string, StoredObject>();
  #sorted: string[] = [];
  #dirty = false;
  #dead = 0;

  put(key: string, o: StoredObject): void {
    if (!this.#objects.has(key)) this.#dirty = true;
    this.#objects.set(key, o);
  }

  get(key: string): StoredObject | undefined {
    return this.#objects.get(key);
  }

  delete(key: string): boolean {
    const had = this.#objects.delete(key);
    if (had) this.#dead++;
    return had;
  }

  list(prefix: string, after: string, max: number): { keys: string[]; truncated: boolean } {
    if (this.#dirty || this.#dead > 1024 + this.#sorted.length / 2) {
      this.#sorted = [...this.#objects.keys()].sort(byteOrder);
      this.#dirty = false;
      this.#dead = 0;
    }
    const start = after > prefix ? after : prefix;
    let i = lowerBound(this.#sorted, start);
    const keys: string[] = [];
    for (; i < this.#sorted.length; i++) {
      const key = this.#sorted[i] as string;
      if (!key.startsWith(prefix)) {
        if (byteOrder(key, prefix) > 0) break;
        continue;
      }
      if (key === after || !this.#objects.has(key)) continue;
      if (keys.length === max) return { keys, truncated: true };
      keys.push(key);
    }
    return { keys, truncated: false };
  }
}

const byteOrder = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

function lowerBound(sorted: readonly string[], target: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (byteOrder(sorted[mid] as string, target) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** S3's limit as a token bucket: `rate` tokens a second, at most `depth` saved up. */
class TokenBucket {
  #tokens: number;
  #at = performance.now();

  constructor(
    readonly rate: number,
    readonly depth: number,
  ) {
    this.#tokens = depth;
  }

  /**
   * Admits a request while the bucket is not in debt, and charges its whole cost (the balance may
   * go negative): a DeleteObjects of 1,000 keys is admitted at a limit whose burst is smaller, as
   * S3 admits it, and the average rate still holds, because the debt is paid back before the next.
   */
  take(cost: number, now: number): boolean {
    this.#tokens = Math.min(this.depth, this.#tokens + ((now - this.#at) / 1000) * this.rate);
    this.#at = now;
    if (this.#tokens <= 0) return false;
    this.#tokens -= cost;
    return true;
  }
}

/** The SDK may send a body aws-chunked (`hex[;chunk-signature=…]\r\n data \r\n … 0\r\n trailers`). */
function decodeBody(req: http.IncomingMessage, raw: Buffer): Buffer {
  const sha = String(req.headers["x-amz-content-sha256"] ?? "");
  const chunked =
    String(req.headers["content-encoding"] ?? "").includes("aws-chunked") || sha.startsWith("STREAMING-");
  if (!chunked) return raw;
  const out: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = raw.indexOf("\r\n", at);
    if (eol < 0) break;
    const size = Number.parseInt(raw.subarray(at, eol).toString("latin1").split(";")[0] ?? "0", 16);
    if (!Number.isFinite(size) || size === 0) break;
    out.push(raw.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
  return Buffer.concat(out);
}

function sendXml(res: http.ServerResponse, xml: string): void {
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n${xml}`;
  res.writeHead(200, { "Content-Type": "application/xml", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

function sendError(res: http.ServerResponse, status: number, code: string, message: string): void {
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${xmlEscape(message)}</Message><RequestId>${randomUUID()}</RequestId></Error>`;
  res.writeHead(status, { "Content-Type": "application/xml", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

const xmlEscape = (s: string): string => s.replace(/[&<>"'\r\n\t]/g, (c) => `&#${c.charCodeAt(0)};`);

const xmlUnescape = (s: string): string =>
  s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);/g, (_, e: string) => {
    if (e.startsWith("#x")) return String.fromCodePoint(Number.parseInt(e.slice(2), 16));
    if (e.startsWith("#")) return String.fromCodePoint(Number.parseInt(e.slice(1), 10));
    return { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" }[e] ?? "";
  });

const sleep = (ms: number) =>
  ms <= 0 ? Promise.resolve() : new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A small seeded PRNG, so a bench run's latencies can be drawn again. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A standard normal draw (Box–Muller). */
function gaussian(random: () => number): number {
  const u = Math.max(Number.EPSILON, random());
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}
