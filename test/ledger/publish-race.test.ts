import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { selectWinners } from "../../src/machines/winner-selection.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger } from "../support/ledger.js";

const REPEATS = BACKEND === "postgres" ? 12 : 3;
const REPORTERS = 64;
const SHARDS = 8;

describe(`64 reporters racing publish on ${BACKEND}`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledgers: Ledger[];
  beforeAll(async () => {
    t = await openTestLedger({ poolSize: 24 });
    // Four ledger instances on one database stand for four writer processes.
    ledgers = [t.ledger, await t.reopen(), await t.reopen(), await t.reopen()];
    await t.ledger.createDataset({ datasetId: "race", root: t.root, safetyWindow: "0s" });
  });
  afterAll(() => t.close());

  it("leaves no attempt unclassified and the manifest names exactly the winners", async () => {
    let reportedBefore = 0;
    let reportedAfter = 0;
    for (let round = 0; round < REPEATS; round++) {
      const runId = `race-${round}`;
      await t.ledger.startRun({ datasetId: "race", numShards: SHARDS, runId });
      const url = (shard: number, attempt: number) =>
        `${t.root}/data/${runId}/shard=${shard}/attempt=${attempt}`;
      // Cover every shard once so publish can succeed; the race decides which attempts win or lose.
      for (let shard = 0; shard < SHARDS; shard++) {
        await t.ledger.attemptSucceeded({ runId, shard, attempt: 9, url: url(shard, 9) });
      }
      const publisher = (async () => {
        await new Promise((r) => setTimeout(r, 5 + (round % 4) * 3));
        return (ledgers[round % ledgers.length] as Ledger).publish(runId);
      })();
      const reporters = Array.from({ length: REPORTERS }, async (_, i) => {
        const ledger = ledgers[i % ledgers.length] as Ledger;
        const shard = i % SHARDS;
        const attempt = Math.floor(i / SHARDS);
        // Most reporters race the publish; every eighth reports once it has returned, so some
        // reports land after the selection however fast the others are.
        if (i % 8 === 7) await publisher.catch(() => {});
        else await new Promise((r) => setTimeout(r, (i * 7) % 13));
        if (i % 5 === 0) {
          await ledger.attemptFailed({ runId, shard, attempt, url: url(shard, attempt), error: "boom" });
        } else {
          await ledger.attemptStarted({ runId, shard, attempt, url: url(shard, attempt) });
          await ledger.attemptSucceeded({ runId, shard, attempt, url: url(shard, attempt) });
        }
      });
      const [published] = await Promise.all([publisher, ...reporters]);

      const shown = await t.ledger.run(runId);
      const unclassified = shown.attempts.filter((a) => !["WINNER", "LOSER"].includes(a.status));
      expect(unclassified, runId).toEqual([]);
      expect(shown.attempts).toHaveLength(SHARDS + REPORTERS);
      expect(shown.winners).toHaveLength(SHARDS);
      expect(shown.attempts.filter((a) => a.status === "WINNER")).toHaveLength(SHARDS);

      const manifest = JSON.parse(readFileSync(join(t.dir, `manifests/${runId}.json`), "utf8"));
      expect(manifest.winners).toEqual(shown.winners);
      expect(published.winners).toEqual(shown.winners);

      // The winners are exactly what selection gives over the successes recorded before publish.
      const events = await t.ledger.events({ stream: `run-${runId}`, limit: 10_000 });
      const firstWinner = events.findIndex((e) => e.type === "WinnerSelected");
      const before = events
        .slice(0, firstWinner)
        .filter((e) => e.type === "AttemptSucceeded")
        .map(
          (e) =>
            e.data as { shard: number; attempt: number; taskAttemptId: string | null; url: string | null },
        );
      const expected = selectWinners(
        SHARDS,
        before.map((a) => ({ ...a, outcome: "SUCCEEDED" as const })),
      );
      expect(expected.missingShards).toEqual([]);
      for (const w of shown.winners) {
        const e = expected.winners.get(w.shard);
        expect({ shard: w.shard, attempt: w.attempt, url: w.url }).toEqual({
          shard: w.shard,
          attempt: e?.attempt,
          url: e?.url,
        });
      }
      reportedBefore += before.length - SHARDS;
      reportedAfter += events.slice(firstWinner).filter((e) => e.type.startsWith("Attempt")).length;
      // Everything reported after the winners were chosen is a loser.
      const afterIds = new Set(
        events
          .slice(firstWinner)
          .filter(
            (e) => e.type === "AttemptSucceeded" || e.type === "AttemptFailed" || e.type === "AttemptStarted",
          )
          .map((e) => {
            const d = e.data as { shard: number; attempt: number };
            return `${d.shard}/${d.attempt}`;
          }),
      );
      for (const a of shown.attempts) {
        if (
          afterIds.has(`${a.shard}/${a.attempt}`) &&
          !before.some((b) => b.shard === a.shard && b.attempt === a.attempt)
        ) {
          expect(a.status).toBe("LOSER");
        }
      }
    }
    // The race is real: reports landed on both sides of the winner selection.
    expect(reportedBefore).toBeGreaterThan(0);
    expect(reportedAfter).toBeGreaterThan(0);
    const audit = await t.ledger.audit();
    expect(audit.differences.slice(0, 5)).toEqual([]);
    expect(audit.match).toBe(true);
  });
});
