/**
 * A real HTTP proxy on 127.0.0.1 in front of an S3 endpoint (s3rver), with programmable faults:
 * error responses (503 SlowDown, 403 AccessDenied, any status/code), connection resets (before
 * or after the request reached the server), a `cut()` that resets everything until `restore()`,
 * and per-key errors inside a 200 DeleteObjects response. It counts the requests it sees by kind.
 *
 * Per-key delete errors are realistic: the failing keys are stripped from the request body before
 * it is forwarded (so those objects are NOT deleted), the body's Content-Length, Content-MD5,
 * x-amz-checksum-{crc32,sha1,sha256} and x-amz-content-sha256 are recomputed (crc32c/crc64nvme
 * checksums are dropped), and the server's response gets an `<Error>` entry for each of them.
 * s3rver verifies neither SigV4 signatures nor payload hashes, so the forwarded request stands.
 */
import { createHash, randomUUID } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { crc32 } from "node:zlib";
import type { S3Client } from "@aws-sdk/client-s3";
import { createTestS3Client } from "./s3rver.js";

/**
 * The S3 operations the proxy tells apart (path-style requests).
 *
 * @example
 * ```ts
 * expect(proxy.counts["DeleteObjects" satisfies RequestKind]).toBe(3)
 * ```
 */
export type RequestKind =
  | "ListObjectsV2"
  | "DeleteObjects"
  | "PutObject"
  | "GetObject"
  | "HeadObject"
  | "DeleteObject"
  | "Other";

/**
 * Which requests a fault applies to; every given field must match.
 *
 * @example
 * ```ts
 * const onlyBatchDeletes: RequestMatch = { kind: "DeleteObjects" } // same as { method: "POST", query: "delete" }
 * ```
 */
export interface RequestMatch {
  kind?: RequestKind;
  method?: string;
  /** The request path (`/bucket/key`), exactly or by pattern. */
  path?: string | RegExp;
  /** A query parameter that must be present, e.g. `"delete"` for `?delete`. */
  query?: string;
}

/**
 * A request the proxy saw, and what it did with it.
 *
 * @example
 * ```ts
 * expect(proxy.seen.filter((r: SeenRequest) => r.fault === "reset")).toHaveLength(1)
 * ```
 */
export interface SeenRequest {
  kind: RequestKind;
  method: string;
  url: string;
  fault: "error" | "reset" | "stall" | "cut" | "delete-errors" | null;
}

/**
 * The handle of a running proxy.
 *
 * @example
 * ```ts
 * const proxy = await startS3FaultProxy({ target: s3.endpoint })
 * proxy.slowDown(2, { kind: "DeleteObjects" })
 * proxy.failDeleteKeys(["events/data/r1/x"], { code: "AccessDenied" })
 * const store = createS3ObjectStore("s3://lake/events", { client: proxy.client })
 * expect(proxy.counts.DeleteObjects).toBe(0)
 * ```
 */
export interface S3FaultProxy {
  /** `http://127.0.0.1:<port>`: point an S3 client here (path-style). */
  readonly endpoint: string;
  readonly port: number;
  /** A path-style client through the proxy with s3rver's credentials and no SDK retries. */
  readonly client: S3Client;
  /** Requests seen per kind (live; faulted requests count too). */
  readonly counts: Readonly<Record<RequestKind, number>>;
  /** Every request seen, in order. */
  readonly seen: readonly SeenRequest[];
  /** The next `n` matching requests get `status` with an S3 XML error body carrying `code`. */
  fail(n: number, error: { status: number; code: string; message?: string }, match?: RequestMatch): void;
  /** The next `n` matching requests get 503 SlowDown. */
  slowDown(n: number, match?: RequestMatch): void;
  /** The next `n` matching requests get 403 AccessDenied. */
  deny(n: number, match?: RequestMatch): void;
  /**
   * The next `n` matching requests have their connection destroyed: by default before the request
   * reaches the server (nothing happened), with `afterForward` after the server processed it (it
   * happened, the client never hears so).
   */
  reset(n: number, match?: RequestMatch, options?: { afterForward?: boolean }): void;
  /** The next `n` matching requests are never answered (until `stop()`): for client timeouts. */
  stall(n: number, match?: RequestMatch): void;
  /**
   * DeleteObjects requests report these full bucket keys under `<Error>` with `code` (default
   * InternalError) instead of deleting them, `times` times per key (default: until cleared).
   */
  failDeleteKeys(
    keys: readonly string[],
    options?: { code?: string; message?: string; times?: number },
  ): void;
  /** Every following request is reset until {@link restore}. */
  cut(): void;
  restore(): void;
  /** Drops every programmed fault (and ends a cut). */
  clearFaults(): void;
  /** Zeroes the counters and forgets the seen requests. */
  resetCounts(): void;
  stop(): Promise<void>;
}

