/**
 * One regression test per wrong deletion (or lie) that adversarial trials found in the safety
 * core (issue "Safety core", items 1, 2, 3, 5, 6, 7 and 12). Each was run against the code before
 * its fix and failed there. The filesystem store is real; the wrappers around it only inject a
 * failure or hold a request at an exact step, which a real store cannot be told to do.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { sql } from "kysely";
import { afterEach, describe, expect, it } from "vitest";
import { createFilesystemObjectStore } from "../../src/adapters/objectstore/filesystem-object-store.js";
import { isIllegalTransitionError, isSafetyRailError } from "../../src/errors.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import type { RunCommand } from "../../src/machines/run-commands.js";
import { type ObjectStore, ObjectStoreError } from "../../src/storage/object-store.js";
import { BACKEND } from "../support/database.js";
import { delegating, failingStore, openTestLedger, testClock } from "../support/ledger.js";

const HOUR = 3_600_000;

type Harness = Awaited<ReturnType<typeof openTestLedger>>;
let t: Harness | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

/** What an older version of shardledger recorded without today's report-time rules. */
const legacy = (ledger: Ledger, command: RunCommand) =>
  (ledger as unknown as { executeRunCommand(c: RunCommand): Promise<unknown> }).executeRunCommand(command);

async function setup(
  options: { wrap?: (store: ObjectStore) => ObjectStore; policies?: Record<string, unknown> } = {},
) {
  // The filesystem store stamps objects with the real mtime; the ledger's clock starts at real now.
  const clock = testClock(new Date().toISOString());
  t = await openTestLedger({
    clock: clock.now,
    objectStore: (root) => {
      const store = createFilesystemObjectStore(root);
      return options.wrap ? options.wrap(store) : store;
    },
  });
  const h = t;
  const ledger = h.ledger;
  const root = `${h.root}/ds`;
  await ledger.createDataset({
    datasetId: "ds",
    root,
    keepRuns: 1,
    safetyWindow: "0s",
    staleAfter: "1h",
    ...options.policies,
  });
  const path = (key: string) => join(h.dir, "ds", key);
  const write = (key: string) => {
    mkdirSync(dirname(path(key)), { recursive: true });
    writeFileSync(path(key), key);
  };
  const exists = (key: string) => existsSync(path(key));
  const attemptKey = (runId: string, shard: number, attempt: number) =>
    `data/${runId}/shard=${String(shard).padStart(5, "0")}/attempt=${String(attempt).padStart(2, "0")}`;
  /** Starts a run, writes and reports one successful attempt per shard (attempt 0), and extras. */
  async function writeRun(runId: string, shards = 1, losers: number[] = []) {
    await ledger.startRun({ datasetId: "ds", numShards: shards, runId });
    for (let s = 0; s < shards; s++) {
      write(`${attemptKey(runId, s, 0)}/part-0`);
      await ledger.attemptSucceeded({
        runId,
        shard: s,
        attempt: 0,
        url: `${root}/${attemptKey(runId, s, 0)}`,
      });
    }
    for (const s of losers) {
      write(`${attemptKey(runId, s, 1)}/part-0`);
      await ledger.attemptSucceeded({
        runId,
        shard: s,
        attempt: 1,
        url: `${root}/${attemptKey(runId, s, 1)}`,
      });
    }
  }
  const current = () => {
    const p = path("_CURRENT");
    return existsSync(p) ? (JSON.parse(readFileSync(p, "utf8")) as { runId: string }).runId : null;
  };
  return { ledger, clock, root, path, write, exists, attemptKey, writeRun, current };
}

const MANIFEST = "manifests/r0.json";

/**
 * Run r0 (one shard, written and reported) whose first publish failed at its manifest put, after
 * its winners were selected; an hour later, silent. `retry()` publishes it again and holds that
 * publish's manifest put — once the object is in the store (`landed`: the publish records it when
 * released) or before it gets there (`slow`: it lands when released) — until `release()`.
 * `faults.failDelete` makes deletes of the manifest fail; `faults.manifestDeletes` counts them.
 */
