/**
 * Run snapshots (issue 16 item 3): a run not in a process's cache is restored from its snapshot
 * plus the tail of its stream; snapshots are derived data — one of another fold version, or
 * damaged, is ignored; a rebuild empties them; pruning and archiving a run remove its snapshot.
 */
import { sql } from "kysely";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openObjectStore } from "../../src/adapters/objectstore/open-object-store.js";
import { createPgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import { projectionQueries } from "../../src/adapters/postgres/projection-queries.js";
import { ledgerProjection } from "../../src/adapters/postgres/projection-store.js";
import { pgRunSnapshotStore } from "../../src/adapters/postgres/run-snapshot-store.js";
import type { EventLog } from "../../src/events/event-log.js";
import { publishRun } from "../../src/ledger/publish.js";
import { RunExecutor } from "../../src/ledger/run-executor.js";
import { RUN_FOLD_VERSION, serialiseRunState } from "../../src/machines/run-snapshot.js";
import { foldRun } from "../../src/machines/run-state.js";
import { BACKEND } from "../support/database.js";
import { eventually } from "../support/eventually.js";
import { openTestLedger, testClock } from "../support/ledger.js";
import { writeAndPublish } from "../support/runs.js";

/**
 * Enough reports for a snapshot (the executor snapshots a run grown by ≥ 1,000 events), and a
 * stream long enough that reading the snapshot and its tail is visibly less than reading it all.
 */
const SHARDS = 3_000;
/** A load outside the cache reads the stream's first 1,000 events beside the snapshot. */
const HEAD = 1_000;
const DAY = 86_400_000;

type T = Awaited<ReturnType<typeof openTestLedger>>;

describe(`run snapshots on ${BACKEND}`, () => {
  let t: T;
  let clock: ReturnType<typeof testClock>;

  beforeEach(async () => {
    clock = testClock();
    t = await openTestLedger({ clock: clock.now, archiveAfter: "1d" });
    await t.ledger.createDataset({ datasetId: "ds", root: t.root, keepRuns: 1, safetyWindow: "0s" });
  });
  afterEach(() => t.close());

  const url = (runId: string, shard: number, attempt: number) =>
    `${t.root}/data/${runId}/shard=${shard}/attempt=${attempt}`;

  /** A run of SHARDS shards, one success each reported through the ledger (group commit). */
  async function reportedRun(runId: string): Promise<void> {
    await t.ledger.startRun({ datasetId: "ds", numShards: SHARDS, runId });
    const results = await t.ledger.reportAttempts(
      Array.from({ length: SHARDS }, (_, shard) => ({
        kind: "succeeded" as const,
        runId,
        shard,
        attempt: 0,
        url: url(runId, shard, 0),
      })),
    );
    expect(results.every((r) => r.ok)).toBe(true);
  }

  const snapshotRow = async (runId: string) => {
    const { rows } = await sql<{ stream_version: string | number; fold_version: number }>`
      SELECT stream_version, fold_version FROM ${sql.id(t.schema, "run_snapshots")}
      WHERE stream_id = ${`run-${runId}`}`.execute(t.database.db);
    return rows[0] ? { version: Number(rows[0].stream_version), fold: rows[0].fold_version } : null;
  };
  /** The snapshot the ledger writes once the run is idle (a background write). */
  const snapshotWritten = (runId: string) =>
    eventually(
      () => snapshotRow(runId),
      (row) => row !== null,
      10_000,
    );

  /** A log of the test database that counts the events each stream read returns. */
  function countingLog(): { log: EventLog; read: Map<string, number> } {
    const inner = createPgEventLog({ db: t.database.db, schema: t.schema, projections: [ledgerProjection] });
    const read = new Map<string, number>();
    const log = new Proxy(inner, {
      get(target, prop) {
        if (prop === "readStream") {
          return async (...args: Parameters<EventLog["readStream"]>) => {
            const events = await target.readStream(...args);
            read.set(args[0], (read.get(args[0]) ?? 0) + events.length);
            return events;
          };
        }
        const value = Reflect.get(target, prop, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    }) as EventLog;
    return { log, read };
  }

  /** A fresh executor (an empty cache, as in a new process) over a counting log. */
  function freshExecutor() {
    const { log, read } = countingLog();
    const executor = new RunExecutor(
      log,
      clock.now,
      {},
      { snapshots: pgRunSnapshotStore(t.database.db, t.schema) },
    );
    return { log, read, executor };
  }

  const fullFold = async (runId: string) =>
    foldRun(await createPgEventLog({ db: t.database.db, schema: t.schema }).readStream(`run-${runId}`));

  it("a publish on a fresh ledger reads the snapshot and only the tail of the stream", async () => {
    await reportedRun("r1");
    const snapshot = await snapshotWritten("r1");
    expect(snapshot).toMatchObject({ fold: RUN_FOLD_VERSION });
    // A tail the snapshot does not hold, reported through another ledger instance (which itself
    // starts from the snapshot).
    const other = await t.reopen();
    for (let shard = 0; shard < 5; shard++) {
      await other.attemptFailed({ runId: "r1", shard, attempt: 1, url: url("r1", shard, 1), error: "lost" });
    }
    await other.close();
    const version = 1 + SHARDS + 5;
    expect((await fullFold("r1")).version).toBe(version);
    const tail = version - (snapshot?.version ?? 0);
    expect(tail).toBeGreaterThanOrEqual(5);
    expect(tail).toBeLessThan(200);

    const { log, read, executor } = freshExecutor();
    const result = await publishRun(
      {
        database: t.database,
        log,
        executor,
        queries: projectionQueries(t.database.db, t.schema),
        storeFor: (dataset) => openObjectStore(dataset.root),
        clock: clock.now,
      },
      "r1",
    );
    expect(result.winners).toHaveLength(SHARDS);
    expect(result.winners.every((w) => w.attempt === 0)).toBe(true);
    // Only the tail of the run stream was read (the publish's own events were folded as appended),
    // besides its head (read side by side with the snapshot, for a run that has none).
    expect(read.get("run-r1")).toBe(HEAD + tail);
    expect(HEAD + tail).toBeLessThan(version / 2);
    // The state it decided on is the fold of the whole log.
    expect(await executor.load("r1")).toStrictEqual(await fullFold("r1"));
    await executor.settle();
    expect((await t.ledger.audit()).match).toBe(true);
  });

  it("ignores a snapshot of another fold version, or a damaged one, and folds the log", async () => {
    await reportedRun("r1");
    const written = await snapshotWritten("r1");
    const full = await fullFold("r1");
    const table = sql.id(t.schema, "run_snapshots");
    // A state that would be wrong if trusted: the run as it was after its first ten events, but
    // claiming the whole stream.
    const events = await createPgEventLog({ db: t.database.db, schema: t.schema }).readStream("run-r1");
    const wrong = serialiseRunState({ ...foldRun(events.slice(0, 10)), version: full.version });
    for (const [fold, state] of [
      [RUN_FOLD_VERSION + 1, wrong],
      [RUN_FOLD_VERSION - 1, wrong],
      [RUN_FOLD_VERSION, `${wrong.slice(0, 200)}`],
      [RUN_FOLD_VERSION, JSON.stringify({ fold: RUN_FOLD_VERSION, run: null })],
    ] as const) {
      await sql`UPDATE ${table} SET fold_version = ${fold}, state = ${state}, stream_version = ${full.version}`.execute(
        t.database.db,
      );
      const { read, executor } = freshExecutor();
      expect(await executor.load("r1")).toStrictEqual(full);
      expect(read.get("run-r1")).toBe(full.version);
    }
    expect(written?.version).toBeGreaterThan(1000);
  });

  it("a rebuild leaves no snapshot behind", async () => {
    await reportedRun("r1");
    await snapshotWritten("r1");
    await t.ledger.rebuild();
    expect(await snapshotRow("r1")).toBeNull();
    // Loading folds the log again and is the same run.
    const { executor } = freshExecutor();
    expect(await executor.load("r1")).toStrictEqual(await fullFold("r1"));
  });

  it("pruning a run removes its snapshot, and archiving removes one written since", async () => {
    await reportedRun("r1");
    await snapshotWritten("r1");
    await t.ledger.publish("r1");
    clock.advance(1000);
    await writeAndPublish(t.ledger, { dir: t.dir, root: t.root, datasetId: "ds", runId: "r2" });
    clock.advance(1000);
    const gc = await t.ledger.gc("ds");
    expect(gc.actions.map((a) => [a.kind, a.runId])).toEqual([["keep_runs", "r1"]]);
    expect(
      await eventually(
        () => snapshotRow("r1"),
        (row) => row === null,
        10_000,
      ),
    ).toBeNull();

    // A snapshot that appeared since (an older process's late write) goes with the archive.
    await pgRunSnapshotStore(t.database.db, t.schema).write({
      runId: "r1",
      version: 5,
      foldVersion: RUN_FOLD_VERSION,
      state: serialiseRunState(await fullFold("r1")),
    });
    clock.advance(2 * DAY);
    const report = await t.ledger.archive({ datasetId: "ds" });
    expect(report.archived.map((a) => a.runId)).toEqual(["r1"]);
    expect(await snapshotRow("r1")).toBeNull();
  });
});
