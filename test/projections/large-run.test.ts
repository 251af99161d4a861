import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RecordedEvent } from "../../src/events/envelope.js";
import { applyLedgerEvents } from "../../src/projections/ledger-projection.js";
import { projectionQueries } from "../../src/projections/queries.js";
import { BACKEND, openTestDatabase } from "../support/database.js";

const at = new Date("2026-01-01T00:00:00Z");
let position = 0;
const event = (type: string, data: Record<string, unknown>): RecordedEvent => ({
  eventId: `00000000-0000-4000-8000-${String(++position).padStart(12, "0")}`,
  streamId: "run-big",
  streamVersion: position,
  globalPosition: position,
  type,
  schemaVersion: 1,
  data,
  metadata: { correlationId: null, causationId: null, actor: null },
  recordedAt: at,
});

describe(`a run larger than a call stack (${BACKEND})`, () => {
  let database: Awaited<ReturnType<typeof openTestDatabase>>;
  beforeAll(async () => {
    database = await openTestDatabase("large");
  });
  afterAll(() => database.close());

  // 130,000 attempts: more rows than V8 accepts as spread arguments (~125k), the bug that made
  // such runs impossible to publish, fail, audit or rebuild.
  it("classifies 130,000 attempts when winners are selected", async () => {
    const shards = 65_000;
    await applyLedgerEvents(database.db, database.schema, [
      event("DatasetRegistered", {
        datasetId: "d",
        root: "file:///lake/d",
        policies: { keepRuns: 1, retentionMs: 1, failedRetentionMs: 1, staleAfterMs: 1, safetyWindowMs: 0 },
      }),
      event("RunStarted", { runId: "big", datasetId: "d", numShards: shards }),
    ]);
    const attempts: RecordedEvent[] = [];
    for (let shard = 0; shard < shards; shard++) {
      for (const attempt of [0, 1]) {
        attempts.push(
          event("AttemptSucceeded", {
            runId: "big",
            shard,
            attempt,
            taskAttemptId: null,
            url: `file:///lake/d/data/big/${shard}/${attempt}`,
          }),
        );
      }
    }
    await applyLedgerEvents(database.db, database.schema, attempts);
    await applyLedgerEvents(database.db, database.schema, [
      event("WinnerSelected", {
        runId: "big",
        shard: 0,
        attempt: 0,
        taskAttemptId: null,
        url: "file:///lake/d/data/big/0/0",
      }),
    ]);
    const run = (await projectionQueries(database.db, database.schema).runs("d"))[0];
    expect(run?.attempts).toMatchObject({ total: 130_000, winner: 1, loser: 129_999, succeeded: 0 });
  });
});
