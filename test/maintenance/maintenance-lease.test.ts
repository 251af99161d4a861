import { randomUUID } from "node:crypto";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { type Database, openDatabase } from "../../src/adapters/postgres/database.js";
import {
  type MaintenanceLease,
  withMaintenanceLease,
} from "../../src/adapters/postgres/maintenance-lease.js";
import { createPgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import { isLeaseLostError, isShardledgerError, type LeaseLostError } from "../../src/errors.js";
import type { AppendFence } from "../../src/events/event-log.js";
import { type Ledger, openLedger } from "../../src/ledger/open-ledger.js";
import { RunExecutor } from "../../src/ledger/run-executor.js";
import type { RunCommand } from "../../src/machines/run-commands.js";
import type { RunState } from "../../src/machines/run-state.js";
import { BACKEND, openTestDatabase } from "../support/database.js";
import { eventually } from "../support/eventually.js";
import { lockHolderPid, onServer } from "../support/maintenance-lock.js";

type TestDb = Awaited<ReturnType<typeof openTestDatabase>>;
/** The ledger's internal hooks the maintenance service uses. */
type Internal = Ledger & {
  executeRunCommand(command: RunCommand, context?: { fence?: AppendFence }): Promise<unknown>;
  loadRunState(runId: string): Promise<RunState>;
};

/** A ledger on the test database's schema (the shared PGlite instance, or the server URL). */
async function ledgerOn(database: TestDb): Promise<Internal> {
  const shared = (database as unknown as { pglite?: Parameters<typeof openLedger>[0]["database"] }).pglite;
  return (await openLedger({
    database: BACKEND === "postgres" ? database.url : (shared as NonNullable<typeof shared>),
    schema: database.schema,
    cleanupAfterPublish: false,
  })) as Internal;
}

/**
 * Ends the backend `pid` and waits until it has exited, its locks released: without the wait (the
 * server only signals the backend) a loaded machine let the next acquire meet the lock still held,
 * and hand the dying connection to the next test.
 */
function terminate(pid: number): Promise<void> {
  return onServer(async (client) => {
    const { rows } = await client.query<{ gone: boolean }>("SELECT pg_terminate_backend($1, 30000) AS gone", [
      pid,
    ]);
    if (!rows[0]?.gone) throw new Error(`backend ${pid} did not exit within 30 s`);
  });
}

/** Resolves once the callback runs; `release()` lets the holder return. */
function hold() {
  let entered!: (lease: MaintenanceLease) => void;
  const acquired = new Promise<MaintenanceLease>((r) => {
    entered = r;
  });
  let release!: () => void;
  const released = new Promise<void>((r) => {
    release = r;
  });
  return {
    acquired,
    release,
    fn: async (lease: MaintenanceLease) => {
      entered(lease);
      await released;
    },
  };
}

async function count(database: Database, query: "events" | "failed"): Promise<number> {
  const t = (name: string) => sql.id(database.schema, name);
  const { rows } = await (query === "events"
    ? sql<{ n: string | number }>`SELECT count(*) AS n FROM ${t("events")}`
    : sql<{ n: string | number }>`SELECT count(*) AS n FROM ${t("runs")} WHERE status = 'FAILED'`
  ).execute(database.db);
  return Number(rows[0]?.n);
}

async function storedEpoch(database: Database, datasetId: string): Promise<number | null> {
  const { rows } = await sql<{ epoch: string | number }>`SELECT epoch FROM ${sql.id(
    database.schema,
    "maintenance_leases",
  )} WHERE dataset_id = ${datasetId}`.execute(database.db);
  return rows[0] ? Number(rows[0].epoch) : null;
}

describe(`maintenance leases on ${BACKEND}`, () => {
  let database: TestDb;
  let ledger: Internal;
  beforeAll(async () => {
    database = await openTestDatabase("lease");
    ledger = await ledgerOn(database);
  });
  afterAll(async () => {
    await ledger.close();
    await database.close();
  });

  async function startedRun(): Promise<{ datasetId: string; runId: string }> {
    const datasetId = `d-${randomUUID().slice(0, 8)}`;
    await ledger.createDataset({ datasetId, root: `file:///lake/${datasetId}` });
    const { runId } = await ledger.startRun({ datasetId, numShards: 1 });
    return { datasetId, runId };
  }

  it("bumps the epoch on every acquire and records the holder", async () => {
    const datasetId = `d-${randomUUID()}`;
    const first = await withMaintenanceLease(database, datasetId, async (lease) => lease, {
      holder: "pass-a",
    });
    const second = await withMaintenanceLease(database, datasetId, async (lease) => lease, { wait: false });
    expect(first.epoch).toBe(1);
    expect(second.epoch).toBe(2);
    expect(first.fence).toEqual({ datasetId, epoch: 1 });
    expect(second.holder).toMatch(/\/pid-\d+\//);
    const { rows } = await sql<{ holder: string }>`SELECT holder FROM ${sql.id(
      database.schema,
      "maintenance_leases",
    )} WHERE dataset_id = ${datasetId}`.execute(database.db);
    expect(rows).toEqual([{ holder: second.holder }]);
  });

  it("appends under the current epoch; once another acquire bumps it, refuses and writes nothing", async () => {
    const { datasetId, runId } = await startedRun();
    await withMaintenanceLease(database, datasetId, async (lease) => {
      await lease.assertHeld();
      await ledger.executeRunCommand({ type: "heartbeat", runId }, { fence: lease.fence });

      // What a second pass's acquire does to the stored epoch.
      await sql`UPDATE ${sql.id(database.schema, "maintenance_leases")} SET epoch = epoch + 1
        WHERE dataset_id = ${datasetId}`.execute(database.db);
      const [events, failed] = [await count(database, "events"), await count(database, "failed")];
      const error = await ledger
        .executeRunCommand(
          { type: "fail", runId, cause: "writer_abort", reason: "x" },
          { fence: lease.fence },
        )
        .catch((e: unknown) => e);
      expect(isLeaseLostError(error)).toBe(true);
      expect((error as LeaseLostError).currentEpoch).toBe(lease.epoch + 1);
      expect(await count(database, "events")).toBe(events);
      expect(await count(database, "failed")).toBe(failed);
      expect((await ledger.loadRunState(runId)).status).toBe("STARTED");

      const lost = await lease.assertHeld().catch((e: unknown) => e);
      expect(isLeaseLostError(lost)).toBe(true);
      // Lost is final, even if the epoch came back.
      await sql`UPDATE ${sql.id(database.schema, "maintenance_leases")} SET epoch = ${lease.epoch}
        WHERE dataset_id = ${datasetId}`.execute(database.db);
      expect(isLeaseLostError(await lease.assertHeld().catch((e: unknown) => e))).toBe(true);
    });
  });

  it("does not retry a lost lease in the executor's conflict loop", async () => {
    const { datasetId, runId } = await startedRun();
    const log = createPgEventLog({ db: database.db, schema: database.schema });
    const append = vi.spyOn(log, "append");
    const executor = new RunExecutor(log, () => new Date(), {});
    const error = await executor
      .execute({ type: "heartbeat", runId }, { fence: { datasetId, epoch: 99 } })
      .catch((e: unknown) => e);
    expect(isLeaseLostError(error)).toBe(true);
    expect(append).toHaveBeenCalledTimes(1);
  });

  it("refuses a concurrent acquire with LOCKED (wait: false) and leaves the epoch alone", async () => {
    const datasetId = `d-${randomUUID()}`;
    // On the server the second pass uses a pool of its own, as another process would.
    const other =
      BACKEND === "postgres" ? await openDatabase(database.url, { schema: database.schema }) : database;
    const first = hold();
    const holding = withMaintenanceLease(database, datasetId, first.fn);
    try {
      const lease = await first.acquired;
      const error = await withMaintenanceLease(other, datasetId, async () => "ran", { wait: false }).catch(
        (e: unknown) => e,
      );
      expect(isShardledgerError(error) && error.code).toBe("LOCKED");
      // It names the pass that holds the lease and says what to do.
      expect(error).toMatchObject({
        details: { lock: `maintenance:${datasetId}`, datasetId, holder: lease.holder },
      });
      expect((error as Error).message).toContain(lease.holder);
      expect((error as Error).message).toMatch(/try again later/);
      expect(await storedEpoch(database, datasetId)).toBe(lease.epoch);
      await lease.assertHeld();
    } finally {
      first.release();
      await holding;
      if (other !== database) await other.close();
    }
  });

  it("makes a lease that escaped its callback authorise nothing", async () => {
    const lease = await withMaintenanceLease(database, `d-${randomUUID()}`, async (l) => l);
    expect(isLeaseLostError(await lease.assertHeld().catch((e: unknown) => e))).toBe(true);
  });
});

describe.runIf(BACKEND === "postgres")("a maintenance lease whose lock connection dies (server)", () => {
  let database: TestDb;
  let ledger: Internal;
  beforeAll(async () => {
    database = await openTestDatabase("lease-kill");
    ledger = await ledgerOn(database);
  });
  afterAll(async () => {
    await ledger.close();
    await database.close();
  });

  it("fences off the first pass once a second one acquires: no append, assertHeld throws", async () => {
    const datasetId = `d-${randomUUID().slice(0, 8)}`;
    await ledger.createDataset({ datasetId, root: `file:///lake/${datasetId}` });
    const { runId } = await ledger.startRun({ datasetId, numShards: 1 });
    const other = await openDatabase(database.url, { schema: database.schema });
    let secondEpoch = 0;
    const outcome = await withMaintenanceLease(
      database,
      datasetId,
      async (lease) => {
        await lease.assertHeld();
        const pid = await lockHolderPid(database.schema, datasetId);
        expect(pid).not.toBeNull();
        await terminate(pid as number);
        // The server ended the session and its lock: a second pass gets it.
        secondEpoch = await withMaintenanceLease(other, datasetId, async (second) => second.epoch, {
          wait: false,
        });
        const events = await count(database, "events");
        const error = await ledger
          .executeRunCommand(
            { type: "fail", runId, cause: "writer_abort", reason: "x" },
            { fence: lease.fence },
          )
          .catch((e: unknown) => e);
        expect(isLeaseLostError(error)).toBe(true);
        expect(await count(database, "events")).toBe(events);
        expect((await ledger.loadRunState(runId)).status).toBe("STARTED");
        const lost = await lease.assertHeld().catch((e: unknown) => e);
        expect(isLeaseLostError(lost)).toBe(true);
        throw lost;
      },
      { wait: false },
    ).catch((e: unknown) => e);
    await other.close();
    expect(secondEpoch).toBeGreaterThan(0);
    // The pass ends with the lost lease, not with the dead connection's unlock failure.
    expect(isLeaseLostError(outcome)).toBe(true);
  });

  it("detects a dead lock connection in assertHeld even when no other pass acquired", async () => {
    const datasetId = `d-${randomUUID()}`;
    const outcome = await withMaintenanceLease(database, datasetId, async (lease) => {
      await terminate((await lockHolderPid(database.schema, datasetId)) as number);
      const error = await lease.assertHeld().catch((e: unknown) => e);
      expect((error as LeaseLostError).details.reason).toMatch(
        /connection holding the maintenance lock is gone/,
      );
      return error;
    });
    expect(isLeaseLostError(outcome)).toBe(true);
    // The pool replaced the dead connection: the next pass acquires as usual.
    const next = await withMaintenanceLease(database, datasetId, async (lease) => {
      await lease.assertHeld();
      return lease.epoch;
    });
    expect(next).toBe(2);
  });

  it("makes an acquiring pass wait for a fenced append in flight, which commits under its epoch", async () => {
    const datasetId = `d-${randomUUID()}`;
    const stream = `s-${randomUUID()}`;
    const log = createPgEventLog({ db: database.db, schema: database.schema });
    const other = await openDatabase(database.url, { schema: database.schema });
    let finishAppend!: () => void;
    const appendMayCommit = new Promise<void>((r) => {
      finishAppend = r;
    });
    const first = hold();
    const holding = withMaintenanceLease(database, datasetId, async (lease) => {
      await first.fn(lease);
    });
    const lease = await first.acquired;
    let appended!: () => void;
    const isAppended = new Promise<void>((r) => {
      appended = r;
    });
    const inFlight = log.transaction(async (session) => {
      await session.append(stream, [{ type: "RunHeartbeat", data: { runId: "r1" } }], {
        expectedVersion: "no_stream",
        fence: lease.fence,
      });
      appended();
      await appendMayCommit;
    });
    await isAppended;
    await terminate((await lockHolderPid(database.schema, datasetId)) as number);
    const second = withMaintenanceLease(other, datasetId, async (l) => l.epoch, { wait: false });
    // The second pass holds the advisory lock and its epoch bump waits on our row lock.
    const waiting = await eventually(
      () =>
        onServer(async (client) => {
          const { rows } = await client.query<{ n: string }>(
            `SELECT count(*) AS n FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE $1`,
            [`%"${database.schema}"."maintenance_leases"%`],
          );
          return Number(rows[0]?.n);
        }),
      (n) => n > 0,
    );
    expect(waiting).toBe(1);
    finishAppend();
    await inFlight;
    expect(await second).toBe(lease.epoch + 1);
    expect(await log.streamVersion(stream)).toBe(1);
    const late = await log
      .append(stream, [{ type: "RunHeartbeat", data: { runId: "r1" } }], {
        expectedVersion: 1,
        fence: lease.fence,
      })
      .catch((e: unknown) => e);
    expect(isLeaseLostError(late)).toBe(true);
    first.release();
    await holding;
    await other.close();
  });

  it("answers assertHeld while the pass's own fenced append is still open (it does not wait for itself)", async () => {
    const datasetId = `d-${randomUUID()}`;
    const stream = `s-${randomUUID()}`;
    const log = createPgEventLog({ db: database.db, schema: database.schema });
    await withMaintenanceLease(database, datasetId, (lease) =>
      log.transaction(async (session) => {
        await session.append(stream, [{ type: "RunHeartbeat", data: { runId: "r1" } }], {
          expectedVersion: "no_stream",
          fence: lease.fence,
        });
        await lease.assertHeld();
      }),
    );
    expect(await log.streamVersion(stream)).toBe(1);
  });
});
