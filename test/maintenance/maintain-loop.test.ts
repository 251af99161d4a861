import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type MaintainPass, maintainLoop } from "../../src/ledger/maintain-loop.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger } from "../support/ledger.js";

describe(`the maintain worker (${BACKEND})`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  beforeAll(async () => {
    t = await openTestLedger();
    for (const datasetId of ["w1", "w2"]) {
      await t.ledger.createDataset({ datasetId, root: `${t.root}/${datasetId}`, safetyWindow: "0s" });
      const runId = `${datasetId}-r`;
      await t.ledger.startRun({ datasetId, numShards: 1, runId });
      for (const a of [0, 1]) {
        const rel = `${datasetId}/data/${runId}/shard=0/attempt=${a}`;
        mkdirSync(join(t.dir, rel), { recursive: true });
        writeFileSync(join(t.dir, rel, "part"), "x");
        await t.ledger.attemptSucceeded({ runId, shard: 0, attempt: a, url: `${t.root}/${rel}` });
      }
      await t.ledger.publish(runId);
    }
  });
  afterAll(() => t.close());

  it("runs cleanup then gc for every dataset, one JSON-able pass each, and stops when asked", async () => {
    const passes: MaintainPass[] = [];
    const stop = new AbortController();
    await maintainLoop(t.ledger, {
      everyMs: 10_000,
      signal: stop.signal,
      onPass: (p) => {
        passes.push(p);
        if (passes.length === 2) stop.abort();
      },
    });
    expect(passes.map((p) => [p.datasetId, p.skipped, p.error, p.cleanup])).toEqual([
      ["w1", false, null, { deleted: 1, failed: 0, planned: 1 }],
      ["w2", false, null, { deleted: 1, failed: 0, planned: 1 }],
    ]);
    expect(
      passes.every((p) => p.gc !== null && JSON.parse(JSON.stringify(p)).datasetId === p.datasetId),
    ).toBe(true);
  });

  it("reports a pass as skipped while another holds the dataset's maintenance lock", async () => {
    const other = await t.reopen();
    const { withDatasetLock } = await import("../../src/adapters/postgres/dataset-lock.js");
    const { openDatabase } = await import("../../src/adapters/postgres/database.js");
    // On the server a second connection holds the advisory lock; PGlite's lock is in-process.
    const database =
      BACKEND === "postgres"
        ? await openDatabase(process.env.DATABASE_URL as string, { schema: t.schema })
        : ({ kind: "pglite", schema: t.schema } as Awaited<ReturnType<typeof openDatabase>>);
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    let acquired!: () => void;
    const isHeld = new Promise<void>((r) => {
      acquired = r;
    });
    const holder = withDatasetLock(database, "maintenance", "w1", () => {
      acquired();
      return held;
    });
    await isHeld;
    const stop = new AbortController();
    const passes: MaintainPass[] = [];
    await maintainLoop(other, {
      everyMs: 10,
      datasetId: "w1",
      signal: stop.signal,
      onPass: (p) => {
        passes.push(p);
        stop.abort();
      },
    });
    release();
    await holder;
    if (BACKEND === "postgres") await database.close();
    expect(passes.map((p) => [p.datasetId, p.skipped, p.cleanup, p.gc])).toEqual([["w1", true, null, null]]);
  });
});