interface Rule {
  remaining: number;
  match: RequestMatch;
  action:
    | { type: "error"; status: number; code: string; message: string }
    | { type: "reset"; afterForward: boolean }
    | { type: "stall" };
}

const KINDS: readonly RequestKind[] = [
  "ListObjectsV2",
  "DeleteObjects",
  "PutObject",
  "GetObject",
  "HeadObject",
  "DeleteObject",
  "Other",
];
const HOP_BY_HOP = [
  "connection",
  "keep-alive",
  "transfer-encoding",
  "proxy-connection",
  "upgrade",
  "te",
  "trailer",
];

function kindOf(method: string, url: URL): RequestKind {
  const parts = url.pathname.split("/").filter((p) => p !== "");
  const bucketLevel = parts.length <= 1;
  if (bucketLevel && method === "GET" && url.searchParams.get("list-type") === "2") return "ListObjectsV2";
  if (bucketLevel && method === "POST" && url.searchParams.has("delete")) return "DeleteObjects";
  if (bucketLevel) return "Other";
  if (url.searchParams.has("uploads") || url.searchParams.has("uploadId")) return "Other";
  switch (method) {
    case "PUT":
      return "PutObject";
    case "GET":
      return "GetObject";
    case "HEAD":
      return "HeadObject";
    case "DELETE":
      return "DeleteObject";
    default:
      return "Other";
  }
}

function matches(m: RequestMatch, kind: RequestKind, method: string, url: URL): boolean {
  if (m.kind !== undefined && m.kind !== kind) return false;
  if (m.method !== undefined && m.method.toUpperCase() !== method) return false;
  if (m.query !== undefined && !url.searchParams.has(m.query)) return false;
  if (m.path !== undefined) {
    if (typeof m.path === "string" ? m.path !== url.pathname : !m.path.test(url.pathname)) return false;
  }
  return true;
}

