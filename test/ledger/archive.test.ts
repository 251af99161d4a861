/**
 * Archiving pruned runs (issue 16, items 1–2): a pruned run's stream goes to
 * `<root>/_archive/run-<runId>.jsonl`, then its `.complete` marker, then — in one transaction —
 * leaves the hot log while `Archived` is recorded on the dataset stream. A crash between any two
 * steps resumes exactly; readers read through; a deep audit checks every archive; rollups and a
 * rebuild from the hot log agree with the live projections.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { sql } from "kysely";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createPgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import { createProjectionTables } from "../../src/adapters/postgres/projection-schema.js";
import { replayInto } from "../../src/adapters/postgres/rebuild.js";
import {
  processSubscriptionBatch,
  subscriptionCheckpoint,
} from "../../src/adapters/postgres/subscription.js";
import type { RecordedEvent } from "../../src/events/envelope.js";
import type { ArchiveStep } from "../../src/ledger/archive.js";
import { maintainLoop } from "../../src/ledger/maintain-loop.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { sha256Hex } from "../../src/storage/archive-format.js";
import { BACKEND } from "../support/database.js";
import { eventually } from "../support/eventually.js";
import { openTestLedger, testClock } from "../support/ledger.js";
import { writeAndPublish } from "../support/runs.js";
import { asJson, startTestServer } from "../support/server.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

type T = Awaited<ReturnType<typeof openTestLedger>>;

/** Every event of the global log, page by page, as far as read-all reaches now. */
async function readAllOnce(ledger: Ledger): Promise<RecordedEvent[]> {
  const out: RecordedEvent[] = [];
  for (let after = 0; ; ) {
    const page = await ledger.events({ from: after, limit: 500 });
    if (page.length === 0) return out;
    out.push(...page);
    after = page.at(-1)?.globalPosition as number;
  }
}

/**
 * Every event of the global log. Read-all stops below the cluster's oldest running transaction
 * (other test files share the server), so it is read until it reaches the last stored position.
 */
async function readAllEvents(t: T): Promise<RecordedEvent[]> {
  const { rows } = await sql<{ last: string | number | null }>`
    SELECT max(global_position) AS last FROM ${sql.id(t.schema, "events")}`.execute(t.database.db);
  const last = Number(rows[0]?.last ?? 0);
  return eventually(
    () => readAllOnce(t.ledger),
    (events) => (events.at(-1)?.globalPosition ?? 0) >= last,
  );
}

const streamOf = (ledger: Ledger, runId: string) => ledger.events({ stream: runId, limit: 10_000 });

