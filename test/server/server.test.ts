import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withMaintenanceLease } from "../../src/adapters/postgres/maintenance-lease.js";
import { InternalError, isUsageError, isValidationError } from "../../src/errors.js";
import { envelopeToJson } from "../../src/events/envelope.js";
import { datasetJson, statusJson } from "../../src/ledger/json-shapes.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { createServerApp } from "../../src/server/app.js";
import { loadTokens, parseTokens } from "../../src/server/auth.js";
import { startServer } from "../../src/server/start-server.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger } from "../support/ledger.js";
import { writeAttempt } from "../support/runs.js";
import { asJson, eventCount, startTestServer, type TestServer, TOKENS } from "../support/server.js";

interface ErrorReply {
  error: { code: string; message: string; field?: string; [k: string]: unknown };
}

describe(`shardledger serve over HTTP on ${BACKEND}`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let open: TestServer;
  let secured: TestServer;
  let dashboard: string;

  beforeAll(async () => {
    t = await openTestLedger();
    dashboard = mkdtempSync(join(tmpdir(), "shardledger-ui-"));
    writeFileSync(join(dashboard, "index.html"), "<!doctype html><title>shardledger</title>");
    mkdirSync(join(dashboard, "js"));
    writeFileSync(join(dashboard, "js", "app.js"), "export {}");
    writeFileSync(join(dashboard, "..", `${dashboard.split("/").at(-1)}-secret.txt`), "outside");
    open = await startTestServer(t.ledger, { dashboardDir: dashboard });
    secured = await startTestServer(t.ledger, { tokens: true, dashboardDir: dashboard });
  });
  afterAll(async () => {
    await open?.close();
    await secured?.close();
    await t?.close();
    rmSync(dashboard, { recursive: true, force: true });
    rmSync(join(dashboard, "..", `${dashboard.split("/").at(-1)}-secret.txt`), { force: true });
  });

  it("answers every endpoint with the library's result as JSON", async () => {
    const root = `${t.root}/ep`;
    const created = await open.request("POST", "/v1/datasets", { body: { datasetId: "ep", root } });
    expect(created.status).toBe(201);
    expect(created.body).toEqual(asJson(datasetJson(await t.ledger.dataset("ep"))));
    // The same shape as `dataset create --json`: durations as text beside the milliseconds.
    expect(created.body).toMatchObject({ policies: { retention: "30d", retentionMs: 30 * 86_400_000 } });
    // Idempotent when identical, as the library is.
    expect((await open.request("POST", "/v1/datasets", { body: { datasetId: "ep", root } })).status).toBe(
      201,
    );

    const patched = await open.request("PATCH", "/v1/datasets/ep", {
      body: { keepRuns: 5, safetyWindow: "0s" },
    });
    expect(patched.status).toBe(200);
    expect(patched.body).toEqual(asJson(datasetJson(await t.ledger.dataset("ep"))));
    expect((patched.body as { policies: { keepRuns: number } }).policies.keepRuns).toBe(5);

    const started = await open.request("POST", "/v1/runs", {
      body: { datasetId: "ep", numShards: 2, runId: "ep-1" },
    });
    expect(started).toMatchObject({
      status: 201,
      body: { runId: "ep-1", datasetId: "ep", numShards: 2, status: "STARTED" },
    });
    const hb = await open.request("POST", "/v1/runs/ep-1/heartbeat");
    expect(hb.status).toBe(200);
    expect(hb.body).toEqual(asJson((await t.ledger.run("ep-1")).run));

    const u0 = writeAttempt(`${t.dir}/ep`, root, "ep-1", 0, 0);
    const u1 = writeAttempt(`${t.dir}/ep`, root, "ep-1", 1, 0);
    const s0 = await open.request("POST", "/v1/runs/ep-1/attempts/started", {
      body: { shard: 0, attempt: 0, taskAttemptId: "9223372036854775807" },
    });
    expect(s0).toMatchObject({
      status: 200,
      body: {
        runId: "ep-1",
        shard: 0,
        attempt: 0,
        taskAttemptId: "9223372036854775807",
        url: null,
        status: "STARTED",
      },
    });
    const ok0 = await open.request("POST", "/v1/runs/ep-1/attempts/succeeded", {
      body: { shard: 0, attempt: 0, taskAttemptId: "9223372036854775807", url: u0 },
    });
    expect(ok0.status).toBe(200);
    // The same report again through the library: the same answer (idempotent), nothing new.
    expect(ok0.body).toEqual(
      asJson(
        await t.ledger.attemptSucceeded({
          runId: "ep-1",
          shard: 0,
          attempt: 0,
          taskAttemptId: "9223372036854775807",
          url: u0,
        }),
      ),
    );
    const failed = await open.request("POST", "/v1/runs/ep-1/attempts/failed", {
      body: { shard: 1, attempt: 7, error: "executor lost" },
    });
    expect(failed.body).toMatchObject({ shard: 1, attempt: 7, status: "FAILED" });
    const ok1 = await open.request("POST", "/v1/runs/ep-1/attempts/succeeded", {
      body: { runId: "ep-1", shard: 1, attempt: 0, url: u1 },
    });
    expect(ok1.body).toMatchObject({ status: "SUCCEEDED", url: u1 });

    const published = await open.request("POST", "/v1/runs/ep-1/publish");
    expect(published.status).toBe(200);
    expect(published.body).toMatchObject({ runId: "ep-1", status: "SUCCEEDED" });

    for (const [path, expected] of [
      ["/v1/status", (await t.ledger.status()).map(statusJson)],
      ["/v1/datasets", (await t.ledger.datasets()).map(datasetJson)],
      ["/v1/datasets/ep", datasetJson(await t.ledger.dataset("ep"))],
      ["/v1/datasets/ep/status", statusJson(await t.ledger.status("ep"))],
      ["/v1/datasets/ep/runs", await t.ledger.runs("ep")],
      ["/v1/datasets/ep/floors", await t.ledger.retentionFloors("ep")],
      ["/v1/datasets/ep/rollups", await t.ledger.rollups("ep")],
      ["/v1/runs/ep-1", await t.ledger.run("ep-1")],
      ["/v1/pending?datasetId=ep", await t.ledger.pendingCleanup({ datasetId: "ep" })],
      ["/v1/pending", await t.ledger.pendingCleanup()],
    ] as const) {
      const reply = await open.request("GET", path);
      expect({ path, status: reply.status }).toEqual({ path, status: 200 });
      expect(reply.body, path).toEqual(asJson(expected));
    }
    const events = await open.request("GET", "/v1/events?stream=ep-1&from=2&limit=3");
    expect(events.body).toEqual(
      asJson((await t.ledger.events({ stream: "ep-1", from: 2, limit: 3 })).map(envelopeToJson)),
    );
    expect((events.body as { streamVersion: number }[]).map((e) => e.streamVersion)).toEqual([2, 3, 4]);
    // The global log after a position (exclusive), as the library pages it.
    const global = await open.request<{ globalPosition: number }[]>("GET", "/v1/events?from=1&limit=2");
    expect(global.body).toEqual(asJson((await t.ledger.events({ from: 1, limit: 2 })).map(envelopeToJson)));
    expect(global.body).toHaveLength(2);
    expect(global.body.every((e) => Number(e.globalPosition) > 1)).toBe(true);

    const cleanupDry = await open.request("POST", "/v1/cleanup", { body: { datasetId: "ep", dryRun: true } });
    expect(cleanupDry).toMatchObject({ status: 200, body: { dryRun: true, planned: [] } });
    const cleanup = await open.request("POST", "/v1/cleanup", { body: { datasetId: "ep" } });
    expect(cleanup.body).toEqual(asJson(await t.ledger.cleanup({ datasetId: "ep" })));
    // Optional bodies may be left out.
    expect((await open.request("POST", "/v1/cleanup")).status).toBe(200);
    const gc = await open.request("POST", "/v1/datasets/ep/gc", { body: { dryRun: true } });
    expect(gc.body).toEqual(asJson(await t.ledger.gc("ep", { dryRun: true })));
    expect((await open.request("POST", "/v1/datasets/ep/gc")).status).toBe(200);
    const retry = await open.request("POST", "/v1/datasets/ep/retry-failed", { body: {} });
    expect(retry).toMatchObject({ status: 200, body: { matched: 0, retried: 0, prunedPastRetention: 0 } });

    // A second published run, then roll back to the first.
    await open.request("POST", "/v1/runs", { body: { datasetId: "ep", numShards: 1, runId: "ep-2" } });
    const v0 = writeAttempt(`${t.dir}/ep`, root, "ep-2", 0, 0);
    await open.request("POST", "/v1/runs/ep-2/attempts/succeeded", {
      body: { shard: 0, attempt: 0, url: v0 },
    });
    expect((await open.request("POST", "/v1/runs/ep-2/publish")).status).toBe(200);
    const rolled = await open.request("POST", "/v1/datasets/ep/rollback", { body: { toRunId: "ep-1" } });
    expect(rolled).toMatchObject({ status: 200, body: { previousRunId: "ep-2" } });
    expect((await t.ledger.dataset("ep")).currentRunId).toBe("ep-1");

    await open.request("POST", "/v1/runs", { body: { datasetId: "ep", numShards: 1, runId: "ep-3" } });
    const failRun = await open.request("POST", "/v1/runs/ep-3/fail", { body: { reason: "gave up" } });
    expect(failRun.body).toEqual(asJson((await t.ledger.run("ep-3")).run));
    expect(failRun.body).toMatchObject({ status: "FAILED", failureReason: "gave up" });

    expect((await open.request("GET", "/v1/audit/last")).status).toBe(404);
    const audit = await open.request<{ match: boolean; at: string }>("POST", "/v1/audit");
    expect(audit.body).toMatchObject({ match: true, events: expect.any(Number), at: expect.any(String) });
    expect((await open.request("GET", "/v1/audit/last")).body).toEqual(audit.body);

    expect(await open.request("GET", "/healthz")).toMatchObject({ status: 200, body: { status: "ok" } });
    expect(await open.request("GET", "/readyz")).toMatchObject({ status: 200, body: { status: "ready" } });
    const doc = await open.request<{ openapi: string; paths: Record<string, unknown> }>(
      "GET",
      "/openapi.json",
    );
    expect(doc.body.openapi).toBe("3.1.0");
    expect(Object.keys(doc.body.paths)).toContain("/v1/runs/{runId}/attempts/batch");
  });

  it("refuses bad input with 400 naming the field, and writes nothing", async () => {
    await t.ledger.createDataset({ datasetId: "bad", root: `${t.root}/bad` });
    await t.ledger.startRun({ datasetId: "bad", numShards: 2, runId: "bad-1" });
    const before = await eventCount(t.ledger);
    const cases: [string, string, unknown, string][] = [
      ["POST", "/v1/runs/bad-1/attempts/started", { shard: 5, attempt: 0 }, "shard"],
      ["POST", "/v1/runs/bad-1/attempts/started", { shard: -1, attempt: 0 }, "shard"],
      ["POST", "/v1/runs/bad-1/attempts/started", { shard: 0, attempt: 0, bogus: 1 }, "bogus"],
      ["POST", "/v1/runs/bad-1/attempts/succeeded", { shard: 0, attempt: 0, runId: "bad-2" }, "runId"],
      ["POST", "/v1/runs/bad-1/attempts/failed", { shard: 0, attempt: "x" }, "attempt"],
      [
        "POST",
        "/v1/runs/bad-1/attempts/started",
        { shard: 0, attempt: 0, taskAttemptId: "-3" },
        "taskAttemptId",
      ],
      ["POST", "/v1/runs", { datasetId: "bad", numShards: 0 }, "numShards"],
      ["POST", "/v1/runs", { datasetId: "bad/..", numShards: 1 }, "datasetId"],
      ["POST", "/v1/datasets", { datasetId: "x", root: "ftp://nope" }, "root"],
      ["PATCH", "/v1/datasets/bad", { keepRuns: 0 }, "keepRuns"],
      ["PATCH", "/v1/datasets/bad", { root: "file:///elsewhere" }, "root"],
      ["POST", "/v1/runs/bad-1/fail", {}, "reason"],
      ["POST", "/v1/runs/bad-1/attempts/batch", { reports: [] }, "reports"],
      ["POST", "/v1/runs/bad-1/attempts/batch", { items: [] }, "reports"],
      ["POST", "/v1/runs/bad-1/attempts/started", "{not json", "body"],
      ["GET", "/v1/events?limit=0", undefined, "limit"],
      ["GET", "/v1/pending?dataset=bad", undefined, "dataset"],
    ];
    for (const [method, path, body, field] of cases) {
      const reply = await open.request<ErrorReply>(method, path, body === undefined ? {} : { body });
      expect({
        path,
        body,
        status: reply.status,
        code: reply.body.error?.code,
        field: reply.body.error?.field,
      }).toEqual({ path, body, status: 400, code: "VALIDATION", field });
      expect(Object.keys(reply.body)).toEqual(["error"]);
    }
    // A fixed field says so, as the library and the CLI do, not just "unrecognized".
    for (const fixed of ["root", "datasetId"]) {
      const reply = await open.request<ErrorReply>("PATCH", "/v1/datasets/bad", {
        body: { [fixed]: "x", keepRuns: 2 },
      });
      expect(reply.body.error).toMatchObject({ code: "VALIDATION", field: fixed });
      expect(reply.body.error?.message).toMatch(/cannot be changed; register a new dataset instead/);
    }
    const huge = await open.request<ErrorReply>("POST", "/v1/runs/bad-1/attempts/batch", {
      body: JSON.stringify({
        reports: [{ kind: "failed", shard: 0, attempt: 0, error: "x".repeat(33 * 1024 * 1024) }],
      }),
    });
    expect(huge).toMatchObject({ status: 400, body: { error: { code: "VALIDATION", field: "body" } } });
    // A body sent chunked (no declared length) is counted as it streams: refused past the limit,
    // read whole below it.
    const chunked = (text: string) =>
      // node:http on a connection of its own (no keep-alive pool): without a content-length it
      // sends the body chunked; the server answers a refused body before reading all of it and
      // closes the connection, which a pooled client would try to reuse.
      new Promise<{ status: number; body: ErrorReply }>((resolve, reject) => {
        const target = new URL(`${open.url}/v1/runs/bad-1/attempts/batch`);
        const request = http.request(
          {
            host: target.hostname,
            port: target.port,
            path: target.pathname,
            method: "POST",
            agent: false,
            headers: { "content-type": "application/json" },
          },
          (response) => {
            let data = "";
            response.setEncoding("utf8");
            response.on("data", (chunk: string) => {
              data += chunk;
            });
            response.on("end", () =>
              resolve({ status: response.statusCode ?? 0, body: JSON.parse(data) as ErrorReply }),
            );
          },
        );
        // The server may close the connection while the body is still being written.
        request.on("error", (e: NodeJS.ErrnoException) => {
          if (e.code !== "EPIPE" && e.code !== "ECONNRESET") reject(e);
        });
        for (let at = 0; at < text.length; at += 1024 * 1024) request.write(text.slice(at, at + 1024 * 1024));
        request.end();
      });
    const hugeChunked = await chunked(
      JSON.stringify({
        reports: [{ kind: "failed", shard: 0, attempt: 0, error: "x".repeat(33 * 1024 * 1024) }],
      }),
    );
    expect(hugeChunked).toMatchObject({
      status: 400,
      body: { error: { code: "VALIDATION", field: "body" } },
    });
    // Below the limit, a chunked body reaches validation whole (its one report is refused).
    const smallChunked = await chunked(
      JSON.stringify({ reports: [{ kind: "started", shard: -1, attempt: 0 }] }),
    );
    expect(smallChunked.status).toBe(200);
    expect(smallChunked.body).toMatchObject({
      results: [{ index: 0, ok: false, error: { code: "VALIDATION", field: "shard" } }],
    });
    const wrongType = await open.request<ErrorReply>("POST", "/v1/runs/bad-1/attempts/started", {
      body: "shard=1",
      headers: { "content-type": "text/plain" },
    });
    expect(wrongType).toMatchObject({
      status: 400,
      body: { error: { code: "VALIDATION", field: "content-type" } },
    });
    expect(await eventCount(t.ledger)).toBe(before);
  });

  it("answers 404, 409 (refused rules, with their details) and 423 (a held lock)", async () => {
    await t.ledger.createDataset({ datasetId: "rules", root: `${t.root}/rules` });
    expect((await open.request<ErrorReply>("GET", "/v1/runs/nosuch")).body.error).toMatchObject({
      code: "NOT_FOUND",
      kind: "run",
      id: "nosuch",
    });
    for (const [method, path] of [
      ["GET", "/v1/runs/nosuch"],
      ["POST", "/v1/runs/nosuch/heartbeat"],
      ["POST", "/v1/runs/nosuch/publish"],
      ["GET", "/v1/datasets/nosuch"],
      ["GET", "/v1/datasets/nosuch/runs"],
      ["GET", "/v1/pending?datasetId=nosuch"],
      ["GET", "/v1/events?stream=nosuch"],
      ["GET", "/v1/no-such-endpoint"],
      ["GET", "/ui/missing.js"],
    ] as const) {
      const reply = await open.request<ErrorReply>(method, path);
      expect({ path, status: reply.status, code: reply.body.error.code }).toEqual({
        path,
        status: 404,
        code: "NOT_FOUND",
      });
    }
    await t.ledger.startRun({ datasetId: "rules", numShards: 3, runId: "rules-1" });
    const u0 = writeAttempt(`${t.dir}/rules`, `${t.root}/rules`, "rules-1", 0, 0);
    await t.ledger.attemptSucceeded({ runId: "rules-1", shard: 0, attempt: 0, url: u0 });
    const refused = await open.request<ErrorReply>("POST", "/v1/runs/rules-1/publish");
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatchObject({
      code: "SHARD_COVERAGE",
      runId: "rules-1",
      missingShards: [1, 2],
    });
    const contradicting = await open.request<ErrorReply>("POST", "/v1/runs/rules-1/attempts/failed", {
      body: { shard: 0, attempt: 0, error: "no" },
    });
    expect(contradicting).toMatchObject({ status: 409, body: { error: { code: "CONTRADICTING_REPORT" } } });

    // 423: another pass holds the dataset's maintenance lease.
    let release!: () => void;
    let entered!: () => void;
    const inside = new Promise<void>((r) => {
      entered = r;
    });
    const holding = withMaintenanceLease(t.database, "rules", async () => {
      entered();
      await new Promise<void>((r) => {
        release = r;
      });
    });
    await inside;
    try {
      const before = await eventCount(t.ledger);
      const locked = await open.request<ErrorReply>("POST", "/v1/datasets/rules/gc", { body: {} });
      expect(locked).toMatchObject({ status: 423, body: { error: { code: "LOCKED" } } });
      expect(await eventCount(t.ledger)).toBe(before);
    } finally {
      release();
      await holding;
    }
  });

  it("authenticates and authorises by scope and dataset, and a refusal writes nothing", async () => {
    await t.ledger.createDataset({ datasetId: "auth", root: `${t.root}/auth` });
    await t.ledger.createDataset({ datasetId: "other", root: `${t.root}/other` });
    await t.ledger.startRun({ datasetId: "auth", numShards: 1, runId: "auth-1" });
    const before = await eventCount(t.ledger);
    const refusals: [string, string, string | undefined, unknown, number, string][] = [
      ["POST", "/v1/runs", undefined, { datasetId: "auth", numShards: 1 }, 401, "UNAUTHENTICATED"],
      ["GET", "/v1/datasets", undefined, undefined, 401, "UNAUTHENTICATED"],
      ["POST", "/v1/runs", "wrong-token", { datasetId: "auth", numShards: 1 }, 401, "UNAUTHENTICATED"],
      ["POST", "/v1/runs", TOKENS.read, { datasetId: "auth", numShards: 1 }, 403, "FORBIDDEN"],
      ["POST", "/v1/runs", TOKENS.writeOther, { datasetId: "auth", numShards: 1 }, 403, "FORBIDDEN"],
      ["POST", "/v1/runs/auth-1/attempts/started", TOKENS.read, { shard: 0, attempt: 0 }, 403, "FORBIDDEN"],
      [
        "POST",
        "/v1/runs/auth-1/attempts/started",
        TOKENS.writeOther,
        { shard: 0, attempt: 0 },
        403,
        "FORBIDDEN",
      ],
      [
        "POST",
        "/v1/runs/auth-1/attempts/batch",
        TOKENS.writeOther,
        { reports: [{ kind: "started", shard: 0, attempt: 0 }] },
        403,
        "FORBIDDEN",
      ],
      ["POST", "/v1/runs/auth-1/heartbeat", TOKENS.writeOther, undefined, 403, "FORBIDDEN"],
      ["POST", "/v1/runs/auth-1/fail", TOKENS.writeOther, { reason: "x" }, 403, "FORBIDDEN"],
      ["POST", "/v1/runs/auth-1/publish", TOKENS.write, undefined, 403, "FORBIDDEN"],
      ["POST", "/v1/runs/auth-1/publish", TOKENS.adminOther, undefined, 403, "FORBIDDEN"],
      ["POST", "/v1/datasets", TOKENS.write, { datasetId: "a2", root: `${t.root}/a2` }, 403, "FORBIDDEN"],
      [
        "POST",
        "/v1/datasets",
        TOKENS.adminOther,
        { datasetId: "a2", root: `${t.root}/a2` },
        403,
        "FORBIDDEN",
      ],
      ["PATCH", "/v1/datasets/auth", TOKENS.adminOther, { keepRuns: 2 }, 403, "FORBIDDEN"],
      ["POST", "/v1/datasets/auth/gc", TOKENS.write, {}, 403, "FORBIDDEN"],
      ["POST", "/v1/datasets/auth/rollback", TOKENS.adminOther, { toRunId: "auth-1" }, 403, "FORBIDDEN"],
      ["POST", "/v1/datasets/auth/retry-failed", TOKENS.write, {}, 403, "FORBIDDEN"],
      ["POST", "/v1/cleanup", TOKENS.write, {}, 403, "FORBIDDEN"],
      ["POST", "/v1/cleanup", TOKENS.adminOther, {}, 403, "FORBIDDEN"],
      ["POST", "/v1/cleanup", TOKENS.adminOther, { datasetId: "auth" }, 403, "FORBIDDEN"],
      // Unknown run: 404 for any authenticated token, never a hint for an unauthenticated one.
      ["POST", "/v1/runs/nosuch/attempts/started", TOKENS.write, { shard: 0, attempt: 0 }, 404, "NOT_FOUND"],
      [
        "POST",
        "/v1/runs/nosuch/attempts/started",
        undefined,
        { shard: 0, attempt: 0 },
        401,
        "UNAUTHENTICATED",
      ],
    ];
    for (const [method, path, token, body, status, code] of refusals) {
      const reply = await secured.request<ErrorReply>(method, path, {
        ...(token !== undefined ? { token } : {}),
        ...(body !== undefined ? { body } : {}),
      });
      expect({ method, path, token, status: reply.status, code: reply.body.error?.code }).toEqual({
        method,
        path,
        token,
        status,
        code,
      });
      expect(reply.body.error.message).toEqual(expect.any(String));
      expect(JSON.stringify(reply.body)).not.toContain(TOKENS.admin);
      // RFC 6750 §3: a 401 names the scheme, and invalid_token when a token was sent.
      expect({ path, token, challenge: reply.headers.get("www-authenticate") }).toEqual({
        path,
        token,
        challenge:
          status !== 401
            ? null
            : token === undefined
              ? 'Bearer realm="shardledger"'
              : 'Bearer realm="shardledger", error="invalid_token"',
      });
    }
    expect(await eventCount(t.ledger)).toBe(before);

    // What each scope may do.
    expect((await secured.request("GET", "/v1/datasets", { token: TOKENS.read })).status).toBe(200);
    expect((await secured.request("POST", "/v1/audit", { token: TOKENS.read })).status).toBe(200);
    expect((await secured.request("GET", "/v1/runs/auth-1", { token: TOKENS.writeOther })).status).toBe(200);
    const started = await secured.request("POST", "/v1/runs", {
      token: TOKENS.writeOther,
      body: { datasetId: "other", numShards: 1, runId: "other-1" },
    });
    expect(started.status).toBe(201);
    expect(
      (
        await secured.request("POST", "/v1/runs/auth-1/attempts/started", {
          token: TOKENS.write,
          body: { shard: 0, attempt: 0 },
        })
      ).status,
    ).toBe(200);
    expect(
      (await secured.request("POST", "/v1/datasets/auth/gc", { token: TOKENS.admin, body: { dryRun: true } }))
        .status,
    ).toBe(200);
    expect(
      (await secured.request("POST", "/v1/runs/other-1/heartbeat", { token: TOKENS.adminOther })).status,
    ).toBe(200);
    // The service endpoints and the dashboard need no token.
    for (const path of ["/healthz", "/readyz", "/metrics", "/openapi.json", "/", "/ui/js/app.js"]) {
      expect({ path, status: (await secured.request("GET", path)).status }).toEqual({ path, status: 200 });
    }
  });

  it("applies a batch item by item, with per-item results, idempotently", async () => {
    await t.ledger.createDataset({ datasetId: "batch", root: `${t.root}/batch` });
    await t.ledger.startRun({ datasetId: "batch", numShards: 4, runId: "batch-1" });
    const url = (shard: number) => writeAttempt(`${t.dir}/batch`, `${t.root}/batch`, "batch-1", shard, 0);
    const reports = [
      { kind: "started", shard: 0, attempt: 0 },
      { kind: "succeeded", shard: 0, attempt: 0, url: url(0) },
      { kind: "succeeded", shard: 9, attempt: 0 },
      { kind: "failed", shard: 1, attempt: 0, error: "lost" },
      { kind: "exploded", shard: 1, attempt: 1 },
      { kind: "started", shard: 2, attempt: 0, error: "only failed reports carry one" },
      { kind: "succeeded", shard: 2, attempt: 0, url: url(2), runId: "batch-2" },
      { kind: "succeeded", shard: 3, attempt: 0, url: url(3), taskAttemptId: 42 },
      { kind: "failed", shard: 0, attempt: 0, error: "contradicts the success" },
      "not an object",
    ];
    const reply = await open.request<{ results: Record<string, unknown>[] }>(
      "POST",
      "/v1/runs/batch-1/attempts/batch",
      {
        body: { reports },
      },
    );
    expect(reply.status).toBe(200);
    const summary = reply.body.results.map((r) =>
      r.ok
        ? { index: r.index, ok: true, status: (r.attempt as { status: string }).status }
        : {
            index: r.index,
            ok: false,
            code: (r.error as { code: string }).code,
            field: (r.error as { field?: string }).field,
          },
    );
    expect(summary).toEqual([
      { index: 0, ok: true, status: expect.stringMatching(/^(STARTED|SUCCEEDED)$/) },
      { index: 1, ok: true, status: "SUCCEEDED" },
      { index: 2, ok: false, code: "VALIDATION", field: "shard" },
      { index: 3, ok: true, status: "FAILED" },
      { index: 4, ok: false, code: "VALIDATION", field: "kind" },
      { index: 5, ok: false, code: "VALIDATION", field: "error" },
      { index: 6, ok: false, code: "VALIDATION", field: "runId" },
      { index: 7, ok: true, status: "SUCCEEDED" },
      { index: 8, ok: false, code: "CONTRADICTING_REPORT", field: undefined },
      { index: 9, ok: false, code: "VALIDATION", field: "body" },
    ]);
    expect(reply.body.results[7]).toMatchObject({ attempt: { taskAttemptId: "42", url: url(3) } });
    const shown = await t.ledger.run("batch-1");
    expect(shown.attempts.map((a) => [a.shard, a.attempt, a.status]).sort()).toEqual([
      [0, 0, "SUCCEEDED"],
      [1, 0, "FAILED"],
      [3, 0, "SUCCEEDED"],
    ]);

    // The same batch again: the same answers, and nothing new in the log.
    const before = await eventCount(t.ledger);
    const again = await open.request<{ results: Record<string, unknown>[] }>(
      "POST",
      "/v1/runs/batch-1/attempts/batch",
      {
        body: { reports },
      },
    );
    expect(again.status).toBe(200);
    expect(again.body.results.map((r) => r.ok)).toEqual(reply.body.results.map((r) => r.ok));
    expect(again.body.results[1]).toEqual(reply.body.results[1]);
    expect(await eventCount(t.ledger)).toBe(before);
  });

  it("serves the dashboard's files and nothing outside its folder", async () => {
    const index = await open.request<string>("GET", "/");
    expect(index.status).toBe(200);
    expect(index.headers.get("content-type")).toContain("text/html");
    expect(index.body).toContain("<title>shardledger</title>");
    const js = await open.request("GET", "/ui/js/app.js");
    expect(js.status).toBe(200);
    expect(js.headers.get("content-type")).toContain("javascript");
    const secret = `${dashboard.split("/").at(-1)}-secret.txt`;
    for (const path of [
      `/ui/../${secret}`,
      `/ui/%2e%2e/${secret}`,
      `/ui/..%2f${secret}`,
      `/ui/js/..%2f..%2f${secret}`,
      "/ui/%2fetc%2fpasswd",
      "/ui/.hidden",
    ]) {
      const reply = await fetch(`${open.url}${path}`);
      const text = await reply.text();
      expect({ path, status: reply.status, leaked: text.includes("outside") }).toEqual({
        path,
        status: 404,
        leaked: false,
      });
    }
  });

  it("carries a request id on every response, echoing the caller's", async () => {
    const mine = await open.request("GET", "/healthz", { headers: { "x-request-id": "abc-123" } });
    expect(mine.headers.get("x-request-id")).toBe("abc-123");
    const generated = await open.request("GET", "/v1/nothing");
    expect(generated.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    const refused = await secured.request("GET", "/v1/datasets");
    expect(refused.headers.get("x-request-id")).toEqual(expect.any(String));
  });

  it("looks a run's dataset up once however many of its first reports arrive together", async () => {
    await t.ledger.createDataset({ datasetId: "herd", root: `${t.root}/herd` });
    await t.ledger.startRun({ datasetId: "herd", numShards: 32, runId: "herd-1" });
    let lookups = 0;
    const counting = new Proxy(t.ledger, {
      get(target, key, receiver) {
        const value = Reflect.get(target, key, receiver);
        if (key === "run") {
          return (runId: string) => {
            lookups += 1;
            return target.run(runId);
          };
        }
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const app = createServerApp(counting, { dashboardDir: tmpdir() });
    const replies = await Promise.all(
      Array.from({ length: 32 }, (_, shard) =>
        app.request("/v1/runs/herd-1/attempts/started", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ shard, attempt: 0 }),
        }),
      ),
    );
    expect(replies.map((r) => r.status)).toEqual(Array(32).fill(200));
    // Each lookup loads the whole run (every attempt): the 32 requests share one.
    expect(lookups).toBe(1);
    await app.request("/v1/runs/herd-1/heartbeat", { method: "POST" });
    expect(lookups).toBe(1);
  });

  it("counts requests in /metrics", async () => {
    await open.request("GET", "/v1/datasets");
    const text = (await open.request<string>("GET", "/metrics")).body;
    expect(text).toMatch(
      /shardledger_http_requests_total\{method="GET",route="\/v1\/datasets",status="200"\} \d+/,
    );
    expect(text).toContain("shardledger_http_request_duration_seconds_bucket");
    expect(text).toMatch(/shardledger_attempt_reports_total\{kind="succeeded",outcome="ok"\} \d+/);
    expect(text).toContain("shardledger_pending_cleanup_items");
    // Ids never become labels.
    expect(text).not.toContain("ep-1");
    // Nor does whatever a client puts in a report's kind (the batch test sent "exploded").
    expect(text).toMatch(/shardledger_attempt_reports_total\{kind="unknown",outcome="VALIDATION"\} \d+/);
    expect(text).not.toContain("exploded");
  });

  it("refuses to listen on a non-loopback address without tokens", async () => {
    const error = await startServer(t.ledger, { listen: "0.0.0.0:0" }).catch((e: unknown) => e);
    expect(isUsageError(error)).toBe(true);
    expect((error as { field?: string }).field).toBe("listen");
    const withTokens = await startServer(t.ledger, {
      listen: "0.0.0.0:0",
      tokens: parseTokens(
        '{"tokens":[{"token":"t0123","scope":"read","datasets":"*"}]}',
        "SHARDLEDGER_TOKENS",
      ),
    });
    await withTokens.close();
    expect(isUsageError(await startServer(t.ledger, { listen: "localhost" }).catch((e: unknown) => e))).toBe(
      true,
    );
  });

  it("refuses a bad tokens file with an error naming the field", () => {
    const bad = (text: string) => {
      try {
        parseTokens(text, "--tokens");
      } catch (e) {
        expect(isValidationError(e)).toBe(true);
        return (e as { field: string }).field;
      }
      throw new Error(`accepted ${text}`);
    };
    expect(bad("{")).toBe("--tokens");
    expect(bad('{"tokens":[{"token":"x","scope":"root","datasets":"*"}]}')).toBe("--tokens: tokens.0.scope");
    expect(bad('{"tokens":[{"token":"x","scope":"read"}]}')).toBe("--tokens: tokens.0.datasets");
    expect(bad('{"tokens":[{"token":"x","scope":"read","datasets":"*","extra":1}]}')).toBe("--tokens: extra");
    expect(bad('{"tokens":[]}')).toBe("--tokens: tokens");
    expect(
      bad(
        '{"tokens":[{"token":"x","scope":"read","datasets":"*"},{"token":"x","scope":"admin","datasets":"*"}]}',
      ),
    ).toBe("--tokens: tokens.1.token");
    expect(() => loadTokens({ file: join(tmpdir(), "no-such-tokens.json") })).toThrow(
      /--tokens: cannot read/,
    );
    expect(loadTokens({})).toEqual([]);
  });
});