async function publishRetriedAcrossGc(policies: Record<string, unknown>, put: "landed" | "slow") {
  const faults = { failPut: true, failDelete: false, manifestDeletes: 0 };
  let hold: Promise<void> | null = null;
  let reachedPut: () => void = () => {};
  const s = await setup({
    policies,
    wrap: (store) => ({
      ...delegating(store),
      async deleteMany(keys) {
        if (keys.includes(MANIFEST)) faults.manifestDeletes++;
        if (faults.failDelete && keys.includes(MANIFEST))
          throw new ObjectStoreError("injected failure: delete manifest", {
            code: "InternalError",
            transient: true,
          });
        return store.deleteMany(keys);
      },
      async put(key, body, options) {
        if (key === MANIFEST && faults.failPut)
          throw new ObjectStoreError("injected failure: put manifest", {
            code: "InternalError",
            transient: true,
          });
        if (key === MANIFEST && hold) {
          if (put === "landed") await store.put(key, body, options);
          reachedPut();
          await hold;
          if (put === "landed") return;
        }
        return store.put(key, body, options);
      },
    }),
  });
  await s.writeRun("r0");
  await expect(s.ledger.publish("r0")).rejects.toThrow(/injected failure: put manifest/);
  faults.failPut = false;
  s.clock.advance(HOUR + 1000);
  const retry = () => {
    let release: () => void = () => {};
    hold = new Promise<void>((resolve) => {
      release = resolve;
    });
    const reached = new Promise<void>((resolve) => {
      reachedPut = resolve;
    });
    const outcome = s.ledger.publish("r0").then(
      () => "published",
      (e: unknown) => (isIllegalTransitionError(e) ? "refused" : String(e)),
    );
    return { reached, release, outcome };
  };
  return { s, faults, retry };
}