describe(`archive on ${BACKEND} (filesystem store)`, () => {
  let t: T;
  let ledger: Ledger;
  let clock: ReturnType<typeof testClock>;
  /** The step at which the next archive "crashes" (throws), once. */
  let crashAt: ArchiveStep | null;
  const dsDir = () => join(t.dir, "ds");
  const archiveFile = (runId: string, name: "content" | "marker") =>
    join(dsDir(), "_archive", `run-${runId}.${name === "content" ? "jsonl" : "complete"}`);

  beforeEach(async () => {
    clock = testClock();
    crashAt = null;
    t = await openTestLedger({
      clock: clock.now,
      archiveAfter: "1d",
      archiveHook: (step, runId) => {
        if (step === crashAt && runId === "r1") {
          crashAt = null;
          throw new Error(`crash after ${step}`);
        }
      },
    });
    ledger = t.ledger;
    await ledger.createDataset({
      datasetId: "ds",
      root: `${t.root}/ds`,
      keepRuns: 1,
      failedRetention: "7d",
      safetyWindow: "0s",
    });
  });
  afterEach(() => t.close());

  /**
   * r1 published then replaced by r2 (pruned: keep_runs), f1 failed and left past its floor
   * (pruned: failed_retention), r2 current and kept. Returns the two pruned streams as read before
   * any archiving.
   */
  async function prunedHistory(): Promise<Record<string, RecordedEvent[]>> {
    const at = { dir: dsDir(), root: `${t.root}/ds`, datasetId: "ds" };
    await writeAndPublish(ledger, { ...at, runId: "r1", losers: true });
    await ledger.cleanup({ datasetId: "ds" });
    clock.advance(HOUR);
    await ledger.startRun({ datasetId: "ds", numShards: 1, runId: "f1" });
    await ledger.failRun("f1", "writer gave up");
    clock.advance(HOUR);
    await writeAndPublish(ledger, { ...at, runId: "r2" });
    clock.advance(8 * DAY);
    const gc = await ledger.gc("ds");
    expect(gc.actions.map((a) => [a.kind, a.runId]).sort()).toEqual([
      ["failed_retention", "f1"],
      ["keep_runs", "r1"],
    ]);
    return { r1: await streamOf(ledger, "r1"), f1: await streamOf(ledger, "f1") };
  }

  /** What must hold after archiving r1 and f1, however many crashes it took. */
  async function expectArchived(before: Record<string, RecordedEvent[]>, rollups: unknown) {
    for (const runId of ["r1", "f1"]) {
      // Read through the archive: exactly the events the stream had.
      expect(await streamOf(ledger, runId)).toEqual(before[runId]);
      expect(await ledger.events({ stream: runId, from: 2, limit: 2 })).toEqual(before[runId]?.slice(1, 3));
      const content = readFileSync(archiveFile(runId, "content"));
      const marker = JSON.parse(readFileSync(archiveFile(runId, "marker"), "utf8"));
      expect(marker).toMatchObject({
        runId,
        streamId: `run-${runId}`,
        events: before[runId]?.length,
        checksum: sha256Hex(content),
      });
    }
    const all = await readAllEvents(t);
    expect(all.filter((e) => e.streamId === "run-r1" || e.streamId === "run-f1")).toEqual([]);
    const archived = all.filter((e) => e.type === "Archived");
    expect(archived.map((e) => [e.streamId, (e.data as { runId: string }).runId]).sort()).toEqual([
      ["dataset-ds", "f1"],
      ["dataset-ds", "r1"],
    ]);
    expect(archived.every((e) => e.schemaVersion === 2)).toBe(true);
    // The global log has holes now, and reads straight over them in order.
    const positions = all.map((e) => e.globalPosition);
    expect(positions).toEqual([...positions].sort((a, b) => a - b));
    // Rollups keep every count; the deep audit checks both archives; a rebuild from the hot log
    // gives the same projections.
    expect(await ledger.rollups("ds")).toEqual(rollups);
    const audit = await ledger.audit({ deep: true });
    expect(audit).toMatchObject({ match: true, differences: [], archives: { checked: 2, problems: [] } });
    expect(audit.archives?.events).toBe((before.r1?.length ?? 0) + (before.f1?.length ?? 0));
    await ledger.rebuild();
    expect(await ledger.rollups("ds")).toEqual(rollups);
    expect((await ledger.audit()).match).toBe(true);
  }

  it("archives runs pruned longer than archiveAfter ago, and only those; readers read through", async () => {
    const before = await prunedHistory();
    const rollups = await ledger.rollups("ds");
    expect(rollups.map((r) => [r.reason, r.prunedRuns]).sort()).toEqual([
      ["failed_retention", 1],
      ["keep_runs", 1],
    ]);
    const retryBefore = await ledger.retryFailed({ datasetId: "ds", runId: "f1" });
    // Pruned just now: not yet due.
    expect((await ledger.archive()).archived).toEqual([]);
    clock.advance(DAY);
    const dry = await ledger.archive({ dryRun: true });
    expect(dry.archived.map((a) => [a.runId, a.events])).toEqual([
      ["f1", before.f1?.length],
      ["r1", before.r1?.length],
    ]);
    expect(existsSync(join(dsDir(), "_archive"))).toBe(false);
    expect(await streamOf(ledger, "r1")).toEqual(before.r1);

    const report = await ledger.archive({ datasetId: "ds" });
    expect(report.failed).toEqual([]);
    // Oldest prune first (gc pruned f1 before r1).
    expect(report.archived.map((a) => [a.runId, a.events, a.archiveUrl])).toEqual([
      ["f1", before.f1?.length, `${t.root}/ds/_archive/run-f1.jsonl`],
      ["r1", before.r1?.length, `${t.root}/ds/_archive/run-r1.jsonl`],
    ]);
    await expectArchived(before, rollups);

    // retry-failed still tells "it failed and was pruned before you asked" for an archived run.
    expect(await ledger.retryFailed({ datasetId: "ds", runId: "f1" })).toEqual(retryBefore);
    expect(retryBefore).toEqual({ matched: 0, retried: 0, prunedPastRetention: 1 });
    // docs/sql.md's per-week query still counts both prunes from the log after archiving.
    const { rows } = await sql<{ reason: string; runs: string | number }>`
      SELECT reason, count(*) AS runs FROM (
        SELECT data->>'datasetId' AS dataset_id, data->>'reason' AS reason, recorded_at AS pruned_at
        FROM ${sql.id(t.schema, "events")} WHERE type = 'Pruned'
        UNION ALL
        SELECT data->>'datasetId', data->'pruned'->>'reason', (data->'pruned'->>'prunedAt')::timestamptz
        FROM ${sql.id(t.schema, "events")} WHERE type = 'Archived' AND data->'pruned' <> 'null'::jsonb
      ) prunes WHERE dataset_id = 'ds' GROUP BY 1 ORDER BY 1`.execute(t.database.db);
    expect(rows.map((r) => [r.reason, Number(r.runs)])).toEqual([
      ["failed_retention", 1],
      ["keep_runs", 1],
    ]);
    // The kept run is untouched; a second pass has nothing to do.
    expect((await streamOf(ledger, "r2")).length).toBeGreaterThan(0);
    expect((await ledger.archive()).archived).toEqual([]);
    // An archived run accepts nothing, and its id never starts a new run: in this process (which
    // still knows the run as pruned) and in a fresh one, which finds only the stream's version.
    await expect(ledger.startRun({ datasetId: "ds", numShards: 1, runId: "r1" })).rejects.toMatchObject({
      code: "ILLEGAL_TRANSITION",
    });
    const fresh = await t.reopen();
    for (const numShards of [1, 2]) {
      await expect(fresh.startRun({ datasetId: "ds", numShards, runId: "r1" })).rejects.toMatchObject({
        code: "ILLEGAL_TRANSITION",
        details: { state: "ARCHIVED", runId: "r1" },
      });
    }
    await expect(fresh.attemptSucceeded({ runId: "r1", shard: 0, attempt: 7 })).rejects.toMatchObject({
      code: "ILLEGAL_TRANSITION",
      details: { state: "ARCHIVED", runId: "r1" },
    });
    await expect(fresh.heartbeat("f1")).rejects.toMatchObject({
      code: "ILLEGAL_TRANSITION",
      details: { state: "ARCHIVED" },
    });
    expect(await streamOf(fresh, "r1")).toEqual(before.r1);
    expect(await fresh.retryFailed({ datasetId: "ds", runId: "f1" })).toEqual(retryBefore);
    expect(await fresh.retryFailed({ datasetId: "ds", runId: "r1" })).toEqual({
      matched: 0,
      retried: 0,
      prunedPastRetention: 0,
    });
  });

  for (const step of ["content", "marker", "verified", "deleted", "committed"] as const) {
    it(`resumes exactly after a crash after step "${step}"`, async () => {
      const before = await prunedHistory();
      const rollups = await ledger.rollups("ds");
      clock.advance(DAY);
      crashAt = step;
      const crashed = await ledger.archive();
      expect(crashed.failed.map((f) => [f.runId, f.error])).toEqual([["r1", `crash after ${step}`]]);
      // f1 went through after r1's crash.
      expect(crashed.archived.map((a) => a.runId)).toEqual(["f1"]);

      // At the crash: the marker rule holds, and nothing left the hot log unless it committed.
      const marker = archiveFile("r1", "marker");
      const content = archiveFile("r1", "content");
      expect(existsSync(content)).toBe(true);
      expect(existsSync(marker)).toBe(step !== "content");
      if (existsSync(marker)) {
        expect(JSON.parse(readFileSync(marker, "utf8")).checksum).toBe(sha256Hex(readFileSync(content)));
      }
      const hot = (await readAllEvents(t)).filter((e) => e.streamId === "run-r1");
      expect(hot).toEqual(step === "committed" ? [] : before.r1);
      expect(await ledger.rollups("ds")).toEqual(rollups);
      expect((await ledger.audit({ deep: true })).match).toBe(true);

      const resumed = await ledger.archive();
      expect(resumed.failed).toEqual([]);
      expect(resumed.archived.map((a) => a.runId)).toEqual(step === "committed" ? [] : ["r1"]);
      await expectArchived(before, rollups);
    });
  }

  it("rewrites content that a crash left corrupt, removing its marker first", async () => {
    const before = await prunedHistory();
    const rollups = await ledger.rollups("ds");
    clock.advance(DAY);
    crashAt = "verified";
    await ledger.archive();
    writeFileSync(archiveFile("r1", "content"), "half a line");
    const resumed = await ledger.archive();
    expect(resumed.archived.map((a) => a.runId)).toEqual(["r1"]);
    await expectArchived(before, rollups);
  });

  it("reports a missing or corrupt archive: a typed error to readers, a problem to the deep audit", async () => {
    await prunedHistory();
    clock.advance(DAY);
    await ledger.archive();
    const content = archiveFile("r1", "content");
    const good = readFileSync(content);

    writeFileSync(content, Buffer.concat([good, Buffer.from("\n")]));
    await expect(streamOf(ledger, "r1")).rejects.toMatchObject({
      code: "ARCHIVE_CORRUPT",
      details: { runId: "r1", archiveUrl: `${t.root}/ds/_archive/run-r1.jsonl` },
    });
    let audit = await ledger.audit({ deep: true });
    expect(audit.match).toBe(false);
    expect(audit.differences).toEqual([]);
    expect(audit.archives?.problems.map((p) => [p.runId, p.kind])).toEqual([["r1", "corrupt"]]);
    // status records the deep audit's verdict with its archive problems, not "0 differences".
    expect((await ledger.status("ds")).lastAudit).toMatchObject({
      match: false,
      differences: 0,
      deep: true,
      archiveProblems: 1,
    });

    rmSync(content);
    await expect(streamOf(ledger, "r1")).rejects.toMatchObject({ code: "ARCHIVE_MISSING" });
    // The HTTP reader answers with the code's status (502: the store, not the caller, is at fault).
    const server = await startTestServer(ledger);
    try {
      const reply = await server.request<{ error: { code: string; runId: string } }>(
        "GET",
        "/v1/events?stream=r1&limit=1000",
      );
      expect([reply.status, reply.body.error.code, reply.body.error.runId]).toEqual([
        502,
        "ARCHIVE_MISSING",
        "r1",
      ]);
      const fine = await server.request("GET", "/v1/events?stream=f1&limit=1000");
      expect(fine).toMatchObject({ status: 200, body: asJson(await streamOf(ledger, "f1")) });
      expect((fine.body as unknown[]).length).toBeGreaterThan(0);
    } finally {
      await server.close();
    }
    audit = await ledger.audit({ deep: true });
    expect(audit.archives?.problems.map((p) => [p.runId, p.kind])).toEqual([["r1", "missing"]]);

    writeFileSync(content, good);
    rmSync(archiveFile("f1", "marker"));
    await expect(streamOf(ledger, "f1")).rejects.toMatchObject({ code: "ARCHIVE_MISSING" });
    audit = await ledger.audit({ deep: true });
    expect(audit.archives?.problems.map((p) => [p.runId, p.kind])).toEqual([["f1", "missing"]]);
    expect(audit.archives?.checked).toBe(2);
    // Without `deep` the archives are not looked at: the projections still match.
    expect(await ledger.audit()).toMatchObject({ match: true });
    expect((await ledger.audit()).archives).toBeUndefined();
    // …and status says that the last audit did not look at them.
    expect((await ledger.status("ds")).lastAudit).toMatchObject({
      match: true,
      deep: false,
      archiveProblems: null,
    });
  });

  it("validates archiveAfter and after, naming the field, and writes nothing", async () => {
    await prunedHistory();
    await expect(ledger.archive({ after: "-1d" })).rejects.toMatchObject({
      code: "VALIDATION",
      field: "after",
    });
    await expect(ledger.archive({ datasetId: "nope" })).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(t.reopen({ archiveAfter: "soon" })).rejects.toMatchObject({
      code: "VALIDATION",
      field: "archiveAfter",
    });
    expect(existsSync(join(dsDir(), "_archive"))).toBe(false);
    // `after` overrides the ledger's delay for one pass.
    clock.advance(HOUR);
    expect((await ledger.archive({ after: "1h" })).archived.map((a) => a.runId)).toEqual(["f1", "r1"]);
  });

  it("a subscription reads over the holes archiving leaves and resumes from its checkpoint", async () => {
    await prunedHistory();
    const log = createPgEventLog({ db: t.database.db, schema: t.schema });
    const seen: number[] = [];
    const handle = async (_trx: unknown, events: readonly RecordedEvent[]) => {
      for (const e of events) seen.push(e.globalPosition);
    };
    // Half of the log before archiving…
    const all = await readAllEvents(t);
    await processSubscriptionBatch(log, { name: "s", handle, batchSize: Math.floor(all.length / 2) });
    const checkpoint = await subscriptionCheckpoint(log, "s");
    expect(checkpoint).toBeGreaterThan(0);
    clock.advance(DAY);
    await ledger.archive();
    // …the rest after: every hot event above the checkpoint, in order, nothing twice.
    const hot = (await readAllEvents(t)).map((e) => e.globalPosition);
    // Batches until the checkpoint reaches the last hot event (read-all may wait for the xmin).
    await eventually(
      async () => {
        while ((await processSubscriptionBatch(log, { name: "s", handle, batchSize: 7 })) > 0);
        return subscriptionCheckpoint(log, "s");
      },
      (at) => at >= (hot.at(-1) ?? 0),
    );
    expect(seen.filter((p) => p > checkpoint)).toEqual(hot.filter((p) => p > checkpoint));
    expect(new Set(seen).size).toBe(seen.length);
  });

  it("a rebuild whose two snapshots straddle an archive counts the prune once", async () => {
    await prunedHistory();
    const live = await ledger.rollups("ds");
    const log = createPgEventLog({ db: t.database.db, schema: t.schema });
    const rollupsIn = async (scratch: string) =>
      (
        await sql<{ reason: string; pruned_runs: number }>`
          SELECT reason, pruned_runs FROM ${sql.id(scratch, "rollups")} WHERE dataset_id = 'ds' ORDER BY reason`.execute(
          t.database.db,
        )
      ).rows.map((r) => [r.reason, Number(r.pruned_runs)]);
    // rebuildProjections' two phases, with the archive landing between them: the bulk replay
    // sees both Pruned events, the tail sees the two Archived events that carry them on.
    const scratches = [`${t.schema}_s1`, `${t.schema}_s2`];
    const firsts: number[] = [];
    const shared = new Set<string>();
    for (const scratch of scratches) {
      await sql`CREATE SCHEMA ${sql.id(scratch)}`.execute(t.database.db);
      await createProjectionTables(t.database.db, scratch);
      firsts.push((await replayInto(log, t.database.db, scratch, 0, undefined, undefined, shared)).position);
    }
    clock.advance(DAY);
    expect((await ledger.archive()).archived).toHaveLength(2);
    try {
      await replayInto(
        log,
        t.database.db,
        scratches[0] as string,
        firsts[0] as number,
        undefined,
        undefined,
        shared,
      );
      expect(await rollupsIn(scratches[0] as string)).toEqual(live.map((r) => [r.reason, r.prunedRuns]));
      // Without what the first phase remembered, the tail would count both prunes again.
      await replayInto(log, t.database.db, scratches[1] as string, firsts[1] as number);
      expect(await rollupsIn(scratches[1] as string)).toEqual(live.map((r) => [r.reason, 2 * r.prunedRuns]));
    } finally {
      for (const scratch of scratches)
        await sql`DROP SCHEMA ${sql.id(scratch)} CASCADE`.execute(t.database.db);
    }
    // The real rebuild, after the fact, agrees with the live rollups.
    await ledger.rebuild();
    expect(await ledger.rollups("ds")).toEqual(live);
  });

  it("the maintain loop archives after gc", async () => {
    const before = await prunedHistory();
    clock.advance(DAY);
    const stop = new AbortController();
    const passes: unknown[] = [];
    await maintainLoop(ledger, {
      everyMs: 1,
      datasetId: "ds",
      signal: stop.signal,
      onPass: (p) => {
        passes.push(p.archive);
        stop.abort();
      },
    });
    expect(passes).toEqual([{ archived: 2, failed: 0 }]);
    expect(await streamOf(ledger, "r1")).toEqual(before.r1);
  });
});