describe("the server app without a database", () => {
  it("answers /readyz 503 when the database is unreachable, and a bug 500 INTERNAL, logged with its request id", async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ base: null }, { write: (line: string) => lines.push(JSON.parse(line)) });
    const broken = {
      datasets: async () => {
        throw new InternalError("cannot reach the database postgres://db/ledger: ECONNREFUSED");
      },
      status: async () => {
        throw new TypeError("x is undefined");
      },
    } as unknown as Ledger;
    const app = createServerApp(broken, { logger, dashboardDir: tmpdir() });
    const ready = await app.request("/readyz");
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ status: "unavailable", error: { code: "INTERNAL" } });
    const bug = await app.request("/v1/status", {
      headers: { "x-request-id": "req-42", authorization: "Bearer secret-never-logged" },
    });
    expect(bug.status).toBe(500);
    expect(await bug.json()).toEqual({
      error: { code: "INTERNAL", message: "unexpected error: x is undefined" },
    });
    expect(lines.find((l) => l.msg === "request failed")).toMatchObject({
      requestId: "req-42",
      path: "/v1/status",
    });
    expect(lines.find((l) => l.msg === "request" && l.path === "/v1/status")).toMatchObject({
      status: 500,
      requestId: "req-42",
    });
    expect(JSON.stringify(lines)).not.toContain("secret-never-logged");
  });
});
