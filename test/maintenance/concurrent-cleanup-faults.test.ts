import { spawn } from "node:child_process";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createS3ObjectStore } from "../../src/adapters/objectstore/s3-object-store.js";
import { isValidationError } from "../../src/errors.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger, testClock } from "../support/ledger.js";
import { type S3ModelHandle, startS3Model } from "../support/s3-model.js";

const BUCKET = "lake";
const shard = (n: number) => `shard=${String(n).padStart(5, "0")}`;
const PARTS = 4;

/**
 * The concurrent cleanup on the S3 model (real HTTP, real latency) under the faults S3 produces:
 * SlowDown storms, connection resets, per-key errors, and a SIGKILL while many prefixes are in
 * flight. After every pass: winners and bystanders are untouched, every loser is deleted or
 * pending, the replayed log matches the projections.
 */
describe(`concurrent cleanup on the S3 model under faults (${BACKEND})`, () => {
  let model: S3ModelHandle;
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  const clock = testClock();

  beforeAll(async () => {
    model = await startS3Model({
      buckets: [BUCKET],
      latency: { medianMs: 3, p99Ms: 20 },
      deletesPerSecond: Number.POSITIVE_INFINITY,
      readsPerSecond: Number.POSITIVE_INFINITY,
    });
    t = await openTestLedger({
      clock: clock.now,
      // Backoff is recorded, not slept: the faults are what is under test, not the waiting.
      sleep: async () => {},
      random: () => 0.5,
      objectStore: (root) => createS3ObjectStore(root, { client: model.client() }),
    });
    ledger = t.ledger;
  });
  afterAll(async () => {
    await t?.close();
    await model?.stop();
  });

  /** A published run: per shard a winner, a succeeded and a failed loser, each with PARTS objects. */
  async function publishedRun(datasetId: string, shards: number) {
    const root = `s3://${BUCKET}/${datasetId}`;
    const runId = `${datasetId}-r1`;
    await ledger.createDataset({ datasetId, root, safetyWindow: "0s" });
    await ledger.startRun({ datasetId, numShards: shards, runId });
    const winners: string[] = [];
    const losers: string[] = [];
    for (let s = 0; s < shards; s++) {
      const url = (a: number) => `${root}/data/${runId}/${shard(s)}/attempt=0${a}`;
      const keysOf = (a: number) =>
        Array.from(
          { length: PARTS },
          (_, p) => `${datasetId}/data/${runId}/${shard(s)}/attempt=0${a}/part-${p}`,
        );
      model.seed(BUCKET, [...keysOf(0), ...keysOf(1), ...keysOf(2)]);
      await ledger.attemptSucceeded({ runId, shard: s, attempt: 0, url: url(0) });
      await ledger.attemptSucceeded({ runId, shard: s, attempt: 1, url: url(1) });
      await ledger.attemptFailed({ runId, shard: s, attempt: 2, url: url(2), error: "lost executor" });
      winners.push(url(0));
      losers.push(url(1), url(2));
    }
    const bystanders = [
      `${datasetId}/data/${runId}/${shard(0)}/attempt=010/part-0`,
      `${datasetId}x/data/${runId}/${shard(0)}/attempt=01/part-0`,
      `elsewhere/${datasetId}/data/${runId}/${shard(0)}/attempt=01/part-0`,
    ];
    model.seed(BUCKET, bystanders);
    await ledger.publish(runId);
    return { datasetId, runId, root, winners, losers, bystanders };
  }

  const keyOf = (url: string) => url.slice(`s3://${BUCKET}/`.length);

  /** After a pass that finished (`afterKill`: one that was killed, whose unplanned losers may remain LOSER). */
  async function checkInvariants(f: Awaited<ReturnType<typeof publishedRun>>, afterKill = false) {
    for (const w of f.winners) expect(model.keys(BUCKET, `${keyOf(w)}/`), w).toHaveLength(PARTS);
    for (const b of f.bystanders) expect(model.keys(BUCKET, b), b).toEqual([b]);
    const pending = new Set((await ledger.pendingCleanup({ datasetId: f.datasetId })).map((p) => p.url));
    for (const l of f.losers) {
      const left = model.keys(BUCKET, `${keyOf(l)}/`);
      if (left.length > 0 && !afterKill)
        expect(pending.has(l), `${l} has objects left and is not pending`).toBe(true);
    }
    expect((await ledger.audit()).match).toBe(true);
  }

  it("refuses bad throughput options before anything is deleted, naming the field", async () => {
    const f = await publishedRun("opts", 2);
    for (const [options, field] of [
      [{ concurrency: 0 }, "concurrency"],
      [{ concurrency: 2.5 }, "concurrency"],
      [{ concurrency: 10_000 }, "concurrency"],
      [{ initialRate: -1 }, "initialRate"],
      [{ initialRate: Number.NaN }, "initialRate"],
    ] as const) {
      const error = await ledger.cleanup({ datasetId: f.datasetId, ...options }).catch((e) => e);
      expect(isValidationError(error), JSON.stringify(options)).toBe(true);
      expect(error.field).toBe(field);
    }
    for (const l of f.losers) expect(model.keys(BUCKET, `${keyOf(l)}/`)).toHaveLength(PARTS);
    expect(await ledger.pendingCleanup({ datasetId: f.datasetId })).toEqual([]);
  });

  it("rides out a SlowDown storm: backs off its rate, loses nothing protected, and a later pass drains", async () => {
    const f = await publishedRun("storm", 24);
    let seen = 0;
    // The first 30 batch deletes, and every tenth listing meanwhile, are answered 503 SlowDown
    // (S3 repartitioning the prefix).
    model.onRequest = (r) =>
      r.op === "DeleteObjects"
        ? ++seen <= 30
          ? { status: 503, code: "SlowDown" }
          : null
        : seen <= 30 && r.index % 10 === 0
          ? { status: 503, code: "SlowDown" }
          : null;
    const report = await ledger.cleanup({ datasetId: f.datasetId, concurrency: 8, initialRate: 2_000 });
    model.onRequest = null;
    expect(report.deleted.length + report.failed.length).toBe(f.losers.length);
    const [throughput] = report.throughput ?? [];
    expect(throughput?.throttled).toBeGreaterThan(0);
    expect(throughput?.settledRate).toBeLessThan(2_000);
    expect(report.failed.every((x) => x.error.startsWith("SlowDown"))).toBe(true);
    await checkInvariants(f);

    clock.advance(3_600_001);
    const later = await ledger.cleanup({ datasetId: f.datasetId, concurrency: 8 });
    expect(later.failed).toEqual([]);
    expect(await ledger.pendingCleanup({ datasetId: f.datasetId })).toEqual([]);
    for (const l of f.losers) expect(model.keys(BUCKET, `${keyOf(l)}/`), l).toEqual([]);
    await checkInvariants(f);
  });

  it("rides out connection resets on every seventh request", async () => {
    const f = await publishedRun("resets", 16);
    let seen = 0;
    model.onRequest = () => (++seen % 7 === 0 ? "reset" : null);
    const report = await ledger.cleanup({ datasetId: f.datasetId, concurrency: 8 });
    await checkInvariants(f);
    clock.advance(3_600_001);
    const later = await ledger.cleanup({ datasetId: f.datasetId, concurrency: 8 });
    model.onRequest = null;
    expect(report.deleted.length + later.deleted.length).toBe(f.losers.length);
    expect(await ledger.pendingCleanup({ datasetId: f.datasetId })).toEqual([]);
    expect(model.stats.resets).toBeGreaterThan(0);
    await checkInvariants(f);
  });

  it("never retries a permanent per-key error; retries a transient one; outcomes stay per prefix", async () => {
    const f = await publishedRun("perkey", 12);
    const denied = `${keyOf(f.losers[3] as string)}/part-1`;
    const flaky = `${keyOf(f.losers[8] as string)}/part-2`;
    model.keyErrors.set(denied, { code: "AccessDenied", message: "Access Denied" });
    model.keyErrors.set(flaky, { code: "InternalError", message: "We encountered an internal error" });
    let deniedSent = 0;
    let flakySent = 0;
    model.onRequest = (r) => {
      if (r.op === "DeleteObjects" && r.keys.includes(denied)) deniedSent++;
      if (r.op === "DeleteObjects" && r.keys.includes(flaky)) flakySent++;
      return null;
    };
    const report = await ledger.cleanup({ datasetId: f.datasetId, concurrency: 6 });
    expect(deniedSent).toBe(1);
    expect(flakySent).toBeGreaterThan(1);
    expect(report.failed.map((x) => x.url).sort()).toEqual([f.losers[3], f.losers[8]].sort());
    expect(report.deleted).toHaveLength(f.losers.length - 2);
    const pending = await ledger.pendingCleanup({ datasetId: f.datasetId });
    expect(pending.find((p) => p.url === f.losers[3])?.state).toBe("exhausted");
    expect(pending.find((p) => p.url === f.losers[8])?.state).toBe("failed");
    await checkInvariants(f);

    model.keyErrors.delete(flaky);
    clock.advance(3_600_001);
    const later = await ledger.cleanup({ datasetId: f.datasetId, concurrency: 6 });
    model.onRequest = null;
    model.keyErrors.clear();
    expect(later.deleted).toEqual([f.losers[8]]);
    expect(deniedSent).toBe(1); // exhausted: waits for retry-failed, never sent again
    await checkInvariants(f);
  });

  it("a pass whose lease another pass took sends nothing more and records no outcome; the next pass finishes", async () => {
    const f = await publishedRun("fenced", 16);
    let bumped = false;
    let afterBump = 0;
    let deletes = 0;
    model.onRequest = (r) => {
      if (bumped) afterBump++;
      if (r.op === "DeleteObjects" && ++deletes === 3) {
        bumped = true;
        // Another pass takes the lease while this request is in flight (the epoch moves on).
        void sql`UPDATE ${sql.id(t.schema, "maintenance_leases")} SET epoch = epoch + 1
          WHERE dataset_id = ${f.datasetId}`.execute(t.database.db);
      }
      return null;
    };
    const report = await ledger.cleanup({ datasetId: f.datasetId, concurrency: 4 });
    model.onRequest = null;
    expect(report.leaseLost).toEqual([f.datasetId]);
    // Requests already sent when the epoch moved may land; none is sent after the next check.
    expect(afterBump).toBeLessThanOrEqual(4);
    const types = (await ledger.events({ stream: `run-${f.runId}`, limit: 10_000 })).map((e) => e.type);
    expect(types).not.toContain("CleanupSucceeded");
    await checkInvariants(f, true);
    const next = await ledger.cleanup({ datasetId: f.datasetId, concurrency: 4 });
    expect(next.leaseLost).toEqual([]);
    expect(await ledger.pendingCleanup({ datasetId: f.datasetId })).toEqual([]);
    for (const l of f.losers) expect(model.keys(BUCKET, `${keyOf(l)}/`), l).toEqual([]);
    await checkInvariants(f);
  });

  it.runIf(BACKEND === "postgres")(
    "a process SIGKILLed with many prefixes in flight: the next pass finishes exactly, nothing protected deleted",
    async () => {
      const f = await publishedRun("killed", 40);
      const total = f.losers.length * PARTS;
      model.resetStats();
      const nth = 10 + Math.floor(Math.random() * 40);
      const { killed, output } = await runAndKill(
        {
          DATABASE_URL: process.env.DATABASE_URL as string,
          LEDGER_SCHEMA: t.schema,
          DATASET_ID: f.datasetId,
          S3_MODEL_ENDPOINT: model.endpoint,
        },
        "deleted",
        nth,
      );
      expect(killed, output).toBe(true);
      expect(output).not.toContain("MARK done");
      const afterKill = model.stats.deletedKeys;
      expect(afterKill).toBeGreaterThan(0);
      const planned = (await ledger.pendingCleanup({ datasetId: f.datasetId })).filter(
        (p) => p.state === "planned",
      );
      // Planned before deleted: every prefix the killed pass emptied (wholly or partly) was planned.
      for (const l of f.losers) {
        const left = model.keys(BUCKET, `${keyOf(l)}/`).length;
        const run = await ledger.run(f.runId);
        const status = run.attempts.find((a) => a.url === l)?.status;
        if (left < PARTS && status !== "DELETED") expect(planned.map((p) => p.url)).toContain(l);
      }
      await checkInvariants(f, true);

      const report = await ledger.cleanup({ datasetId: f.datasetId, concurrency: 8 });
      expect(report.skipped).toEqual([]);
      expect(report.failed).toEqual([]);
      expect(await ledger.pendingCleanup({ datasetId: f.datasetId })).toEqual([]);
      const shown = await ledger.run(f.runId);
      expect(shown.attempts.filter((a) => a.status === "DELETED")).toHaveLength(f.losers.length);
      // Every loser object was deleted exactly once over both passes, and nothing else.
      expect(model.stats.deletedKeys).toBe(total);
      await checkInvariants(f);
    },
  );
});

/** Runs the child until its `nth` announcement of `marker`, then SIGKILLs it. */
function runAndKill(
  env: Record<string, string>,
  marker: string,
  nth: number,
): Promise<{ killed: boolean; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "test/support/concurrent-cleanup-child.ts"], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    let seen = 0;
    let killed = false;
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      for (const line of chunk.toString().split("\n")) {
        if (!killed && line.startsWith(`MARK ${marker}`) && ++seen === nth) {
          killed = true;
          child.kill("SIGKILL");
        }
      }
    });
    child.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.on("error", reject);
    child.on("exit", () => resolve({ killed, output }));
  });
}