describe(`safety regressions (${BACKEND})`, () => {
  it("1: gc never prunes a run that succeeded after the current one; the resumed publish finds it whole", async () => {
    let failPointer = false;
    const s = await setup({
      wrap: (store) => failingStore(store, (op, key) => failPointer && op === "put" && key === "_CURRENT"),
    });
    await s.writeRun("a");
    await s.ledger.publish("a");
    await s.writeRun("b");
    failPointer = true;
    await expect(s.ledger.publish("b")).rejects.toThrow(/injected failure: put _CURRENT/);
    failPointer = false;
    expect(s.current()).toBe("a");
    s.clock.advance(HOUR);
    await s.ledger.gc("ds");
    expect(s.exists("manifests/b.json")).toBe(true);
    expect(s.exists(`${s.attemptKey("b", 0, 0)}/part-0`)).toBe(true);
    await s.ledger.publish("b");
    expect(s.current()).toBe("b");
    expect(s.exists("manifests/b.json")).toBe(true);
    expect(s.exists(`${s.attemptKey("b", 0, 0)}/part-0`)).toBe(true);
  });

  it("1: publish refuses to move _CURRENT to a pruned run, or to one whose manifest or winners are gone", async () => {
    let failPointer = false;
    const s = await setup({
      wrap: (store) => failingStore(store, (op, key) => failPointer && op === "put" && key === "_CURRENT"),
    });
    await s.writeRun("a");
    await s.ledger.publish("a");
    for (const id of ["b", "c", "d"]) {
      await s.writeRun(id);
      failPointer = true;
      await expect(s.ledger.publish(id)).rejects.toThrow(/injected/);
      failPointer = false;
    }
    await legacy(s.ledger, { type: "prune", runId: "b", reason: "keep_runs" });
    await expect(s.ledger.publish("b")).rejects.toSatisfy(isIllegalTransitionError);
    rmSync(s.path("manifests/c.json"));
    await expect(s.ledger.publish("c")).rejects.toThrow(/manifest/);
    rmSync(s.path(s.attemptKey("d", 0, 0)), { recursive: true });
    await expect(s.ledger.publish("d")).rejects.toThrow(/winner/);
    expect(s.current()).toBe("a");
  });

  it("1d: another run's legacy url at a run's manifest leaves that run's prune whole: the manifest goes first, then its data", async () => {
    const s = await setup();
    await s.writeRun("old", 1);
    await s.ledger.publish("old");
    s.clock.advance(60_000);
    await s.writeRun("b", 1);
    // Recorded by an older version: a loser of b whose url is old's manifest. gc planned it as b's
    // (refused only when deleted) and dropped it from old's prune as planned already: old's data
    // went, old was pruned, and its manifest stayed, naming data that was gone.
    await legacy(s.ledger, {
      type: "attemptSucceeded",
      runId: "b",
      shard: 0,
      attempt: 7,
      url: `${s.root}/manifests/old.json`,
    });
    await s.ledger.publish("b");
    s.clock.advance(60_000);
    await s.writeRun("c", 1);
    await s.ledger.publish("c");
    s.clock.advance(HOUR);
    const gc = await s.ledger.gc("ds");
    expect(gc.actions.find((a) => a.runId === "old")?.urls).toEqual([
      `${s.root}/manifests/old.json`,
      `${s.root}/data/old`,
    ]);
    expect(gc.actions.find((a) => a.runId === "b")?.urls).not.toContain(`${s.root}/manifests/old.json`);
    expect(gc.protected).toContainEqual({
      runId: "b",
      why: `url ${s.root}/manifests/old.json is not deleted: it lies outside every run's data area (_CURRENT, manifests, the archive)`,
    });
    expect(s.exists("manifests/old.json")).toBe(false);
    expect(s.exists(`${s.attemptKey("old", 0, 0)}/part-0`)).toBe(false);
    expect((await s.ledger.audit()).match).toBe(true);
  });

  it("1d: a prune whose manifest cannot go first takes nothing of the run: the marker never outlives its data", async () => {
    const s = await setup();
    await s.writeRun("old", 1);
    await s.ledger.publish("old");
    s.clock.advance(60_000);
    // Recorded by an older version: b's winner of shard 1 is the object at old's manifest path.
    await s.ledger.startRun({ datasetId: "ds", numShards: 2, runId: "b" });
    s.write(`${s.attemptKey("b", 0, 0)}/part-0`);
    await s.ledger.attemptSucceeded({
      runId: "b",
      shard: 0,
      attempt: 0,
      url: `${s.root}/${s.attemptKey("b", 0, 0)}`,
    });
    await legacy(s.ledger, {
      type: "attemptSucceeded",
      runId: "b",
      shard: 1,
      attempt: 0,
      url: `${s.root}/manifests/old.json`,
    });
    await s.ledger.publish("b");
    s.clock.advance(HOUR);
    const gc = await s.ledger.gc("ds");
    expect(gc.actions.filter((a) => a.runId === "old")).toEqual([]);
    expect(gc.protected).toContainEqual({
      runId: "old",
      why: `not pruned: its manifest ${s.root}/manifests/old.json cannot be deleted first: it equals ${s.root}/manifests/old.json of run b, which is not pruned`,
    });
    expect(s.exists("manifests/old.json")).toBe(true);
    expect(s.exists(`${s.attemptKey("old", 0, 0)}/part-0`), "the data the manifest lists").toBe(true);
    expect((await s.ledger.run("old")).run.status).toBe("SUCCEEDED");
  });

  it("2a: a winner reported without a url protects its run's whole area from orphan collection", async () => {
    const s = await setup();
    await s.ledger.startRun({ datasetId: "ds", numShards: 1, runId: "r" });
    s.write(`${s.attemptKey("r", 0, 0)}/part-0`);
    await s.ledger.attemptSucceeded({ runId: "r", shard: 0, attempt: 0 });
    await s.ledger.publish("r");
    s.clock.advance(HOUR);
    const report = await s.ledger.gc("ds");
    expect(s.exists(`${s.attemptKey("r", 0, 0)}/part-0`)).toBe(true);
    expect(report.protected.map((p) => p.why).join("\n")).toMatch(/without a url/);
  });

  it("2a: in a run with a url-less winner no loser is deleted either: the winner may be under it", async () => {
    const s = await setup();
    await s.ledger.startRun({ datasetId: "ds", numShards: 1, runId: "r" });
    s.write(`${s.attemptKey("r", 0, 0)}/part-0`);
    await s.ledger.attemptSucceeded({ runId: "r", shard: 0, attempt: 0 });
    await s.ledger.publish("r");
    // A late loser whose writer named the winner's directory (found by the interleaving oracle).
    await s.ledger.attemptSucceeded({
      runId: "r",
      shard: 0,
      attempt: 0,
      taskAttemptId: 7,
      url: `${s.root}/${s.attemptKey("r", 0, 0)}`,
    });
    s.clock.advance(HOUR);
    await s.ledger.cleanup({ datasetId: "ds" });
    await s.ledger.gc("ds");
    expect(s.exists(`${s.attemptKey("r", 0, 0)}/part-0`)).toBe(true);
    const item = (await s.ledger.pendingCleanup({ datasetId: "ds" }))[0];
    expect(item).toMatchObject({ lastErrorCode: "Protected" });
    expect(item?.lastErrorMessage).toMatch(/winner with no url/);
  });

  it("2b: a winner whose url names one object protects exactly that object, and gc passes", async () => {
    const s = await setup();
    await s.ledger.startRun({ datasetId: "ds", numShards: 1, runId: "r" });
    const file = `${s.attemptKey("r", 0, 0)}/part-0.parquet`;
    s.write(file);
    await s.ledger.attemptSucceeded({ runId: "r", shard: 0, attempt: 0, url: `${s.root}/${file}` });
    await s.ledger.publish("r");
    s.clock.advance(HOUR);
    const dry = await s.ledger.gc("ds", { dryRun: true });
    expect(dry.actions.flatMap((a) => a.urls)).toEqual([]);
    await s.ledger.gc("ds");
    await s.ledger.gc("ds");
    expect(s.exists(file)).toBe(true);
  });

  it("2b: a loser whose url names one object is deleted, not reported deleted while it stays", async () => {
    const s = await setup();
    await s.writeRun("r", 1);
    const file = `${s.attemptKey("r", 0, 3)}/part-0`;
    s.write(file);
    s.write(`${s.attemptKey("r", 0, 3)}0/part-0`); // a sibling sharing the string prefix stays
    await s.ledger.attemptSucceeded({ runId: "r", shard: 0, attempt: 3, url: `${s.root}/${file}` });
    await s.ledger.publish("r");
    const report = await s.ledger.cleanup({ datasetId: "ds" });
    expect(report.deleted).toEqual([`${s.root}/${file}`]);
    expect(s.exists(file)).toBe(false);
    expect(s.exists(`${s.attemptKey("r", 0, 3)}0/part-0`)).toBe(true);
    expect(s.exists(`${s.attemptKey("r", 0, 0)}/part-0`)).toBe(true);
  });

  it("2c: a winner url spelled FILE:// (or with escapes) is the same key, and protects its object", async () => {
    const s = await setup();
    await s.ledger.startRun({ datasetId: "ds", numShards: 2, runId: "r" });
    s.write(`${s.attemptKey("r", 0, 0)}/part-0`);
    s.write(`${s.attemptKey("r", 1, 0)}/part-0`);
    const upper = `${s.root.replace(/^file:/, "FILE:")}/${s.attemptKey("r", 0, 0)}/`;
    const escaped = `${s.root}/data/r/shard%3D00001/attempt%3D00`;
    const a = await s.ledger.attemptSucceeded({ runId: "r", shard: 0, attempt: 0, url: upper });
    await s.ledger.attemptSucceeded({ runId: "r", shard: 1, attempt: 0, url: escaped });
    expect(a.url).toBe(`${s.root}/${s.attemptKey("r", 0, 0)}`);
    await s.ledger.publish("r");
    s.clock.advance(HOUR);
    await s.ledger.gc("ds");
    expect(s.exists(`${s.attemptKey("r", 0, 0)}/part-0`)).toBe(true);
    expect(s.exists(`${s.attemptKey("r", 1, 0)}/part-0`)).toBe(true);
  });

  it("3: loser cleanup never deletes another run's live data, planned now or retried later", async () => {
    let failLoser = true;
    const s = await setup({
      policies: { keepRuns: 2 },
      wrap: (store) =>
        failingStore(
          store,
          (op, key) => failLoser && op === "deleteMany" && key.startsWith("data/b/shard=00001/attempt=01"),
        ),
    });
    await s.writeRun("a", 2);
    await s.ledger.startRun({ datasetId: "ds", numShards: 2, runId: "active" });
    s.write(`${s.attemptKey("active", 0, 0)}/part-0`);
    await s.ledger.attemptSucceeded({
      runId: "active",
      shard: 0,
      attempt: 0,
      url: `${s.root}/${s.attemptKey("active", 0, 0)}`,
    });
    await s.writeRun("b", 2, [1]);
    // Recorded by an older version: a loser of b whose url is the active run's attempt.
    await legacy(s.ledger, {
      type: "attemptSucceeded",
      runId: "b",
      shard: 0,
      attempt: 5,
      url: `${s.root}/${s.attemptKey("active", 0, 0)}`,
    });
    await s.ledger.publish("b");
    const first = await s.ledger.cleanup({ datasetId: "ds" });
    expect(s.exists(`${s.attemptKey("active", 0, 0)}/part-0`)).toBe(true);
    expect(first.deleted).not.toContain(`${s.root}/${s.attemptKey("active", 0, 0)}`);
    const pending = await s.ledger.pendingCleanup({ datasetId: "ds" });
    expect(pending.find((p) => p.url === `${s.root}/${s.attemptKey("active", 0, 0)}`)).toMatchObject({
      lastErrorCode: "Protected",
    });
    // b's own loser failed transiently; before its retry, the active run records the same url.
    expect(pending.map((p) => p.url)).toContain(`${s.root}/${s.attemptKey("b", 1, 1)}`);
    await s.ledger.attemptSucceeded({
      runId: "active",
      shard: 1,
      attempt: 0,
      url: `${s.root}/${s.attemptKey("active", 1, 0)}`,
    });
    await legacy(s.ledger, {
      type: "attemptSucceeded",
      runId: "active",
      shard: 1,
      attempt: 9,
      url: `${s.root}/${s.attemptKey("b", 1, 1)}`,
    });
    failLoser = false;
    s.clock.advance(2 * HOUR);
    await s.ledger.cleanup({ datasetId: "ds" });
    expect(s.exists(`${s.attemptKey("b", 1, 1)}/part-0`)).toBe(true);
  });

  it("5: a heartbeat-timeout failure decided on a stale view is refused when the append sees the heartbeat", async () => {
    const s = await setup();
    await s.ledger.startRun({ datasetId: "ds", numShards: 1, runId: "slow" });
    s.clock.advance(2 * HOUR);
    // What gc saw when it decided (the run silent for 2h), then the heartbeat lands before its append.
    const seen = (await s.ledger.run("slow")).run;
    await s.ledger.heartbeat("slow");
    await expect(
      legacy(s.ledger, {
        type: "fail",
        runId: "slow",
        cause: "heartbeat_timeout",
        reason: "silent",
        silentSince: new Date(Math.max(seen.heartbeatAt.getTime(), seen.updatedAt.getTime())),
        staleAfterMs: HOUR,
      } as RunCommand),
    ).rejects.toSatisfy(isIllegalTransitionError);
    // A pass now sees the heartbeat and keeps the run.
    await s.ledger.gc("ds");
    expect((await s.ledger.run("slow")).run.status).toBe("STARTED");
    s.clock.advance(2 * HOUR);
    await s.ledger.gc("ds");
    expect((await s.ledger.run("slow")).run).toMatchObject({
      status: "FAILED",
      failureCause: "heartbeat_timeout",
    });
  });

  it("13: gc of a failed run past its floor spares what was written inside the safety window, and deletes it once older", async () => {
    // Found by 3,000 safety-interleaving histories on PostgreSQL (seed -1363866870): a writer
    // still writing into a FAILED run's area when gc prunes it past its failed-retention floor.
    const s = await setup({ policies: { safetyWindow: "10s", failedRetention: "1m" } });
    await s.ledger.startRun({ datasetId: "ds", numShards: 1, runId: "r0" });
    await expect(s.ledger.publish("r0")).rejects.toMatchObject({ code: "SHARD_COVERAGE" });
    s.clock.advance(61_000);
    const late = `${s.attemptKey("r0", 0, 0)}/part-0`;
    s.write(late);
    // Written now by the ledger's clock (the filesystem stamps the real time).
    utimesSync(s.path(late), s.clock.now(), s.clock.now());
    const status = async () => (await s.ledger.run("r0").catch(() => null))?.run.status ?? "gone";
    await s.ledger.gc("ds");
    expect(s.exists(late)).toBe(true);
    // Not pruned while its area still holds data.
    expect(await status()).toBe("FAILED");
    // Once older than the window, the next pass collects it, and the run is pruned.
    s.clock.advance(11_000);
    // (cleanup deletes it if its retry is due by then, with its jitter; else gc does)
    await s.ledger.cleanup({ datasetId: "ds" });
    await s.ledger.gc("ds");
    expect(s.exists(late)).toBe(false);
    // A cleanup that deleted it is the run's last event, which gc waits out in its turn.
    s.clock.advance(11_000);
    await s.ledger.gc("ds");
    expect(await status()).not.toBe("FAILED");
  });

  it("6: a pruned run loses its manifest before its data: a manifest never names deleted data", async () => {
    const s = await setup({
      wrap: (store) => ({
        ...delegating(store),
        async deleteMany(keys) {
          // No permission on manifests/ (a bucket policy, a retention lock): that delete fails.
          if (keys.includes("manifests/old.json"))
            throw new ObjectStoreError("Access Denied", { code: "AccessDenied", transient: false });
          return store.deleteMany(keys);
        },
      }),
    });
    await s.writeRun("old", 2);
    await s.ledger.publish("old");
    await s.writeRun("new", 1);
    await s.ledger.publish("new");
    s.clock.advance(HOUR);
    await s.ledger.gc("ds");
    const manifest = s.exists("manifests/old.json");
    const complete =
      s.exists(`${s.attemptKey("old", 0, 0)}/part-0`) && s.exists(`${s.attemptKey("old", 1, 0)}/part-0`);
    expect(!manifest || complete).toBe(true);
    expect(s.current()).toBe("new");
  });

  it("14: a manifest that a refused publish left behind goes before its failed run's data when the run is pruned", async () => {
    // Found by the safety-interleaving property on PGlite (seed 646325280): a publish retried after
    // its manifest put failed raced gc. gc failed the run as stale between the publish's put of the
    // manifest and its record of it; the record was refused (the run is FAILED), so the object
    // stayed without an event naming it. Once the run was pruned past its floor, gc deleted the
    // data and left that manifest naming it.
    const { s, faults, retry } = await publishRetriedAcrossGc({ failedRetention: "1d" }, "landed");
    // The publish takes back a manifest it could not record (15); here that delete fails too, as
    // if the publisher had crashed first, so the prune meets the manifest.
    faults.failDelete = true;
    const { reached, release, outcome } = retry();
    await reached;
    const gc = await s.ledger.gc("ds");
    expect(gc.actions.map((a) => `${a.kind}:${a.runId}`)).toContain("fail_stale:r0");
    release();
    expect(await outcome).toBe("refused");
    expect(s.exists(MANIFEST)).toBe(true);
    expect((await s.ledger.run("r0")).run.status).toBe("FAILED");
    faults.failDelete = false;
    // Past the failed run's floor: it is pruned, and its manifest goes first.
    s.clock.advance(400 * 24 * HOUR);
    await s.ledger.cleanup({ datasetId: "ds" });
    await s.ledger.gc("ds");
    const data = s.exists(`${s.attemptKey("r0", 0, 0)}/part-0`);
    expect(!s.exists(MANIFEST) || data).toBe(true);
    expect(data).toBe(false);
    expect(s.exists(MANIFEST)).toBe(false);
  });

  it("14b: a succeeded run with a url-less winner is pruned whole once it is beyond keepRuns, manifest first", async () => {
    // Seen while fixing the case above: once a prune's manifest was gone, the guard judged the
    // rest of the prune by a loser's rules, refused the data of a run with a url-less winner, and
    // left the run unpruned for good, its manifest already deleted.
    const s = await setup();
    await s.ledger.startRun({ datasetId: "ds", numShards: 1, runId: "old" });
    s.write(`${s.attemptKey("old", 0, 0)}/part-0`);
    await s.ledger.attemptSucceeded({ runId: "old", shard: 0, attempt: 0 });
    await s.ledger.publish("old");
    for (const id of ["mid", "new"]) {
      s.clock.advance(60_000);
      await s.writeRun(id);
      await s.ledger.publish(id);
    }
    s.clock.advance(HOUR);
    await s.ledger.gc("ds");
    expect(s.exists("manifests/old.json")).toBe(false);
    expect(s.exists(`${s.attemptKey("old", 0, 0)}/part-0`)).toBe(false);
    // A pruned run leaves no row in the projections; its stream says Pruned.
    expect(await s.ledger.run("old").catch((e: unknown) => (e as { code?: string }).code)).toBe("NOT_FOUND");
    const events = await s.ledger.events({ stream: "run-old", limit: 1000 });
    expect(events.at(-1)?.type).toBe("Pruned");
    expect(s.current()).toBe("new");
    expect(s.exists(`${s.attemptKey("new", 0, 0)}/part-0`)).toBe(true);
  });

  it("15: a publish whose manifest lands after gc failed and pruned the run removes that manifest", async () => {
    // Seen while fixing 14: with a short failed-retention floor, gc can fail a silent run and then
    // prune it (deleting its data, and its manifest path, still empty) while a slow manifest put of
    // a retried publish is on its way; the put then lands, the record is refused, and the manifest
    // named deleted data for good (the run is gone from every later plan).
    const { s, retry } = await publishRetriedAcrossGc({ failedRetention: "1s" }, "slow");
    const { reached, release, outcome } = retry();
    await reached;
    expect((await s.ledger.gc("ds")).actions.map((a) => `${a.kind}:${a.runId}`)).toContain("fail_stale:r0");
    s.clock.advance(2000);
    expect((await s.ledger.gc("ds")).actions.map((a) => `${a.kind}:${a.runId}`)).toContain(
      "failed_retention:r0",
    );
    expect(s.exists(`${s.attemptKey("r0", 0, 0)}/part-0`)).toBe(false);
    release();
    expect(await outcome).toBe("refused");
    // No manifest names the deleted data.
    expect(s.exists(MANIFEST)).toBe(false);
    // And its deletion was planned: the prune planned the manifest's path before it deleted
    // anything (SPEC: a deletion is planned, an event, before it happens).
    const planned = (await s.ledger.events({ stream: "run-r0", limit: 1000 })).filter(
      (e) => e.type === "CleanupPlanned" && String((e.data as { url: string }).url).endsWith(MANIFEST),
    );
    expect(planned).toHaveLength(1);
  });

  it("16: a publish refused because gc failed the run leaves its unrecorded manifest to the run's prune", async () => {
    // Found by the safety-interleaving property on PGlite (seed -254740489): the fix of 15 took
    // back the manifest of a run that was only FAILED, with no CleanupPlanned covering it (R3) and
    // inside the run's failed-retention floor, where a failed run keeps everything. Its prune
    // deletes that path first, planned (14); only a run already PRUNED has its manifest taken back.
    const { s, faults, retry } = await publishRetriedAcrossGc({ failedRetention: "1d" }, "landed");
    const { reached, release, outcome } = retry();
    await reached;
    expect((await s.ledger.gc("ds")).actions.map((a) => `${a.kind}:${a.runId}`)).toContain("fail_stale:r0");
    release();
    expect(await outcome).toBe("refused");
    expect((await s.ledger.run("r0")).run.status).toBe("FAILED");
    expect(faults.manifestDeletes).toBe(0);
    expect(s.exists(MANIFEST)).toBe(true);
    expect(s.exists(`${s.attemptKey("r0", 0, 0)}/part-0`)).toBe(true);
    // Past the floor the prune plans the manifest, deletes it first, then the data.
    s.clock.advance(400 * 24 * HOUR);
    await s.ledger.gc("ds");
    expect(s.exists(MANIFEST)).toBe(false);
    expect(s.exists(`${s.attemptKey("r0", 0, 0)}/part-0`)).toBe(false);
  });

  it("8: a pass whose lease another pass took stops before its next request and appends nothing more", async () => {
    let h: Harness | undefined;
    const s = await setup({
      wrap: (store) => ({
        ...delegating(store),
        async deleteMany(keys) {
          const outcome = await store.deleteMany(keys);
          // Another pass acquires the dataset's lease while this request is in flight.
          if (keys.some((k) => k.startsWith("data/r/shard=00000/attempt=01"))) {
            await sql`UPDATE ${sql.id((h as Harness).schema, "maintenance_leases")} SET epoch = epoch + 1
              WHERE dataset_id = 'ds'`.execute((h as Harness).database.db);
          }
          return outcome;
        },
      }),
    });
    h = t;
    await s.writeRun("r", 2, [0, 1]);
    await s.ledger.publish("r");
    // One prefix at a time, so "the second loser was never planned" holds; the concurrent pass
    // plans a batch at once (its lease test: test/maintenance/concurrent-cleanup-faults.test.ts).
    const report = await s.ledger.cleanup({ datasetId: "ds", concurrency: 1 });
    expect(report.leaseLost).toEqual(["ds"]);
    expect(report.deleted).toEqual([]);
    // The second loser was never planned, sent or deleted; the first's outcome was not recorded.
    expect(s.exists(`${s.attemptKey("r", 1, 1)}/part-0`)).toBe(true);
    const types = (await s.ledger.events({ stream: "run-r", limit: 1000 })).map((e) => e.type);
    expect(types.filter((x) => x === "CleanupPlanned")).toHaveLength(1);
    expect(types).not.toContain("CleanupSucceeded");
    // The next pass (a new lease) finishes the job exactly.
    const next = await s.ledger.cleanup({ datasetId: "ds" });
    expect(next.leaseLost).toEqual([]);
    expect(s.exists(`${s.attemptKey("r", 1, 1)}/part-0`)).toBe(false);
    expect(await s.ledger.pendingCleanup({ datasetId: "ds" })).toEqual([]);
  });

  it("7: keys with '#', '?', '%2F', spaces and non-ASCII are keys: losers and orphans holding them are deleted", async () => {
    const s = await setup();
    await s.writeRun("r", 1, [0]);
    const odd = ["a b#1?.parquet", "x%2Fy", "é.parquet", "50%.txt"];
    for (const name of odd) s.write(`${s.attemptKey("r", 0, 1)}/${name}`);
    await s.ledger.publish("r");
    const report = await s.ledger.cleanup({ datasetId: "ds" });
    expect(report.failed).toEqual([]);
    for (const name of odd) expect(s.exists(`${s.attemptKey("r", 0, 1)}/${name}`), name).toBe(false);
    expect(await s.ledger.pendingCleanup({ datasetId: "ds" })).toEqual([]);
    for (const name of odd) s.write(`data/r/shard=00000/stray/${name}`);
    s.clock.advance(HOUR);
    await s.ledger.gc("ds");
    for (const name of odd) expect(s.exists(`data/r/shard=00000/stray/${name}`), name).toBe(false);
    expect(s.exists(`${s.attemptKey("r", 0, 0)}/part-0`)).toBe(true);
  });

  it("12: an attempt url must lie strictly inside its run's own data area", async () => {
    const s = await setup();
    await s.writeRun("other");
    await s.ledger.startRun({ datasetId: "ds", numShards: 1, runId: "r" });
    for (const key of [
      "data",
      "data/r",
      "_CURRENT",
      "manifests/other.json",
      "manifests",
      "data/other/shard=00000/attempt=00",
    ]) {
      await expect(
        s.ledger.attemptSucceeded({ runId: "r", shard: 0, attempt: 0, url: `${s.root}/${key}` }),
      ).rejects.toSatisfy(isSafetyRailError);
    }
    expect((await s.ledger.run("r")).attempts).toEqual([]);
  });

  it("12: a loser cleanup refuses is visible in the pending set with the reason, never reported deleted", async () => {
    const s = await setup({ policies: { keepRuns: 2 } });
    await s.writeRun("a");
    await s.ledger.publish("a");
    await s.writeRun("b");
    await legacy(s.ledger, {
      type: "attemptSucceeded",
      runId: "b",
      shard: 0,
      attempt: 3,
      url: `${s.root}/manifests/a.json`,
    });
    await s.ledger.publish("b");
    const report = await s.ledger.cleanup({ datasetId: "ds" });
    expect(s.exists("manifests/a.json")).toBe(true);
    expect(report.deleted).not.toContain(`${s.root}/manifests/a.json`);
    const item = (await s.ledger.pendingCleanup({ datasetId: "ds" })).find(
      (p) => p.url === `${s.root}/manifests/a.json`,
    );
    expect(item).toMatchObject({ lastErrorCode: "Protected" });
    expect(item?.lastErrorMessage).toMatch(/outside every run's data area/);
  });
});
