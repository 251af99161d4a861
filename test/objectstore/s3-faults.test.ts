/**
 * The S3 store under injected faults: s3rver behind the fault proxy. What matters is that nothing
 * is reported deleted that was not, and that every failure carries the right transient flag for
 * the caller's retry policy.
 */
import type { S3Client } from "@aws-sdk/client-s3";
import { afterEach, describe, expect, it, vi } from "vitest";
import { openObjectStore } from "../../src/adapters/objectstore/open-object-store.js";
import { createS3ObjectStore } from "../../src/adapters/objectstore/s3-object-store.js";
import { isValidationError } from "../../src/errors.js";
import { classifyStoreError, type ObjectStore, ObjectStoreError } from "../../src/storage/object-store.js";
import { useS3WithFaultProxy } from "../support/s3-with-proxy.js";
import { createTestS3Client, S3RVER_CREDENTIALS } from "../support/s3rver.js";

const BUCKET = "lake";
const env = useS3WithFaultProxy([BUCKET]);
let n = 0;

afterEach(() => {
  vi.unstubAllEnvs();
});

/** A store on a fresh root through the proxy, with `keys` already stored under it. */
async function storeWith(
  keys: readonly string[],
): Promise<{ store: ObjectStore; prefix: string; full: (k: string) => string }> {
  const prefix = `f${++n}`;
  await env.s3.seed(
    BUCKET,
    keys.map((k) => `${prefix}/${k}`),
  );
  return {
    store: createS3ObjectStore(`s3://${BUCKET}/${prefix}`, { client: env.proxy.client }),
    prefix,
    full: (k) => `${prefix}/${k}`,
  };
}

const onDisk = async (prefix: string) =>
  (await env.s3.keysOnDisk(BUCKET, `${prefix}/`)).map((k) => k.slice(prefix.length + 1));

async function rejection(p: Promise<unknown>): Promise<ObjectStoreError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(ObjectStoreError);
  return e as ObjectStoreError;
}

describe("per-key errors inside a 200 DeleteObjects response", () => {
  it("reports them as failures with their transient flag, and those objects still exist", async () => {
    const keys = ["d/a", "d/b", "d/c", "d/d", "d/e"];
    const { store, prefix, full } = await storeWith(keys);
    env.proxy.failDeleteKeys([full("d/b")], { code: "InternalError" });
    env.proxy.failDeleteKeys([full("d/d")], { code: "AccessDenied" });

    const outcome = await store.deleteMany(keys);

    expect(outcome.deleted).toEqual(["d/a", "d/c", "d/e"]);
    expect(outcome.errors).toEqual([
      { key: "d/b", code: "InternalError", message: expect.any(String), transient: true },
      { key: "d/d", code: "AccessDenied", message: "Access Denied", transient: false },
    ]);
    expect(env.proxy.counts.DeleteObjects).toBe(1);
    expect(await onDisk(prefix)).toEqual(["d/b", "d/d"]);
  });

  it("recovers on a later try once the fault has passed", async () => {
    const { store, prefix, full } = await storeWith(["x/1", "x/2"]);
    env.proxy.failDeleteKeys([full("x/1"), full("x/2")], { code: "SlowDown", times: 1 });

    const first = await store.deleteMany(["x/1", "x/2"]);
    expect(first.deleted).toEqual([]);
    expect(first.errors.map((e) => [e.key, e.code, e.transient])).toEqual([
      ["x/1", "SlowDown", true],
      ["x/2", "SlowDown", true],
    ]);
    expect(await onDisk(prefix)).toEqual(["x/1", "x/2"]);

    const second = await store.deleteMany(["x/1", "x/2"]);
    expect(second).toEqual({ deleted: ["x/1", "x/2"], errors: [] });
    expect(await onDisk(prefix)).toEqual([]);
  });

  it("fails only the keys of the batch they were in when deleting more than 1000", async () => {
    const keys = Array.from({ length: 1500 }, (_, i) => `big/${String(i).padStart(4, "0")}`);
    const { store, prefix, full } = await storeWith(keys);
    env.proxy.failDeleteKeys([full("big/0003"), full("big/1499")], { code: "InternalError" });

    const outcome = await store.deleteMany(keys);

    expect(env.proxy.counts.DeleteObjects).toBe(2);
    expect(outcome.deleted).toHaveLength(1498);
    expect(outcome.errors.map((e) => e.key)).toEqual(["big/0003", "big/1499"]);
    expect(await onDisk(prefix)).toEqual(["big/0003", "big/1499"]);
  });

  it("treats keys a response neither confirms nor refuses as unconfirmed, never as deleted", async () => {
    const fake = {
      send: async (command: { input: { Delete: { Objects: { Key: string }[] } } }) => ({
        Deleted: [{ Key: command.input.Delete.Objects[0]!.Key }],
        Errors: [],
      }),
      destroy() {},
    } as unknown as S3Client;
    const store = createS3ObjectStore("s3://lake/u", { client: fake });
    const outcome = await store.deleteMany(["a", "b"]);
    expect(outcome.deleted).toEqual(["a"]);
    expect(outcome.errors).toEqual([
      { key: "b", code: "Unconfirmed", message: expect.any(String), transient: true },
    ]);
  });

  it("lets an error for a key win over a 'Deleted' entry for the same key", async () => {
    const fake = {
      send: async () => ({
        Deleted: [{ Key: "u/a" }],
        Errors: [{ Key: "u/a", Code: "InternalError", Message: "try again" }],
      }),
      destroy() {},
    } as unknown as S3Client;
    const store = createS3ObjectStore("s3://lake/u", { client: fake });
    expect(await store.deleteMany(["a"])).toEqual({
      deleted: [],
      errors: [{ key: "a", code: "InternalError", message: "try again", transient: true }],
    });
  });
});

