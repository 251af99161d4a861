import { randomUUID } from "node:crypto";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MIGRATIONS, migrateToLatest } from "../../src/adapters/postgres/migrations.js";
import { createPgEventLog, type PgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import {
  exitCodeFor,
  isLeaseLostError,
  isValidationError,
  LeaseLostError,
  type ValidationError,
} from "../../src/errors.js";
import type { NewEvent } from "../../src/events/envelope.js";
import { appendBefore0008 } from "../support/append-before-0008.js";
import { BACKEND, openTestDatabase } from "../support/database.js";

type TestDb = Awaited<ReturnType<typeof openTestDatabase>>;
const heartbeat = (eventId?: string): NewEvent => ({
  type: "RunHeartbeat",
  data: { runId: "r1" },
  ...(eventId ? { eventId } : {}),
});

/*
 * The fence of an append is the maintenance lease it is made under. These tests set the stored
 * epoch directly (what another pass's acquire does) and check the append's side of the contract.
 */
describe(`fenced appends on ${BACKEND}`, () => {
  let database: TestDb;
  let log: PgEventLog;
  beforeAll(async () => {
    database = await openTestDatabase("fence");
    log = createPgEventLog({ db: database.db, schema: database.schema });
  });
  afterAll(() => database.close());

  async function setEpoch(datasetId: string, epoch: number): Promise<void> {
    await sql`INSERT INTO ${sql.id(database.schema, "maintenance_leases")}
        (dataset_id, epoch, holder, acquired_at, renewed_at) VALUES (${datasetId}, ${epoch}, 'test', now(), now())
      ON CONFLICT (dataset_id) DO UPDATE SET epoch = EXCLUDED.epoch, holder = EXCLUDED.holder`.execute(
      database.db,
    );
  }

  async function eventsOf(stream: string): Promise<number> {
    const { rows } = await sql<{ n: string | number }>`SELECT count(*) AS n FROM ${sql.id(
      database.schema,
      "events",
    )} WHERE stream_id = ${stream}`.execute(database.db);
    return Number(rows[0]?.n);
  }

  it("writes under the current epoch and refuses a stale one with LeaseLostError, writing nothing", async () => {
    const datasetId = `d-${randomUUID()}`;
    const stream = `s-${randomUUID()}`;
    await setEpoch(datasetId, 4);
    const ok = await log.append(stream, [heartbeat()], {
      expectedVersion: "no_stream",
      fence: { datasetId, epoch: 4 },
    });
    expect(ok.written).toHaveLength(1);

    await setEpoch(datasetId, 5);
    const error = await log
      .append(stream, [heartbeat(), heartbeat()], { expectedVersion: 1, fence: { datasetId, epoch: 4 } })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LeaseLostError);
    expect(isLeaseLostError(error)).toBe(true);
    expect(exitCodeFor(error)).toBe(3);
    expect((error as LeaseLostError).details).toMatchObject({
      datasetId,
      epoch: 4,
      currentEpoch: 5,
      holder: "test",
    });
    expect(await eventsOf(stream)).toBe(1);
    expect(await log.streamVersion(stream)).toBe(1);
    // The rolled-back attempt left the stream usable under the current epoch.
    const next = await log.append(stream, [heartbeat()], {
      expectedVersion: 1,
      fence: { datasetId, epoch: 5 },
    });
    expect(next.nextExpectedVersion).toBe(2);
  });

  it("refuses a fence for a dataset that has no lease recorded", async () => {
    const stream = `s-${randomUUID()}`;
    const error = await log
      .append(stream, [heartbeat()], {
        expectedVersion: "any",
        fence: { datasetId: `none-${randomUUID()}`, epoch: 1 },
      })
      .catch((e: unknown) => e);
    expect(isLeaseLostError(error)).toBe(true);
    expect((error as LeaseLostError).currentEpoch).toBeNull();
    expect(await eventsOf(stream)).toBe(0);
  });

  it("refuses an idempotent retry under a stale epoch too: a pass that lost its lease stops", async () => {
    const datasetId = `d-${randomUUID()}`;
    const stream = `s-${randomUUID()}`;
    const eventId = randomUUID();
    await setEpoch(datasetId, 1);
    await log.append(stream, [heartbeat(eventId)], {
      expectedVersion: "any",
      fence: { datasetId, epoch: 1 },
    });
    await setEpoch(datasetId, 2);
    const error = await log
      .append(stream, [heartbeat(eventId)], { expectedVersion: "any", fence: { datasetId, epoch: 1 } })
      .catch((e: unknown) => e);
    expect(isLeaseLostError(error)).toBe(true);
    expect(await eventsOf(stream)).toBe(1);
  });

  it("commits a fenced append with its transaction, and a stale one rolls its transaction back", async () => {
    const datasetId = `d-${randomUUID()}`;
    const [a, b] = [`s-${randomUUID()}`, `s-${randomUUID()}`];
    await setEpoch(datasetId, 3);
    // A transaction appends once (one position reservation per transaction): both streams' events
    // go through their own transactions here.
    await log.transaction((session) =>
      session.append(a, [heartbeat()], { expectedVersion: "no_stream", fence: { datasetId, epoch: 3 } }),
    );
    await log.transaction((session) =>
      session.append(b, [heartbeat()], { expectedVersion: "no_stream", fence: { datasetId, epoch: 3 } }),
    );
    expect([await eventsOf(a), await eventsOf(b)]).toEqual([1, 1]);

    const error = await log
      .transaction((session) =>
        session.append(b, [heartbeat(), heartbeat()], { expectedVersion: 1, fence: { datasetId, epoch: 2 } }),
      )
      .catch((e: unknown) => e);
    expect(isLeaseLostError(error)).toBe(true);
    expect([await eventsOf(a), await eventsOf(b)]).toEqual([1, 1]);
  });

  it("validates the fence before touching the database", async () => {
    for (const [fence, field] of [
      [{ datasetId: "", epoch: 1 }, "fence.datasetId"],
      [{ datasetId: "d", epoch: 0 }, "fence.epoch"],
      [{ datasetId: "d", epoch: 1.5 }, "fence.epoch"],
    ] as const) {
      const error = await log
        .append(`s-${randomUUID()}`, [heartbeat()], { expectedVersion: "any", fence })
        .catch((e: unknown) => e);
      expect(isValidationError(error)).toBe(true);
      expect((error as ValidationError).field).toBe(field);
    }
  });

  it("adds the leases table to an install made before it, leaving the log alone", async () => {
    const old = await openTestDatabase("fence-upgrade", { migrate: false });
    try {
      const before = MIGRATIONS.findIndex((m) => m.name === "0005_maintenance_leases");
      await migrateToLatest(old.db, old.schema, MIGRATIONS.slice(0, before));
      await appendBefore0008(old.db, old.schema, "s-old", [heartbeat()]);
      const oldLog = createPgEventLog({ db: old.db, schema: old.schema });
      const { applied } = await migrateToLatest(old.db, old.schema);
      expect(applied).toContain("0005_maintenance_leases");
      expect(await oldLog.readStream("s-old")).toHaveLength(1);
      const { rows } = await sql<{ n: string | number }>`SELECT count(*) AS n FROM ${sql.id(
        old.schema,
        "maintenance_leases",
      )}`.execute(old.db);
      expect(Number(rows[0]?.n)).toBe(0);
      const error = await oldLog
        .append("s-old", [heartbeat()], { expectedVersion: 1, fence: { datasetId: "d", epoch: 1 } })
        .catch((e: unknown) => e);
      expect(isLeaseLostError(error)).toBe(true);
    } finally {
      await old.close();
    }
  });
});
