import { randomUUID } from "node:crypto";
import type { PGlite } from "@electric-sql/pglite";
import { sql } from "kysely";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Database, openDatabase } from "../../src/adapters/postgres/database.js";
import type { InlineProjection } from "../../src/adapters/postgres/inline-projection.js";
import { createPgEventLog, type PgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import {
  ConcurrencyError,
  isLeaseLostError,
  type LeaseLostError,
  OneAppendPerTransactionError,
} from "../../src/errors.js";
import type { NewEvent } from "../../src/events/envelope.js";
import { BACKEND, openTestDatabase, SERVER_URL } from "../support/database.js";

type TestDb = Awaited<ReturnType<typeof openTestDatabase>>;
const heartbeat = (eventId?: string): NewEvent => ({
  type: "RunHeartbeat",
  data: { runId: "r1" },
  ...(eventId ? { eventId } : {}),
});

/**
 * A second connection to the test schema whose every statement sent to the server is counted
 * (BEGIN and COMMIT included: kysely sends them as statements).
 */
async function countingDatabase(
  database: TestDb,
): Promise<{ ledger: Database; sent: string[]; close(): Promise<void> }> {
  const sent: string[] = [];
  if (BACKEND === "pglite") {
    const pglite = (database as unknown as { pglite: PGlite }).pglite;
    const counted = {
      query: ((text: string, params?: unknown[]) => {
        sent.push(text);
        return pglite.query(text, params);
      }) as PGlite["query"],
      close: () => Promise.resolve(),
      waitReady: pglite.waitReady,
    };
    const db = await openDatabase(counted, { schema: database.schema });
    return { ledger: db, sent, close: () => db.close() };
  }
  const pool = new pg.Pool({ connectionString: SERVER_URL, max: 2 });
  const db = await openDatabase(
    {
      connect: async () => {
        const client = await pool.connect();
        return {
          query: (text: string, params: unknown[]) => {
            sent.push(text);
            return client.query(text, params);
          },
          release: () => client.release(),
        };
      },
      end: async () => {},
    } as unknown as pg.Pool,
    { schema: database.schema },
  );
  return {
    ledger: db,
    sent,
    async close() {
      await db.close();
      await pool.end();
    },
  };
}

describe(`appends through append_events (one round trip) on ${BACKEND}`, () => {
  let database: TestDb;
  let log: PgEventLog;
  const fn = () => sql.id(database.schema, "append_events");
  beforeAll(async () => {
    database = await openTestDatabase("one-trip", { poolSize: 20 });
    log = createPgEventLog({ db: database.db, schema: database.schema });
  });
  afterAll(() => database.close());

  async function stored(stream: string): Promise<string[]> {
    const { rows } = await sql<{ event_id: string }>`
      SELECT event_id FROM ${sql.id(database.schema, "events")} WHERE stream_id = ${stream}
      ORDER BY stream_version`.execute(database.db);
    return rows.map((r) => r.event_id);
  }

  async function setEpoch(datasetId: string, epoch: number): Promise<void> {
    await sql`INSERT INTO ${sql.id(database.schema, "maintenance_leases")}
        (dataset_id, epoch, holder, acquired_at, renewed_at) VALUES (${datasetId}, ${epoch}, 'pass-b', now(), now())
      ON CONFLICT (dataset_id) DO UPDATE SET epoch = EXCLUDED.epoch, holder = EXCLUDED.holder`.execute(
      database.db,
    );
  }

  it("sends one statement per append without inline projections, and BEGIN + 1 + projections + COMMIT with them", async () => {
    const counting = await countingDatabase(database);
    try {
      const plain = createPgEventLog({ db: counting.ledger.db, schema: database.schema });
      const s = `s-${randomUUID()}`;
      await plain.append(s, [heartbeat()], { expectedVersion: "no_stream" });
      await plain.append(s, [heartbeat(randomUUID()), heartbeat()], { expectedVersion: 1 });
      await plain.append(s, [heartbeat()], { expectedVersion: "any" });
      // Nothing to look up: one INSERT … SELECT; a caller-chosen id: one call of append_events.
      expect(
        counting.sent.map((q) =>
          q.includes("append_events")
            ? "function"
            : /^WITH s AS[\s\S]*INSERT INTO/.test(q.trim())
              ? "statement"
              : q,
        ),
      ).toEqual(["statement", "function", "statement"]);

      counting.sent.length = 0;
      const touched: InlineProjection = {
        name: "touched",
        apply: async (trx, events) => {
          await sql`SELECT ${events.length}::integer AS n`.execute(trx);
        },
      };
      const projected = createPgEventLog({
        db: counting.ledger.db,
        schema: database.schema,
        projections: [touched],
      });
      await projected.append(s, [heartbeat()], { expectedVersion: 4 });
      expect(counting.sent.map((q) => q.trim().split(/\s+/)[0]?.toLowerCase())).toEqual([
        "begin",
        "select",
        "select",
        "commit",
      ]);
      expect(await stored(s)).toHaveLength(5);
    } finally {
      await counting.close();
    }
  });

  it("reports a version conflict and a lost lease as outcomes: nothing is written", async () => {
    const s = `s-${randomUUID()}`;
    await log.append(s, [heartbeat()], { expectedVersion: "no_stream" });
    const call = (expected: number, fenceDataset: string | null, fenceEpoch: number | null) =>
      sql<{ outcome: string; next_version: string | number; lease_epoch: unknown; lease_holder: unknown }>`
        SELECT outcome, next_version, lease_epoch, lease_holder FROM ${fn()}(
          ${s}::text, ${expected}::bigint, ${[randomUUID()]}::uuid[], ${[]}::uuid[], ${["RunHeartbeat"]}::text[],
          ${[1]}::integer[], ${[JSON.stringify({ runId: "r1" })]}::text[],
          ${[JSON.stringify({ correlationId: null, causationId: null, actor: null })]}::text[],
          now(), ${fenceDataset}::text, ${fenceEpoch}::bigint)`
        .execute(database.db)
        .then((r) => r.rows[0]);
    for (const expected of [0, 2, 5]) {
      expect(await call(expected, null, null)).toMatchObject({ outcome: "conflict" });
      expect(Number((await call(expected, null, null))?.next_version)).toBe(1);
    }
    const datasetId = `d-${randomUUID()}`;
    await setEpoch(datasetId, 8);
    const lost = await call(1, datasetId, 7);
    expect(lost?.outcome).toBe("lease_lost");
    expect([Number(lost?.lease_epoch), lost?.lease_holder]).toEqual([8, "pass-b"]);
    expect((await call(1, `none-${randomUUID()}`, 1))?.outcome).toBe("lease_lost");
    expect(await stored(s)).toHaveLength(1);
    expect(await log.streamVersion(s)).toBe(1);

    const ok = await call(1, datasetId, 8);
    expect(ok).toMatchObject({ outcome: "ok" });
    expect(Number(ok?.next_version)).toBe(2);
  });

  it("maps the outcomes to ConcurrencyError and LeaseLostError, and a conflict leaves the caller's transaction usable", async () => {
    const s = `s-${randomUUID()}`;
    await log.append(s, [heartbeat()], { expectedVersion: "no_stream" });
    const conflict = await log.append(s, [heartbeat()], { expectedVersion: 3 }).catch((e: unknown) => e);
    expect(conflict).toBeInstanceOf(ConcurrencyError);
    expect((conflict as ConcurrencyError).actual).toBe(1);

    const datasetId = `d-${randomUUID()}`;
    await setEpoch(datasetId, 2);
    const lost = await log
      .append(s, [heartbeat()], { expectedVersion: 1, fence: { datasetId, epoch: 1 } })
      .catch((e: unknown) => e);
    expect(isLeaseLostError(lost)).toBe(true);
    expect((lost as LeaseLostError).details).toMatchObject({ currentEpoch: 2, holder: "pass-b" });

    // The function answers instead of raising, so the transaction is not aborted: it can go on
    // reading (a raised error would make every later statement fail on PostgreSQL).
    const seen = await log.transaction(async (session) => {
      const error = await session.append(s, [heartbeat()], { expectedVersion: 0 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConcurrencyError);
      return session.readStream(s);
    });
    expect(seen).toHaveLength(1);
    expect(await stored(s)).toHaveLength(1);
  });

  it("stores an id given several times in one batch once, and an id stored before not at all", async () => {
    const s = `s-${randomUUID()}`;
    const [a, b] = [randomUUID(), randomUUID()];
    const applied: string[] = [];
    const recording: InlineProjection = {
      name: "recording",
      apply: async (_trx, events) => {
        applied.push(...events.map((e) => e.eventId));
      },
    };
    const projected = createPgEventLog({
      db: database.db,
      schema: database.schema,
      projections: [recording],
    });
    const first = await projected.append(s, [heartbeat(a), heartbeat(a), heartbeat(a)], {
      expectedVersion: "no_stream",
    });
    expect(first.written.map((e) => e.eventId)).toEqual([a]);
    expect(first.duplicates).toBe(2);
    expect(new Set(first.positions).size).toBe(1);
    expect(first.nextExpectedVersion).toBe(1);

    // Plain log: ids stored before, twice in the batch, and a new one twice.
    const again = await log.append(s, [heartbeat(b), heartbeat(a), heartbeat(b), heartbeat(a)], {
      expectedVersion: 1,
    });
    expect(again.written.map((e) => [e.eventId, e.streamVersion])).toEqual([[b, 2]]);
    expect(again.positions[1]).toBe(first.positions[0]);
    expect(again.positions[3]).toBe(first.positions[0]);
    expect(again.positions[0]).toBe(again.positions[2]);
    expect(again.duplicates).toBe(3);
    expect(await stored(s)).toEqual([a, b]);
    expect(applied).toEqual([a]);

    // Everything stored already: nothing reserved, the version returned, the projection not run.
    const retry = await projected.append(s, [heartbeat(a), heartbeat(b)], { expectedVersion: "no_stream" });
    expect(retry).toMatchObject({ nextExpectedVersion: 2, written: [], duplicates: 2 });
    expect(retry.positions).toEqual([first.positions[0], again.positions[0]]);
    expect(applied).toEqual([a]);
  });

  it("appends in the transaction of a log opened on one, once", async () => {
    const [s1, s2] = [`s-${randomUUID()}`, `s-${randomUUID()}`];
    const error = await database.db
      .transaction()
      .execute(async (trx) => {
        const inner = createPgEventLog({ db: trx, schema: database.schema });
        await inner.append(s1, [heartbeat()], { expectedVersion: "no_stream" });
        expect(await inner.streamVersion(s1)).toBe(1);
        await inner.append(s2, [heartbeat()], { expectedVersion: "no_stream" });
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OneAppendPerTransactionError);
    expect([await log.streamVersion(s1), await log.streamVersion(s2)]).toEqual([0, 0]);
  });

  it("under concurrent appends of one caller-chosen id, stores it once and every caller gets its position", async () => {
    const s = `s-${randomUUID()}`;
    const id = randomUUID();
    const results = await Promise.all(
      Array.from({ length: 12 }, () => log.append(s, [heartbeat(id)], { expectedVersion: "any" })),
    );
    expect(await stored(s)).toEqual([id]);
    expect(new Set(results.map((r) => r.positions[0])).size).toBe(1);
    expect(results.filter((r) => r.written.length === 1)).toHaveLength(1);
  });

  it("under concurrent creations of one stream, lets exactly one through", async () => {
    const s = `s-${randomUUID()}`;
    const outcomes = await Promise.allSettled(
      Array.from({ length: 12 }, () => log.append(s, [heartbeat()], { expectedVersion: "no_stream" })),
    );
    const ok = outcomes.filter((o) => o.status === "fulfilled");
    const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === "rejected");
    expect(ok).toHaveLength(1);
    expect(refused.every((o) => o.reason instanceof ConcurrencyError)).toBe(true);
    expect(await stored(s)).toHaveLength(1);
    expect(await log.streamVersion(s)).toBe(1);
  });
});