describe("whole-request failures", () => {
  it("503 SlowDown on DeleteObjects throws a transient ObjectStoreError and deletes nothing", async () => {
    const { store, prefix } = await storeWith(["k/1", "k/2"]);
    env.proxy.slowDown(1, { kind: "DeleteObjects" });
    const e = await rejection(store.deleteMany(["k/1", "k/2"]));
    expect(e).toMatchObject({ storeCode: "SlowDown", transient: true, status: 503 });
    expect(await onDisk(prefix)).toEqual(["k/1", "k/2"]);
    expect(await store.deleteMany(["k/1", "k/2"])).toEqual({ deleted: ["k/1", "k/2"], errors: [] });
  });

  it("403 AccessDenied throws a permanent ObjectStoreError", async () => {
    const { store } = await storeWith(["k/1"]);
    env.proxy.deny(1, { kind: "ListObjectsV2" });
    expect(await rejection(store.list(""))).toMatchObject({
      storeCode: "AccessDenied",
      transient: false,
      status: 403,
    });
    env.proxy.deny(1, { query: "delete" });
    expect(await rejection(store.deleteMany(["k/1"]))).toMatchObject({
      storeCode: "AccessDenied",
      transient: false,
    });
    expect((await store.list("")).objects.map((o) => o.key)).toEqual(["k/1"]);
  });

  it("a 500 with an unknown code and other 5xx are transient", async () => {
    const { store } = await storeWith(["k/1"]);
    env.proxy.fail(1, { status: 500, code: "WeirdInternalThing" }, { kind: "GetObject" });
    expect(await rejection(store.get("k/1"))).toMatchObject({
      storeCode: "WeirdInternalThing",
      transient: true,
    });
    env.proxy.fail(1, { status: 502, code: "BadGateway" }, { kind: "GetObject" });
    expect(await rejection(store.get("k/1"))).toMatchObject({ status: 502, transient: true });
  });

  it("a connection reset before the request arrives is transient, and nothing happened", async () => {
    const { store, prefix } = await storeWith(["r/1"]);
    env.proxy.reset(1, { kind: "DeleteObjects" });
    const e = await rejection(store.deleteMany(["r/1"]));
    expect(e.transient).toBe(true);
    expect(e.storeCode).toMatch(/ECONNRESET|EPIPE|socket hang up/i);
    expect(await onDisk(prefix)).toEqual(["r/1"]);
  });

  it("a reset after the server deleted is transient, and the retry reports success", async () => {
    const { store, prefix } = await storeWith(["r/1", "r/2"]);
    env.proxy.reset(1, { kind: "DeleteObjects" }, { afterForward: true });
    expect((await rejection(store.deleteMany(["r/1", "r/2"]))).transient).toBe(true);
    expect(await onDisk(prefix)).toEqual([]);
    expect(await store.deleteMany(["r/1", "r/2"])).toEqual({ deleted: ["r/1", "r/2"], errors: [] });
  });

  it("cut() fails every request transiently until restore()", async () => {
    const { store } = await storeWith(["c/1"]);
    env.proxy.cut();
    for (const attempt of [
      store.list(""),
      store.get("c/1"),
      store.put("c/2", "x"),
      store.deleteMany(["c/1"]),
    ]) {
      expect((await rejection(attempt)).transient).toBe(true);
    }
    expect(env.proxy.seen.every((r) => r.fault === "cut")).toBe(true);
    env.proxy.restore();
    expect((await store.list("")).objects.map((o) => o.key)).toEqual(["c/1"]);
  });

  it("a request that outlives requestTimeoutMs fails with a transient timeout", async () => {
    const { prefix } = await storeWith(["t/1"]);
    const client = createTestS3Client(env.proxy.endpoint, { requestTimeoutMs: 300 });
    try {
      const store = createS3ObjectStore(`s3://${BUCKET}/${prefix}`, { client });
      env.proxy.stall(1, { kind: "ListObjectsV2" });
      const e = await rejection(store.list(""));
      expect(e.transient).toBe(true);
      expect(e.storeCode).toMatch(/^(ETIMEDOUT|TimeoutError)$/);
    } finally {
      client.destroy();
    }
  });

  it("a missing bucket is permanent, while a missing key is just null", async () => {
    const store = createS3ObjectStore("s3://no-such-bucket/x", { client: env.proxy.client });
    expect(await rejection(store.list(""))).toMatchObject({ storeCode: "NoSuchBucket", transient: false });
    expect(await rejection(store.get("a"))).toMatchObject({ storeCode: "NoSuchBucket", transient: false });
    const { store: real } = await storeWith([]);
    expect(await real.get("missing")).toBeNull();
  });
});

