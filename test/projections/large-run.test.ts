import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { projectionQueries } from "../../src/adapters/postgres/projection-queries.js";
import { applyLedgerEvents } from "../../src/adapters/postgres/projection-store.js";
import { CURRENT_SCHEMA_VERSIONS, type EventType } from "../../src/events/catalogue.js";
import type { RecordedEvent } from "../../src/events/envelope.js";
import { BACKEND, openTestDatabase } from "../support/database.js";

const at = new Date("2026-01-01T00:00:00Z");
let position = 0;
const event = (type: string, data: Record<string, unknown>): RecordedEvent => ({
  eventId: `00000000-0000-4000-8000-${String(++position).padStart(12, "0")}`,
  streamId: "run-big",
  streamVersion: position,
  globalPosition: position,
  type,
  schemaVersion: CURRENT_SCHEMA_VERSIONS[type as EventType],
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
  it("classifies 130,000 attempts when winners are selected, and unclassifies them on failure", async () => {
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
    // The whole selection, as publish appends it: 1,000 winners per event, all in one batch. The
    // attempts become losers when it completes, as the attempt machine says (not before).
    const selection: RecordedEvent[] = [];
    for (let first = 0; first < shards; first += 1_000) {
      const winners = [];
      for (let shard = first; shard < Math.min(first + 1_000, shards); shard++)
        winners.push({ shard, attempt: 0, taskAttemptId: null, url: `file:///lake/d/data/big/${shard}/0` });
      selection.push(event("WinnerSelected", { runId: "big", winners }));
    }
    await applyLedgerEvents(database.db, database.schema, selection);
    const queries = projectionQueries(database.db, database.schema);
    const statuses = async () => {
      const { rows } = await sql<{ status: string; n: string }>`
        SELECT status, count(*) AS n FROM ${sql.id(database.schema, "attempts")} WHERE run_id = 'big'
        GROUP BY status ORDER BY status`.execute(database.db);
      return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
    };
    expect((await queries.runs("d"))[0]?.attempts).toMatchObject({
      total: 130_000,
      winner: 65_000,
      loser: 65_000,
      succeeded: 0,
    });
    expect(await statuses()).toEqual({ LOSER: 65_000, WINNER: 65_000 });
    // A failure voids the selection: every attempt row of the run steps back in the store (one
    // UPDATE, no row loaded) and the run's counts move by what it reports.
    await applyLedgerEvents(database.db, database.schema, [
      event("RunFailed", { runId: "big", cause: "writer_abort", reason: "gave up" }),
    ]);
    expect((await queries.runs("d"))[0]?.attempts).toMatchObject({
      total: 130_000,
      winner: 0,
      loser: 0,
      succeeded: 130_000,
    });
    expect(await statuses()).toEqual({ SUCCEEDED: 130_000 });
    // Since the fold stores every attempt's status, selecting and voiding the winners rewrite all
    // 130,000 rows (set-based UPDATEs, but still every row): more than the default time on a
    // loaded machine. A limit, not a measurement (bench/ measures).
  }, 600_000);
});
