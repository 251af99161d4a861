/**
 * Publish, cleanup, gc and the maintain loop, run identically over both object stores: the
 * filesystem (`file://`) and the S3 protocol (`s3://`, a real s3rver). Objects are written and
 * listed straight on the backing (disk / s3rver's on-disk layout), never through the adapter under
 * test, so what the assertions see is what the store really holds.
 */
import { type Dirent, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createFilesystemObjectStore } from "../../src/adapters/objectstore/filesystem-object-store.js";
import { createS3ObjectStore } from "../../src/adapters/objectstore/s3-object-store.js";
import { type MaintainPass, maintainLoop } from "../../src/ledger/maintain-loop.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import type { ObjectStore } from "../../src/storage/object-store.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger, testClock } from "../support/ledger.js";
import { type S3rverHandle, startS3rver } from "../support/s3rver.js";

const HOUR = 3_600_000;
const BUCKET = "lake";
const SHARDS = 3;
const shardDir = (s: number) => `shard=${String(s).padStart(5, "0")}`;
const attemptDir = (a: number) => `attempt=${String(a).padStart(2, "0")}`;

/** One object store as the test sees it: how to name a dataset root and reach its objects directly. */
interface Backing {
  rootOf(datasetId: string): string;
  /** Writes an object as a writer would (outside the ledger). Key relative to the dataset root. */
  write(datasetId: string, key: string, body?: string): Promise<void>;
  /** Every key under the dataset root, sorted, relative to it. */
  keys(datasetId: string): Promise<string[]>;
  read(datasetId: string, key: string): Promise<string>;
  store(rootUrl: string): ObjectStore;
  stop(): Promise<void>;
}

function filesystemBacking(dir: string): Backing {
  const walk = (base: string, rel: string): string[] => {
    let entries: Dirent[];
    try {
      entries = readdirSync(join(base, rel), { withFileTypes: true });
    } catch {
      return [];
    }
    return entries.flatMap((e) =>
      e.isDirectory() ? walk(base, `${rel}${e.name}/`) : e.name.startsWith(".") ? [] : [`${rel}${e.name}`],
    );
  };
  return {
    rootOf: (datasetId) => `file://${dir}/${datasetId}`,
    async write(datasetId, key, body = key) {
      const path = join(dir, datasetId, key);
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, body);
    },
    keys: async (datasetId) => walk(join(dir, datasetId), "").sort(),
    read: async (datasetId, key) => readFile(join(dir, datasetId, key), "utf8"),
    store: (rootUrl) => createFilesystemObjectStore(rootUrl),
    async stop() {},
  };
}

function s3Backing(s3: S3rverHandle): Backing {
  return {
    rootOf: (datasetId) => `s3://${BUCKET}/${datasetId}`,
    write: (datasetId, key, body = key) => s3.seed(BUCKET, [`${datasetId}/${key}`], body),
    keys: async (datasetId) =>
      (await s3.keysOnDisk(BUCKET, `${datasetId}/`)).map((k) => k.slice(datasetId.length + 1)),
    read: async (datasetId, key) =>
      readFile(join(s3.directory, BUCKET, datasetId, `${key}._S3rver_object`), "utf8"),
    store: (rootUrl) => createS3ObjectStore(rootUrl, { client: s3.client }),
    stop: () => s3.stop(),
  };
}

const STORES: { name: string; open: (dir: string) => Promise<Backing> }[] = [
  { name: "filesystem", open: async (dir) => filesystemBacking(dir) },
  { name: "s3", open: async () => s3Backing(await startS3rver({ buckets: [BUCKET] })) },
];

