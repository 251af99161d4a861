import { randomUUID } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { createPgEventLog, type PgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import { isValidationError } from "../../src/errors.js";
import { defaultCatalogue, EventCatalogue } from "../../src/events/event-catalogue.js";
import { decideRun } from "../../src/machines/run-commands.js";
import { foldRun } from "../../src/machines/run-state.js";
import { BACKEND, openTestDatabase } from "../support/database.js";
import { openTestLedger } from "../support/ledger.js";

// After the boundary an event's data is validated once: by the library's event builder, whose
// events the log then takes as they are; any other writer of the EventLog port is validated by
// the log, as is a built event whose data was swapped after it was built.

type TestDb = Awaited<ReturnType<typeof openTestDatabase>>;

/** Counts EventCatalogue.validate calls by event type while `fn` runs. */
async function validations(fn: () => Promise<unknown>): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  const original = EventCatalogue.prototype.validate;
  const spy = vi.spyOn(EventCatalogue.prototype, "validate").mockImplementation(function (
    this: EventCatalogue,
    type: string,
    data: unknown,
    schemaVersion?: number,
  ) {
    counts[type] = (counts[type] ?? 0) + 1;
    return original.call(this, type, data, schemaVersion);
  });
  try {
    await fn();
  } finally {
    spy.mockRestore();
  }
  return counts;
}

/** A RunStarted event as the decider builds it. */
const builtRunStarted = (runId: string) => {
  const [event] = decideRun(
    foldRun([]),
    { type: "start", runId, datasetId: "d", numShards: 2 },
    { now: new Date("2026-01-01T00:00:00Z") },
  );
  if (!event) throw new Error("no event decided");
  return event;
};

describe(`one validation after the boundary (${BACKEND})`, () => {
  let database: TestDb;
  let log: PgEventLog;
  beforeAll(async () => {
    database = await openTestDatabase("validated");
    log = createPgEventLog({ db: database.db, schema: database.schema });
  });
  afterAll(() => database.close());
  afterEach(() => vi.restoreAllMocks());

  it("appends an event the builder made without parsing its data again", async () => {
    const runId = `r-${randomUUID()}`;
    const counts = await validations(async () => {
      const event = builtRunStarted(runId);
      await log.append(`run-${runId}`, [event], { expectedVersion: "no_stream" });
    });
    expect(counts).toEqual({ RunStarted: 1 });
    const [stored] = await log.readStream(`run-${runId}`);
    expect(stored).toMatchObject({ type: "RunStarted", schemaVersion: 1, data: { runId, numShards: 2 } });
  });

  it("validates events from any other writer of the port, and names the bad field", async () => {
    const runId = `r-${randomUUID()}`;
    const counts = await validations(async () => {
      await log.append(`run-${runId}`, [{ type: "RunHeartbeat", data: { runId } }], {
        expectedVersion: "any",
      });
      await expect(
        log.append(`run-${runId}`, [{ type: "RunStarted", data: { runId, datasetId: "d", numShards: -1 } }], {
          expectedVersion: "any",
        }),
      ).rejects.toSatisfy((e) => isValidationError(e) && e.field === "RunStarted.data.numShards");
    });
    expect(counts).toEqual({ RunHeartbeat: 1, RunStarted: 1 });
  });

  it("validates a built event whose data or type was replaced after it was built", async () => {
    const runId = `r-${randomUUID()}`;
    const swapped = builtRunStarted(runId);
    swapped.data = { ...swapped.data, numShards: 0 };
    await expect(log.append(`run-${runId}`, [swapped], { expectedVersion: "any" })).rejects.toSatisfy(
      (e) => isValidationError(e) && e.field === "RunStarted.data.numShards",
    );
    const retyped = builtRunStarted(runId) as { type: string };
    retyped.type = "RunHeartbeat";
    await expect(
      log.append(`run-${runId}`, [retyped as ReturnType<typeof builtRunStarted>], { expectedVersion: "any" }),
    ).rejects.toSatisfy((e) => isValidationError(e) && e.field.startsWith("RunHeartbeat.data"));
    expect(await log.streamVersion(`run-${runId}`)).toBe(0);
  });

  it("validates built events again on a log with a catalogue of its own", async () => {
    const own = createPgEventLog({
      db: database.db,
      schema: database.schema,
      catalogue: defaultCatalogue.with([]),
    });
    const runId = `r-${randomUUID()}`;
    const counts = await validations(() =>
      own.append(`run-${runId}`, [builtRunStarted(runId)], { expectedVersion: "no_stream" }),
    );
    expect(counts).toEqual({ RunStarted: 2 });
  });

  it("validates one attempt report's event data once, from the ledger to the append", async () => {
    const t = await openTestLedger();
    try {
      await t.ledger.createDataset({ datasetId: "d", root: t.root });
      await t.ledger.startRun({ datasetId: "d", runId: "r1", numShards: 1 });
      const report = { runId: "r1", shard: 0, attempt: 0, url: `${t.root}/data/r1/shard=0/attempt=00` };
      const counts = await validations(async () => {
        await t.ledger.attemptStarted(report);
        await t.ledger.attemptSucceeded(report);
      });
      expect(counts).toEqual({ AttemptStarted: 1, AttemptSucceeded: 1 });
      const { attempts } = await t.ledger.run("r1");
      expect(attempts.map((a) => a.status)).toEqual(["SUCCEEDED"]);
    } finally {
      await t.close();
    }
  });
});