const escapeXml = (s: string) =>
  s
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&apos;");
const unescapeXml = (s: string) =>
  s
    .replace(/&#x([0-9a-f]+);/gi, (_, h: string) => String.fromCodePoint(Number.parseInt(h, 16)))
    .replace(/&#([0-9]+);/g, (_, d: string) => String.fromCodePoint(Number.parseInt(d, 10)))
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&amp;/g, "&");

function errorXml(code: string, message: string): string {
  return (
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<Error><Code>${escapeXml(code)}</Code><Message>${escapeXml(message)}</Message>` +
    `<RequestId>${randomUUID()}</RequestId><HostId>shardledger-fault-proxy</HostId></Error>`
  );
}

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

/** Headers that describe the body, recomputed for a rewritten body (or dropped if we cannot). */
function withBodyHeaders(headers: http.IncomingHttpHeaders, body: Buffer): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = { ...headers };
  delete out["transfer-encoding"];
  out["content-length"] = String(body.length);
  if (out["content-md5"] !== undefined) out["content-md5"] = createHash("md5").update(body).digest("base64");
  if (out["x-amz-checksum-crc32"] !== undefined) {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(crc32(body) >>> 0);
    out["x-amz-checksum-crc32"] = b.toString("base64");
  }
  if (out["x-amz-checksum-sha256"] !== undefined) {
    out["x-amz-checksum-sha256"] = createHash("sha256").update(body).digest("base64");
  }
  if (out["x-amz-checksum-sha1"] !== undefined) {
    out["x-amz-checksum-sha1"] = createHash("sha1").update(body).digest("base64");
  }
  for (const dropped of ["x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme"]) {
    if (out[dropped] !== undefined) {
      delete out[dropped];
      delete out["x-amz-sdk-checksum-algorithm"];
    }
  }
  const sha = out["x-amz-content-sha256"];
  if (typeof sha === "string" && /^[0-9a-f]{64}$/i.test(sha)) {
    out["x-amz-content-sha256"] = createHash("sha256").update(body).digest("hex");
  }
  return out;
}

/**
 * Starts a fault-injecting proxy in front of `target` (an `http://host:port` S3 endpoint).
 *
 * @example
 * ```ts
 * const s3 = await startS3rver({ buckets: ["lake"] })
 * const proxy = await startS3FaultProxy({ target: s3.endpoint })
 * proxy.reset(1, { kind: "ListObjectsV2" })
 * await proxy.stop()
 * ```
 */
export async function startS3FaultProxy(options: { target: string }): Promise<S3FaultProxy> {
  const target = new URL(options.target);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const counts = Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<RequestKind, number>;
  const seen: SeenRequest[] = [];
  let rules: Rule[] = [];
  /** Full key → failures still to report, and how. */
  const deleteFailures = new Map<string, { remaining: number; code: string; message: string }>();
  let isCut = false;

  const forward = (req: http.IncomingMessage, headers: http.OutgoingHttpHeaders, body: Buffer) =>
    new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
      const upstream = http.request(
        {
          host: target.hostname,
          port: target.port,
          method: req.method,
          path: req.url,
          headers: forwardable(headers, target.host, body),
          agent,
        },
        (res) => {
          readBody(res).then(
            (b) => resolve({ status: res.statusCode ?? 502, headers: res.headers, body: b }),
            reject,
          );
        },
      );
      upstream.on("error", reject);
      upstream.end(body);
    });

  const respond = (
    res: http.ServerResponse,
    method: string,
    status: number,
    headers: http.IncomingHttpHeaders,
    body: Buffer,
  ) => {
    const out: http.OutgoingHttpHeaders = { ...headers };
    for (const h of HOP_BY_HOP) delete out[h];
    // A HEAD response's Content-Length is the object's, not the (empty) body's.
    if (method !== "HEAD" && status !== 204 && status !== 304) out["content-length"] = String(body.length);
    res.writeHead(status, out);
    res.end(method === "HEAD" ? undefined : body);
  };

  /** Strips failing keys from a DeleteObjects body; returns the new body and the injected errors. */
  const stripFailingKeys = (body: Buffer) => {
    const injected: { key: string; code: string; message: string }[] = [];
    let kept = 0;
    const xml = body.toString("utf8").replace(/<Object>([\s\S]*?)<\/Object>/g, (block, inner: string) => {
      const key = unescapeXml(/<Key>([\s\S]*?)<\/Key>/.exec(inner)?.[1] ?? "");
      const failure = deleteFailures.get(key);
      if (failure && failure.remaining > 0) {
        failure.remaining -= 1;
        injected.push({ key, code: failure.code, message: failure.message });
        return "";
      }
      kept += 1;
      return block;
    });
    return { body: Buffer.from(xml, "utf8"), injected, kept };
  };

  const server = http.createServer((req, res) => {
    void (async () => {
      const method = (req.method ?? "GET").toUpperCase();
      const url = new URL(req.url ?? "/", "http://proxy.invalid");
      const kind = kindOf(method, url);
      counts[kind] += 1;
      const record: SeenRequest = { kind, method, url: req.url ?? "/", fault: null };
      seen.push(record);
      let body = await readBody(req);

      if (isCut) {
        record.fault = "cut";
        req.socket.destroy();
        return;
      }
      const rule = rules.find((r) => r.remaining > 0 && matches(r.match, kind, method, url));
      if (rule) rule.remaining -= 1;
      if (rule?.action.type === "error") {
        record.fault = "error";
        const xml = Buffer.from(errorXml(rule.action.code, rule.action.message), "utf8");
        respond(res, method, rule.action.status, { "content-type": "application/xml" }, xml);
        return;
      }
      if (rule?.action.type === "stall") {
        record.fault = "stall";
        return;
      }
      if (rule?.action.type === "reset" && !rule.action.afterForward) {
        record.fault = "reset";
        req.socket.destroy();
        return;
      }

      let headers: http.OutgoingHttpHeaders = { ...req.headers };
      let injected: { key: string; code: string; message: string }[] = [];
      if (kind === "DeleteObjects" && deleteFailures.size > 0) {
        const stripped = stripFailingKeys(body);
        injected = stripped.injected;
        if (injected.length > 0) {
          record.fault = "delete-errors";
          if (stripped.kept === 0) {
            // Nothing left to forward: s3rver would refuse an empty <Delete>, and S3 would answer
            // with just the errors.
            const xml =
              '<?xml version="1.0" encoding="UTF-8"?>\n<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
              injected.map(errorEntry).join("") +
              "</DeleteResult>";
            respond(res, method, 200, { "content-type": "application/xml" }, Buffer.from(xml, "utf8"));
            return;
          }
          body = stripped.body;
          headers = withBodyHeaders(req.headers, body);
        }
      }

      const upstream = await forward(req, headers, body);
      if (rule?.action.type === "reset") {
        record.fault = "reset";
        req.socket.destroy();
        return;
      }
      let responseBody = upstream.body;
      if (injected.length > 0 && upstream.status === 200) {
        const xml = upstream.body.toString("utf8");
        const at = xml.lastIndexOf("</DeleteResult>");
        if (at !== -1) {
          responseBody = Buffer.from(
            xml.slice(0, at) + injected.map(errorEntry).join("") + xml.slice(at),
            "utf8",
          );
        }
      }
      respond(res, method, upstream.status, upstream.headers, responseBody);
    })().catch(() => {
      req.socket.destroy();
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const endpoint = `http://127.0.0.1:${port}`;
  const client = createTestS3Client(endpoint);

  const addRule = (n: number, match: RequestMatch, action: Rule["action"]) => {
    if (!Number.isInteger(n) || n < 1) throw new Error(`fault count must be a positive integer, got ${n}`);
    rules.push({ remaining: n, match, action });
  };

  return {
    endpoint,
    port,
    client,
    counts,
    seen,
    fail(n, error, match = {}) {
      addRule(n, match, {
        type: "error",
        status: error.status,
        code: error.code,
        message: error.message ?? error.code,
      });
    },
    slowDown(n, match = {}) {
      addRule(n, match, {
        type: "error",
        status: 503,
        code: "SlowDown",
        message: "Please reduce your request rate.",
      });
    },
    deny(n, match = {}) {
      addRule(n, match, { type: "error", status: 403, code: "AccessDenied", message: "Access Denied" });
    },
    reset(n, match = {}, resetOptions = {}) {
      addRule(n, match, { type: "reset", afterForward: resetOptions.afterForward ?? false });
    },
    stall(n, match = {}) {
      addRule(n, match, { type: "stall" });
    },
    failDeleteKeys(keys, failOptions = {}) {
      const code = failOptions.code ?? "InternalError";
      const message =
        failOptions.message ??
        (code === "AccessDenied" ? "Access Denied" : "We encountered an internal error. Please try again.");
      for (const key of keys)
        deleteFailures.set(key, { remaining: failOptions.times ?? Number.POSITIVE_INFINITY, code, message });
    },
    cut() {
      isCut = true;
    },
    restore() {
      isCut = false;
    },
    clearFaults() {
      rules = [];
      deleteFailures.clear();
      isCut = false;
    },
    resetCounts() {
      for (const k of KINDS) counts[k] = 0;
      seen.length = 0;
    },
    async stop() {
      client.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      agent.destroy();
    },
  };
}

/**
 * The request headers to pass on: no hop-by-hop headers and no Expect (the proxy sends the whole
 * buffered body at once); a chunked body gets its Content-Length instead.
 */
function forwardable(
  headers: http.OutgoingHttpHeaders,
  host: string,
  body: Buffer,
): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = { ...headers, host };
  const chunked = out["transfer-encoding"] !== undefined;
  for (const h of [...HOP_BY_HOP, "expect"]) delete out[h];
  if (chunked) out["content-length"] = String(body.length);
  return out;
}

function errorEntry(e: { key: string; code: string; message: string }): string {
  return `<Error><Key>${escapeXml(e.key)}</Key><Code>${escapeXml(e.code)}</Code><Message>${escapeXml(e.message)}</Message></Error>`;
}
