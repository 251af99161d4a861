import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BACKEND } from "../support/database.js";
import { openTestLedger } from "../support/ledger.js";
import { writeAttempt } from "../support/runs.js";
import { startTestServer, type TestServer } from "../support/server.js";

const ROUNDS = BACKEND === "postgres" ? 4 : 3;
const REPORTERS = 64;
const SHARDS = 8;

interface ErrorReply {
  error: { code: string; missingShards?: number[] };
}

/**
 * 64 HTTP reporters (each reporting started then succeeded for its attempt) race one publish
 * request through the server. Whatever the interleaving, no accepted report is lost, every attempt
 * of a published run is classified (winner or loser), and a refused publish names exactly the
 * shards that had no success when it decided.
 */
describe(`64 HTTP reporters racing a publish request on ${BACKEND}`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let server: TestServer;
  beforeAll(async () => {
    t = await openTestLedger({ poolSize: 24 });
    await t.ledger.createDataset({ datasetId: "race", root: t.root, safetyWindow: "0s" });
    server = await startTestServer(t.ledger);
  });
  afterAll(async () => {
    await server?.close();
    await t?.close();
  });

  it("loses no accepted report and leaves no attempt of a published run unclassified", async () => {
    const outcomes: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const runId = `race-${round}`;
      const created = await server.request("POST", "/v1/runs", {
        body: { datasetId: "race", numShards: SHARDS, runId },
      });
      expect(created.status).toBe(201);
      const accepted: { shard: number; attempt: number; kind: string }[] = [];
      const refusedCodes: string[] = [];
      const reporters = Array.from({ length: REPORTERS }, async (_, i) => {
        const shard = i % SHARDS;
        const attempt = Math.floor(i / SHARDS);
        const url = writeAttempt(t.dir, t.root, runId, shard, attempt);
        await new Promise((r) => setTimeout(r, (i * 7) % 13));
        for (const kind of ["started", "succeeded"] as const) {
          const reply = await server.request<ErrorReply>("POST", `/v1/runs/${runId}/attempts/${kind}`, {
            body: { shard, attempt, url },
          });
          if (reply.status === 200) accepted.push({ shard, attempt, kind });
          else {
            // A report after the run's fate was decided is refused by a rule, never a bug.
            expect(reply.status).toBe(409);
            refusedCodes.push(reply.body.error.code);
          }
        }
      });
      const publisher = (async () => {
        await new Promise((r) => setTimeout(r, [0, 40, 150][round % 3]));
        return server.request<ErrorReply & { winners: unknown[] }>("POST", `/v1/runs/${runId}/publish`);
      })();
      const [published] = await Promise.all([publisher, ...reporters]);

      const shown = await t.ledger.run(runId);
      // None lost: every accepted report is in the log (its attempt is recorded).
      for (const a of accepted) {
        expect(
          shown.attempts.some((x) => x.shard === a.shard && x.attempt === a.attempt),
          `${runId} ${a.kind} ${a.shard}/${a.attempt}`,
        ).toBe(true);
      }
      expect(refusedCodes.filter((c) => c !== "ILLEGAL_TRANSITION")).toEqual([]);
      const events = await t.ledger.events({ stream: runId, limit: 10_000 });
      if (published.status === 200) {
        outcomes.push("published");
        expect(shown.run.status).toBe("SUCCEEDED");
        expect(shown.winners).toHaveLength(SHARDS);
        const unclassified = shown.attempts.filter((a) => !["WINNER", "LOSER"].includes(a.status));
        expect(unclassified, runId).toEqual([]);
        // Every report the server accepted after the winners were chosen is a loser.
        expect(shown.attempts).toHaveLength(new Set(accepted.map((a) => `${a.shard}/${a.attempt}`)).size);
      } else {
        outcomes.push("refused");
        expect(published.status).toBe(409);
        expect(published.body.error.code).toBe("SHARD_COVERAGE");
        // The refusal names exactly the shards that had no success when publish decided.
        const decided = events.findIndex((e) => e.type === "RunFailed");
        expect(decided).toBeGreaterThan(-1);
        const covered = new Set(
          events
            .slice(0, decided)
            .filter((e) => e.type === "AttemptSucceeded")
            .map((e) => (e.data as { shard: number }).shard),
        );
        const missing = Array.from({ length: SHARDS }, (_, s) => s).filter((s) => !covered.has(s));
        expect(published.body.error.missingShards).toEqual(missing);
        expect(shown.run.status).toBe("FAILED");
      }
    }
    const audit = await t.ledger.audit();
    expect(audit.differences.slice(0, 5)).toEqual([]);
    expect(audit.match).toBe(true);
    // Recorded for the reader of the test output; no verdict depends on it.
    console.info(`race outcomes: ${outcomes.join(", ")}`);
  });
});