describe("conditional puts", () => {
  it("HEADs first and never PUTs over an existing key (s3rver ignores If-None-Match)", async () => {
    const { store } = await storeWith(["_CURRENT"]);
    expect(await rejection(store.put("_CURRENT", "r2", { ifAbsent: true }))).toMatchObject({
      storeCode: "PreconditionFailed",
      transient: false,
    });
    expect(env.proxy.counts.HeadObject).toBe(1);
    expect(env.proxy.counts.PutObject).toBe(0);
  });

  it("maps a 412 from a server that honours If-None-Match (a lost race) to PreconditionFailed", async () => {
    const { store } = await storeWith([]);
    env.proxy.fail(1, { status: 412, code: "PreconditionFailed" }, { kind: "PutObject" });
    expect(await rejection(store.put("_CURRENT", "r2", { ifAbsent: true }))).toMatchObject({
      storeCode: "PreconditionFailed",
      transient: false,
    });
  });

  it("falls back to a plain PUT when the server rejects If-None-Match as not implemented", async () => {
    const { store } = await storeWith([]);
    env.proxy.fail(1, { status: 501, code: "NotImplemented" }, { kind: "PutObject" });
    await store.put("_CURRENT", "r3", { ifAbsent: true });
    expect(env.proxy.counts.PutObject).toBe(2);
    expect(new TextDecoder().decode((await store.get("_CURRENT")) ?? new Uint8Array())).toBe("r3");
  });
});

describe("configuration", () => {
  it("honours SHARDLEDGER_S3_ENDPOINT and SHARDLEDGER_S3_FORCE_PATH_STYLE=1 with the SDK's credential chain", async () => {
    const { prefix } = await storeWith(["e/1"]);
    vi.stubEnv("SHARDLEDGER_S3_ENDPOINT", env.proxy.endpoint);
    vi.stubEnv("SHARDLEDGER_S3_FORCE_PATH_STYLE", "1");
    vi.stubEnv("AWS_ACCESS_KEY_ID", S3RVER_CREDENTIALS.accessKeyId);
    vi.stubEnv("AWS_SECRET_ACCESS_KEY", S3RVER_CREDENTIALS.secretAccessKey);
    vi.stubEnv("AWS_REGION", "us-east-1");
    const store = openObjectStore(`s3://${BUCKET}/${prefix}`);
    try {
      expect((await store.list("")).objects.map((o) => o.key)).toEqual(["e/1"]);
      expect(env.proxy.counts.ListObjectsV2).toBe(1);
    } finally {
      await store.close?.();
    }
  });

  it("opens the store that matches the root's scheme and refuses invalid roots", () => {
    expect(openObjectStore("file:///tmp/lake/").rootUrl).toBe("file:///tmp/lake");
    expect(openObjectStore("S3://lake/a/", { s3: { client: env.proxy.client } }).rootUrl).toBe("s3://lake/a");
    for (const bad of ["http://lake/a", "file://relative", "s3:///a", "s3://lake/a/../b"]) {
      expect(() => openObjectStore(bad)).toThrow(expect.toSatisfy(isValidationError));
    }
  });
});

