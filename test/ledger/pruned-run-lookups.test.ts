/**
 * A pruned run's rows are gone, its events are not: a lookup of it says what happened to it and
 * where its history is, and a rollback to it is refused the same way before and after its events
 * are archived (found by a runbook walkthrough: `show` said "does not exist", and a rollback
 * changed from ILLEGAL_TRANSITION to NOT_FOUND once the run was archived).
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger, testClock } from "../support/ledger.js";
import { writeAndPublish } from "../support/runs.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

async function rejection(p: Promise<unknown>): Promise<Record<string, unknown> & { message: string }> {
  return p.then(
    () => {
      throw new Error("expected a refusal");
    },
    (e: unknown) => e as Record<string, unknown> & { message: string },
  );
}

describe(`lookups of a pruned run (${BACKEND})`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;
  const clock = testClock();

  beforeAll(async () => {
    t = await openTestLedger({ clock: clock.now, archiveAfter: "1d" });
    ledger = t.ledger;
    await ledger.createDataset({ datasetId: "ds", root: `${t.root}/ds`, keepRuns: 1, safetyWindow: "0s" });
    const at = { dir: join(t.dir, "ds"), root: `${t.root}/ds`, datasetId: "ds" };
    await writeAndPublish(ledger, { ...at, runId: "r1" });
    clock.advance(HOUR);
    await writeAndPublish(ledger, { ...at, runId: "r2" });
    clock.advance(HOUR);
    const gc = await ledger.gc("ds");
    expect(gc.actions.map((a) => [a.kind, a.runId])).toEqual([["keep_runs", "r1"]]);
  });
  afterAll(() => t.close());

  it("show names the prune and where the run's events are, before and after they are archived", async () => {
    const pruned = await rejection(ledger.run("r1"));
    expect(pruned).toMatchObject({ code: "NOT_FOUND", details: { kind: "run", id: "r1", state: "PRUNED" } });
    expect(pruned.message).toMatch(
      /^run r1 was pruned \(keep_runs\) at \S+Z; .*`shardledger events --stream r1`/,
    );

    clock.advance(2 * DAY);
    expect((await ledger.archive({ datasetId: "ds" })).archived.map((a) => a.runId)).toEqual(["r1"]);
    // Another process (this one's cache still holds the pruned run's state, which says the same).
    ledger = await t.reopen();
    const archived = await rejection(ledger.run("r1"));
    expect(archived).toMatchObject({
      code: "NOT_FOUND",
      details: { kind: "run", id: "r1", state: "ARCHIVED" },
    });
    expect(archived.message).toMatch(
      /^run r1 was pruned and its events archived; .*`shardledger events --stream r1`/,
    );
    // A run that never existed still says so.
    expect((await rejection(ledger.run("nosuch"))).message).toBe("run nosuch does not exist");
  });

  it("a rollback to it is refused as an illegal transition, archived or not", async () => {
    const refused = await rejection(ledger.rollback("ds", "r1"));
    expect(refused).toMatchObject({
      code: "ILLEGAL_TRANSITION",
      details: { command: "rollback", state: "ARCHIVED", runId: "r1" },
    });
  });
});