describe.each(STORES)(`publish, cleanup, gc and maintain over the $name store (${BACKEND})`, ({ open }) => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  let backing: Backing;
  /** Every put the ledger sends, in order, as `<datasetId>:<key>` (the root's last path segment). */
  const puts: string[] = [];
  // Both stores stamp objects with the real time; orphan age is measured against the ledger's clock.
  const clock = testClock(new Date().toISOString());

  beforeAll(async () => {
    t = await openTestLedger({
      clock: clock.now,
      objectStore: (root) => {
        const store = backing.store(root);
        const datasetId = root.slice(root.lastIndexOf("/") + 1);
        return {
          rootUrl: store.rootUrl,
          list: (prefix, options) => store.list(prefix, options),
          get: (key) => store.get(key),
          deleteMany: (keys) => store.deleteMany(keys),
          async put(key, body, options) {
            puts.push(`${datasetId}:${key}`);
            return store.put(key, body, options);
          },
        };
      },
    });
    ledger = t.ledger;
    backing = await open(t.dir);
  });
  afterAll(async () => {
    await t?.close();
    await backing?.stop();
  });

  /**
   * A run of SHARDS shards whose attempt 0 wins everywhere, plus losers: shard 0's attempt 1 also
   * succeeded, shard 1's attempt 1 failed after writing. Each attempt writes two parts. Returns the
   * keys of winners and losers.
   */
  async function runWithLosers(datasetId: string, runId: string) {
    const root = backing.rootOf(datasetId);
    await ledger.startRun({ datasetId, numShards: SHARDS, runId });
    const winners: string[] = [];
    const losers: string[] = [];
    const writeAttempt = async (shard: number, attempt: number, into: string[]) => {
      const prefix = `data/${runId}/${shardDir(shard)}/${attemptDir(attempt)}`;
      for (const part of ["part-0", "part-1"]) {
        await backing.write(datasetId, `${prefix}/${part}`);
        into.push(`${prefix}/${part}`);
      }
      return `${root}/${prefix}`;
    };
    for (let shard = 0; shard < SHARDS; shard++) {
      await ledger.attemptSucceeded({ runId, shard, attempt: 0, url: await writeAttempt(shard, 0, winners) });
    }
    await ledger.attemptSucceeded({ runId, shard: 0, attempt: 1, url: await writeAttempt(0, 1, losers) });
    await ledger.attemptFailed({
      runId,
      shard: 1,
      attempt: 1,
      url: await writeAttempt(1, 1, losers),
      error: "executor lost",
    });
    return { winners: winners.sort(), losers: losers.sort() };
  }

  it("publishes a run with losers: manifest of the winners, then _CURRENT last; no object touched", async () => {
    await ledger.createDataset({ datasetId: "pub", root: backing.rootOf("pub"), safetyWindow: "0s" });
    const { winners, losers } = await runWithLosers("pub", "r1");
    const before = await backing.keys("pub");
    expect(before).toEqual([...losers, ...winners].sort());

    puts.length = 0;
    await ledger.publish("r1");

    expect(puts.filter((p) => p.startsWith("pub:"))).toEqual(["pub:manifests/r1.json", "pub:_CURRENT"]);
    expect(await backing.keys("pub")).toEqual([...before, "_CURRENT", "manifests/r1.json"].sort());
    const manifest = await backing.read("pub", "manifests/r1.json");
    for (let shard = 0; shard < SHARDS; shard++) {
      expect(manifest).toContain(`${backing.rootOf("pub")}/data/r1/${shardDir(shard)}/${attemptDir(0)}`);
    }
    expect(manifest).not.toContain(attemptDir(1));
    expect(await backing.read("pub", "_CURRENT")).toContain("r1");
  });

  it("cleanup deletes the losers' objects and only them", async () => {
    const before = await backing.keys("pub");
    const report = await ledger.cleanup({ datasetId: "pub" });
    expect([[...report.deleted].sort(), report.failed]).toEqual([
      [0, 1].map((shard) => `${backing.rootOf("pub")}/data/r1/${shardDir(shard)}/${attemptDir(1)}`),
      [],
    ]);
    const losers = before.filter((k) => k.includes(`/${attemptDir(1)}/`));
    expect(losers).toHaveLength(4);
    expect(await backing.keys("pub")).toEqual(before.filter((k) => !losers.includes(k)));
    const { attempts } = await ledger.run("r1");
    expect(attempts.filter((a) => a.attempt === 1).map((a) => a.status)).toEqual(["DELETED", "DELETED"]);
    expect(await ledger.pendingCleanup({ datasetId: "pub" })).toEqual([]);
  });

  it("gc prunes the run past keepRuns and an orphan, keeping the current and the kept run", async () => {
    await ledger.createDataset({
      datasetId: "gc",
      root: backing.rootOf("gc"),
      keepRuns: 2,
      safetyWindow: "1h",
    });
    const winnersOf: Record<string, string[]> = {};
    for (const runId of ["g1", "g2", "g3"]) {
      winnersOf[runId] = (await runWithLosers("gc", runId)).winners;
      await ledger.publish(runId);
      await ledger.cleanup({ datasetId: "gc" });
      clock.advance(HOUR);
    }
    // A writer killed before it reported left a file beside the current run's winner.
    await backing.write("gc", `data/g3/${shardDir(2)}/_tmp.123`);
    const before = await backing.keys("gc");
    expect(before).toEqual(
      [
        ...Object.values(winnersOf).flat(),
        ...["g1", "g2", "g3"].map((r) => `manifests/${r}.json`),
        "_CURRENT",
        `data/g3/${shardDir(2)}/_tmp.123`,
      ].sort(),
    );

    clock.advance(2 * HOUR);
    const report = await ledger.gc("gc");
    expect([report.failed, report.dryRun]).toEqual([[], false]);
    expect(report.actions.map((a) => [a.kind, a.runId])).toContainEqual(["keep_runs", "g1"]);
    expect(report.actions.filter((a) => a.kind === "orphan").flatMap((a) => a.urls)).toEqual([
      `${backing.rootOf("gc")}/data/g3/${shardDir(2)}/_tmp.123`,
    ]);
    expect(report.actions.map((a) => a.runId)).not.toContain("g2");

    expect(await backing.keys("gc")).toEqual(
      [...winnersOf.g2!, ...winnersOf.g3!, "manifests/g2.json", "manifests/g3.json", "_CURRENT"].sort(),
    );
    expect((await ledger.runs("gc")).map((r) => [r.runId, r.current]).sort()).toEqual([
      ["g2", false],
      ["g3", true],
    ]);
    expect((await ledger.audit()).match).toBe(true);
  });

  it("the maintain loop does a cleanup and a gc pass that delete the losers, only them", async () => {
    await ledger.createDataset({ datasetId: "loop", root: backing.rootOf("loop"), safetyWindow: "0s" });
    const { winners, losers } = await runWithLosers("loop", "m1");
    await ledger.publish("m1");
    expect(await backing.keys("loop")).toEqual(
      [...winners, ...losers, "_CURRENT", "manifests/m1.json"].sort(),
    );

    const passes: MaintainPass[] = [];
    const stop = new AbortController();
    await maintainLoop(ledger, {
      everyMs: 10_000,
      datasetId: "loop",
      signal: stop.signal,
      onPass: (p) => {
        passes.push(p);
        stop.abort();
      },
    });
    expect(passes.map((p) => [p.datasetId, p.skipped, p.error, p.cleanup, p.gc?.failed])).toEqual([
      ["loop", false, null, { deleted: 2, failed: 0, planned: 2 }, 0],
    ]);
    expect(await backing.keys("loop")).toEqual([...winners, "_CURRENT", "manifests/m1.json"].sort());
  });

  it("archive writes the pruned run's events, then its marker, and reads them back through the store", async () => {
    // g1 was pruned by the gc test above.
    const before = await ledger.events({ stream: "g1", limit: 1000 });
    expect(before.at(-1)?.type).toBe("Pruned");
    puts.length = 0;
    const report = await ledger.archive({ datasetId: "gc", after: "0s" });
    expect(report.archived.map((a) => [a.runId, a.events, a.archiveUrl])).toEqual([
      ["g1", before.length, `${backing.rootOf("gc")}/_archive/run-g1.jsonl`],
    ]);
    // Content first, the marker last.
    expect(puts).toEqual(["gc:_archive/run-g1.jsonl", "gc:_archive/run-g1.complete"]);
    expect((await backing.keys("gc")).filter((k) => k.startsWith("_archive/"))).toEqual([
      "_archive/run-g1.complete",
      "_archive/run-g1.jsonl",
    ]);
    const marker = JSON.parse(await backing.read("gc", "_archive/run-g1.complete"));
    expect(marker).toMatchObject({
      runId: "g1",
      events: before.length,
      checksum: report.archived[0]?.checksum,
    });
    expect(await ledger.events({ stream: "g1", limit: 1000 })).toEqual(before);
    expect(await ledger.audit({ deep: true })).toMatchObject({ match: true, archives: { problems: [] } });
    // A later gc never touches the archive.
    await ledger.gc("gc");
    expect((await backing.keys("gc")).filter((k) => k.startsWith("_archive/"))).toHaveLength(2);
  });
});