describe("classifyStoreError", () => {
  const err = (fields: Record<string, unknown>, message = "boom") =>
    Object.assign(new Error(message), fields);
  it.each([
    { e: err({ name: "SlowDown" }), code: "SlowDown", transient: true },
    { e: err({ name: "ServiceUnavailable" }), code: "ServiceUnavailable", transient: true },
    { e: err({ name: "InternalError" }), code: "InternalError", transient: true },
    { e: err({ name: "RequestTimeout" }), code: "RequestTimeout", transient: true },
    { e: err({ name: "RequestTimeTooSkewed" }), code: "RequestTimeTooSkewed", transient: true },
    { e: err({ name: "ThrottlingException" }), code: "ThrottlingException", transient: true },
    { e: err({ name: "Throttled" }), code: "Throttled", transient: true },
    { e: err({ name: "Unknown", $metadata: { httpStatusCode: 503 } }), code: "Http503", transient: true },
    { e: err({ name: "Whatever", $metadata: { httpStatusCode: 504 } }), code: "Whatever", transient: true },
    { e: err({ code: "ECONNRESET" }), code: "ECONNRESET", transient: true },
    { e: err({ code: "ECONNREFUSED" }), code: "ECONNREFUSED", transient: true },
    { e: err({ code: "EPIPE" }), code: "EPIPE", transient: true },
    { e: err({ code: "ETIMEDOUT" }), code: "ETIMEDOUT", transient: true },
    { e: err({}, "socket hang up"), code: "ECONNRESET", transient: true },
    { e: err({ name: "TimeoutError" }), code: "TimeoutError", transient: true },
    {
      e: err({ name: "AbortError", cause: err({ name: "TimeoutError" }) }),
      code: "TimeoutError",
      transient: true,
    },
    { e: err({ name: "AbortError" }, "The operation was aborted"), code: "AbortError", transient: false },
    {
      e: err({ name: "AccessDenied", $metadata: { httpStatusCode: 403 } }),
      code: "AccessDenied",
      transient: false,
    },
    { e: err({ name: "NoSuchBucket" }), code: "NoSuchBucket", transient: false },
    { e: err({ name: "InvalidAccessKeyId" }), code: "InvalidAccessKeyId", transient: false },
    { e: err({ name: "SignatureDoesNotMatch" }), code: "SignatureDoesNotMatch", transient: false },
    { e: err({ name: "AllAccessDisabled" }), code: "AllAccessDisabled", transient: false },
    { e: err({ name: "InvalidBucketName" }), code: "InvalidBucketName", transient: false },
    { e: err({ name: "S3ServiceException", Code: "AccessDenied" }), code: "AccessDenied", transient: false },
    { e: err({ name: "Unknown", $metadata: { httpStatusCode: 403 } }), code: "Http403", transient: false },
    { e: err({ name: "SomethingNew" }), code: "SomethingNew", transient: true },
    // The SDK's own configuration errors, raised before any request: no retry can cure them.
    { e: err({}, "Region is missing"), code: "RegionMissing", transient: false },
    // No credentials stays transient: it is also what a throttled metadata endpoint gives.
    {
      e: err({ name: "CredentialsProviderError" }, "Could not load credentials from any providers"),
      code: "CredentialsProviderError",
      transient: true,
    },
    { e: "a string", code: "Unknown", transient: true },
  ])("$code (transient: $transient)", ({ e, code, transient }) => {
    expect(classifyStoreError(e)).toMatchObject({ code, transient });
  });

  it("passes an ObjectStoreError through unchanged", () => {
    const e = new ObjectStoreError("x", { code: "PreconditionFailed", transient: false });
    expect(classifyStoreError(e)).toEqual({ code: "PreconditionFailed", message: "x", transient: false });
  });
});
