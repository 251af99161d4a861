import { randomUUID } from "node:crypto";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import type { InlineProjection } from "../../src/adapters/postgres/inline-projection.js";
import { createPgEventLog, type PgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import {
  processSubscriptionBatch,
  subscriptionCheckpoint,
} from "../../src/adapters/postgres/subscription.js";
import {
  ConcurrencyError,
  isConcurrencyError,
  isValidationError,
  OneAppendPerTransactionError,
  type ValidationError,
} from "../../src/errors.js";
import type { EventMetadata, NewEvent } from "../../src/events/envelope.js";
import { defaultCatalogue } from "../../src/events/event-catalogue.js";
import { BACKEND, openTestDatabase } from "../support/database.js";
import { eventually } from "../support/eventually.js";

type TestDb = Awaited<ReturnType<typeof openTestDatabase>>;
const heartbeat = (runId: string, eventId?: string): NewEvent => ({
  type: "RunHeartbeat",
  data: { runId },
  ...(eventId ? { eventId } : {}),
});

async function countEvents(log: PgEventLog): Promise<number> {
  const { rows } = await sql<{
    n: string | number;
  }>`SELECT count(*) AS n FROM ${sql.id(log.schema, "events")}`.execute(log.db);
  return Number(rows[0]?.n);
}

describe(`event log contract on ${BACKEND}`, () => {
  let database: TestDb;
  let log: PgEventLog;
  beforeAll(async () => {
    database = await openTestDatabase("contract");
    log = createPgEventLog({ db: database.db, schema: database.schema });
  });
  afterAll(() => database.close());

  it("numbers stream versions densely from 1 and global positions in increasing order", async () => {
    const s = `s-${randomUUID()}`;
    const a = await log.append(s, [heartbeat("r1"), heartbeat("r1")], { expectedVersion: "no_stream" });
    const b = await log.append(s, [heartbeat("r1")], { expectedVersion: 2 });
    expect(a.nextExpectedVersion).toBe(2);
    expect(b.nextExpectedVersion).toBe(3);
    const events = await log.readStream(s);
    expect(events.map((e) => e.streamVersion)).toEqual([1, 2, 3]);
    const positions = events.map((e) => e.globalPosition);
    expect(positions).toEqual([...positions].sort((x, y) => x - y));
    expect(new Set(positions).size).toBe(3);
    expect(await log.readStream(s, { fromVersion: 2 })).toHaveLength(2);
    expect(await log.streamVersion(s)).toBe(3);
    expect(await log.streamVersion(`missing-${randomUUID()}`)).toBe(0);
  });

  it("reads on past a hole that ends what it read before (a rolled-back append's position)", async () => {
    const reader = createPgEventLog({ db: database.db, schema: database.schema });
    const s = `hole-${randomUUID()}`;
    const first = (await log.append(s, [heartbeat("a")], { expectedVersion: "any" })).positions[0] as number;
    // Takes a position and rolls back: the position is never used.
    const rolledBack = await log
      .transaction(async (session) => {
        await session.append(s, [heartbeat("rolled-back")], { expectedVersion: "any" });
        throw new Error("roll back");
      })
      .catch((e: unknown) => e);
    expect(String(rolledBack)).toContain("roll back");
    // The reader's horizon now ends in the hole (eventually: another file's open transaction on
    // the same server may hold readers back a while).
    await eventually(
      () => reader.readAll({ after: first - 1 }),
      (page) => page.some((e) => e.globalPosition === first),
    );
    const later = (await log.append(s, [heartbeat("b")], { expectedVersion: "any" })).positions[0] as number;
    const page = await eventually(
      () => reader.readAll({ after: first }),
      (events) => events.length > 0,
    );
    expect(page.map((e) => [e.globalPosition, e.data])).toEqual([[later, { runId: "b" }]]);
  });

  it("stores data and metadata exactly, whatever characters they hold, on every append path", async () => {
    // Quotes, backslashes, control characters, non-ASCII and astral characters: each path sends
    // them differently (one event as plain parameters; several as one JSON array per column,
    // through the one-statement append or through append_events when ids are the caller's).
    const awkward = (i: number) => `#${i} "quoted" \\back\\slash\\ \n\ttab {"json":[1]} é 漢字 🚀 \\u0041`;
    const failed = (runId: string, i: number, eventId?: string): NewEvent => ({
      type: "AttemptFailed",
      data: { runId, shard: i, attempt: 1, taskAttemptId: null, url: null, error: awkward(i) },
      metadata: { actor: `actor "${i}" \\ ü`, correlationId: `c\\${i}`, causationId: null },
      ...(eventId ? { eventId } : {}),
    });
    const paths: [string, (s: string) => NewEvent[]][] = [
      ["one event", (s) => [failed(s, 0)]],
      ["several events", (s) => [0, 1, 2].map((i) => failed(s, i))],
      ["several events with caller ids", (s) => [0, 1, 2].map((i) => failed(s, i, randomUUID()))],
    ];
    for (const [name, events] of paths) {
      const s = `s-${randomUUID()}`;
      const sent = events(s);
      await log.append(s, sent, { expectedVersion: "no_stream" });
      const read = await log.readStream(s);
      expect(
        read.map((e) => e.data),
        name,
      ).toEqual(sent.map((e) => e.data));
      expect(
        read.map((e) => e.metadata),
        name,
      ).toEqual(sent.map((e) => ({ causationId: null, ...e.metadata })));
    }
  });

  it("refuses a wrong expected version with a ConcurrencyError and writes nothing", async () => {
    const s = `s-${randomUUID()}`;
    await log.append(s, [heartbeat("r1")], { expectedVersion: "no_stream" });
    const before = await countEvents(log);
    const attempts: [number | "no_stream", number][] = [
      [0, 1],
      [2, 1],
      ["no_stream", 1],
    ];
    for (const [expectedVersion, actual] of attempts) {
      const error = await log
        .append(s, [heartbeat("r1"), heartbeat("r1")], { expectedVersion })
        .catch((e) => e);
      expect(error).toBeInstanceOf(ConcurrencyError);
      expect(isConcurrencyError(error)).toBe(true);
      expect((error as ConcurrencyError).actual).toBe(actual);
    }
    expect(await countEvents(log)).toBe(before);
    expect(await log.streamVersion(s)).toBe(1);
    expect(await log.readStream(s)).toHaveLength(1);
  });

  it("treats an already stored eventId as a no-op returning the stored position", async () => {
    const s = `s-${randomUUID()}`;
    const id = randomUUID();
    const first = await log.append(s, [heartbeat("r1", id)], { expectedVersion: "no_stream" });
    const before = await countEvents(log);
    // The retry states an expected version that no longer holds: still a no-op, not a conflict.
    const retry = await log.append(s, [heartbeat("r1", id)], { expectedVersion: "no_stream" });
    expect(retry.positions).toEqual(first.positions);
    expect(retry.written).toHaveLength(0);
    expect(retry.duplicates).toBe(1);
    expect(await countEvents(log)).toBe(before);
  });

  it("writes only the new events of a batch that mixes stored and new ids, and dedupes within a batch", async () => {
    const s = `s-${randomUUID()}`;
    const [a, b, c] = [randomUUID(), randomUUID(), randomUUID()];
    const first = await log.append(s, [heartbeat("r1", a)], { expectedVersion: "no_stream" });
    const mixed = await log.append(
      s,
      [heartbeat("r1", a), heartbeat("r1", b), heartbeat("r1", b), heartbeat("r1", c)],
      {
        expectedVersion: 1,
      },
    );
    expect(mixed.written.map((e) => e.eventId)).toEqual([b, c]);
    expect(mixed.duplicates).toBe(2);
    expect(mixed.positions[0]).toBe(first.positions[0]);
    expect(mixed.positions[1]).toBe(mixed.positions[2]);
    expect(mixed.positions[3]).toBeGreaterThan(mixed.positions[1] as number);
    expect(mixed.nextExpectedVersion).toBe(3);
    expect((await log.readStream(s)).map((e) => e.eventId)).toEqual([a, b, c]);
  });

  it("refuses invalid data naming the event type and field, before anything is written", async () => {
    const s = `s-${randomUUID()}`;
    const before = await countEvents(log);
    const cases: [NewEvent, string][] = [
      [
        { type: "RunStarted", data: { runId: "r1", datasetId: "d1", numShards: 0 } },
        "RunStarted.data.numShards",
      ],
      [
        { type: "RunStarted", data: { runId: "../x", datasetId: "d1", numShards: 2 } },
        "RunStarted.data.runId",
      ],
      [
        {
          type: "AttemptSucceeded",
          data: { runId: "r", shard: 0, attempt: 0, taskAttemptId: "-1", url: null },
        },
        "AttemptSucceeded.data.taskAttemptId",
      ],
      [{ type: "RunHeartbeat", data: { runId: "r", extra: 1 } }, "RunHeartbeat.data"],
      [{ type: "NoSuchEvent", data: {} }, "type"],
      [{ type: "RunHeartbeat", data: { runId: "r" }, eventId: "not-a-uuid" }, "events[1].eventId"],
      [
        { type: "RunHeartbeat", data: { runId: "r" }, metadata: { actor: 5 as unknown as string } },
        "RunHeartbeat.metadata.actor",
      ],
      // The plain check in front of the metadata schema must refuse whatever the schema refuses.
      [
        { type: "RunHeartbeat", data: { runId: "r" }, metadata: { actor: "a".repeat(257) } },
        "RunHeartbeat.metadata.actor",
      ],
      [
        {
          type: "RunHeartbeat",
          data: { runId: "r" },
          metadata: { actor: "a", tenant: "x" } as unknown as Partial<EventMetadata>,
        },
        "RunHeartbeat.metadata",
      ],
      [
        {
          type: "RunHeartbeat",
          data: { runId: "r" },
          metadata: "actor" as unknown as Partial<EventMetadata>,
        },
        "RunHeartbeat.metadata",
      ],
    ];
    for (const [event, field] of cases) {
      const error = await log.append(s, [heartbeat("ok"), event], { expectedVersion: "any" }).catch((e) => e);
      expect(isValidationError(error), `${field}: ${String(error)}`).toBe(true);
      expect((error as ValidationError).field).toBe(field);
      expect((error as Error).message).toContain(field);
    }
    expect(await countEvents(log)).toBe(before);
    expect(await log.streamVersion(s)).toBe(0);
  });

  it("upcasts an event stored at an old schema version when it is read", async () => {
    const catalogue = defaultCatalogue.with([
      {
        type: "TestRenamed",
        schemaVersion: 2,
        schema: z.strictObject({ name: z.string(), size: z.number() }),
        historicalSchemas: { 1: z.strictObject({ title: z.string() }) },
        upcasters: { 1: (d) => ({ name: (d as { title: string }).title, size: 0 }) },
      },
    ]);
    const v2log = createPgEventLog({ db: database.db, schema: database.schema, catalogue });
    const s = `s-${randomUUID()}`;
    await v2log.append(s, [{ type: "TestRenamed", schemaVersion: 1, data: { title: "old" } }], {
      expectedVersion: "no_stream",
    });
    await v2log.append(s, [{ type: "TestRenamed", data: { name: "new", size: 3 } }], { expectedVersion: 1 });
    const read = await v2log.readStream(s);
    expect(read.map((e) => [e.schemaVersion, e.data])).toEqual([
      [2, { name: "old", size: 0 }],
      [2, { name: "new", size: 3 }],
    ]);
    // The stored row keeps its original shape: upcasting never rewrites the log.
    const { rows } = await sql<{ data: unknown; schema_version: number }>`
      SELECT data, schema_version FROM ${sql.id(database.schema, "events")} WHERE stream_id = ${s} ORDER BY stream_version`.execute(
      database.db,
    );
    expect(rows[0]).toEqual({ data: { title: "old" }, schema_version: 1 });
    const all = await v2log.readAll({ after: (read[0]?.globalPosition ?? 1) - 1, limit: 1 });
    expect(all[0]?.data).toEqual({ name: "old", size: 0 });
  });

  it("reads the whole log in pages without gaps or repeats", async () => {
    const s = `s-${randomUUID()}`;
    await log.append(
      s,
      Array.from({ length: 25 }, () => heartbeat("page")),
      { expectedVersion: "no_stream" },
    );
    const seen: number[] = [];
    let after = 0;
    for (;;) {
      const page = await log.readAll({ after, limit: 7 });
      if (page.length === 0) break;
      seen.push(...page.map((e) => e.globalPosition));
      after = page.at(-1)?.globalPosition as number;
    }
    expect(seen).toEqual([...seen].sort((x, y) => x - y));
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen.length).toBe(await countEvents(log));
  });

  it("commits a transaction's append with the rest of the transaction, or not at all", async () => {
    const s = `s-${randomUUID()}`;
    const failed = await log
      .transaction(async (session) => {
        await session.append(s, [heartbeat("a"), heartbeat("a")], { expectedVersion: "no_stream" });
        throw new Error("the caller changed its mind");
      })
      .catch((e) => e);
    expect(String(failed)).toContain("changed its mind");
    expect(await log.streamVersion(s)).toBe(0);
    const seenInside = await log.transaction(async (session) => {
      await session.append(s, [heartbeat("a"), heartbeat("a")], { expectedVersion: "no_stream" });
      return (await session.readStream(s)).length;
    });
    expect(seenInside).toBe(2);
    expect(await log.streamVersion(s)).toBe(2);
  });

  it("refuses a second append in one transaction with a typed error, and the transaction stores nothing", async () => {
    const [s1, s2] = [`s-${randomUUID()}`, `s-${randomUUID()}`];
    const before = await countEvents(log);
    const failed = await log
      .transaction(async (session) => {
        await session.append(s1, [heartbeat("a")], { expectedVersion: "no_stream" });
        await session.append(s2, [heartbeat("b")], { expectedVersion: "no_stream" });
      })
      .catch((e) => e);
    expect(failed).toBeInstanceOf(OneAppendPerTransactionError);
    expect(isValidationError(failed)).toBe(true);
    expect((failed as OneAppendPerTransactionError).details).toMatchObject({ field: "append", streamId: s2 });
    expect(String(failed)).toContain("may append to the log once");
    expect([await log.streamVersion(s1), await log.streamVersion(s2)]).toEqual([0, 0]);
    expect(await countEvents(log)).toBe(before);

    // The same stream twice, and a second session over the same transaction, are refused alike.
    const again = await log
      .transaction(async (session) => {
        await session.append(s1, [heartbeat("a")], { expectedVersion: "any" });
        await session.append(s1, [heartbeat("a")], { expectedVersion: "any" });
      })
      .catch((e) => e);
    expect(again).toBeInstanceOf(OneAppendPerTransactionError);
    const twoSessions = await database.db
      .transaction()
      .execute(async (trx) => {
        await log.session(trx).append(s1, [heartbeat("a")], { expectedVersion: "any" });
        await createPgEventLog({ db: trx, schema: database.schema })
          .session(trx)
          .append(s2, [heartbeat("b")], { expectedVersion: "any" });
      })
      .catch((e) => e);
    expect(twoSessions).toBeInstanceOf(OneAppendPerTransactionError);
    expect([await log.streamVersion(s1), await log.streamVersion(s2)]).toEqual([0, 0]);
    expect(await countEvents(log)).toBe(before);
  });

  it("has the database refuse a second position reservation in one transaction", async () => {
    const s = `s-${randomUUID()}`;
    const reserve = sql`SELECT * FROM ${sql.id(database.schema, "reserve_positions")}(1)`;
    const raw = await database.db
      .transaction()
      .execute(async (trx) => {
        await reserve.execute(trx);
        await reserve.execute(trx);
      })
      .catch((e) => e);
    expect(String(raw)).toContain("may append to the log once");
    // An append after a reservation the session did not see is refused by the database, and
    // reported with the same typed error.
    const viaSession = await database.db
      .transaction()
      .execute(async (trx) => {
        await reserve.execute(trx);
        await log.session(trx).append(s, [heartbeat("x")], { expectedVersion: "any" });
      })
      .catch((e) => e);
    expect(viaSession).toBeInstanceOf(OneAppendPerTransactionError);
    expect(await log.streamVersion(s)).toBe(0);
  });

  it("refuses a transaction that writes before its first append (it would break read-all ordering)", async () => {
    const s = `s-${randomUUID()}`;
    await sql`CREATE TABLE IF NOT EXISTS ${sql.id(database.schema, "scratch")} (n int)`.execute(database.db);
    const error = await database.db
      .transaction()
      .execute(async (trx) => {
        await sql`INSERT INTO ${sql.id(database.schema, "scratch")} VALUES (1)`.execute(trx);
        await log.session(trx).append(s, [heartbeat("x")], { expectedVersion: "any" });
      })
      .catch((e) => e);
    expect(String(error)).toContain("must append events before it writes anything else");
    expect(await log.streamVersion(s)).toBe(0);
  });

  it("runs inline projections inside the append's transaction", async () => {
    const table = sql.id(database.schema, "heartbeat_counts");
    await sql`CREATE TABLE ${table} (run_id text PRIMARY KEY, n int NOT NULL)`.execute(database.db);
    const counting: InlineProjection = {
      name: "heartbeat_counts",
      async apply(trx, events) {
        for (const e of events) {
          const runId = (e.data as { runId: string }).runId;
          if (runId === "explode") throw new Error("projection failed");
          await sql`INSERT INTO ${table} VALUES (${runId}, 1) ON CONFLICT (run_id) DO UPDATE SET n = ${table}.n + 1`.execute(
            trx,
          );
        }
      },
    };
    const projected = createPgEventLog({ db: database.db, schema: database.schema, projections: [counting] });
    const s = `s-${randomUUID()}`;
    await projected.append(s, [heartbeat("p1"), heartbeat("p1")], { expectedVersion: "no_stream" });
    const failed = await projected
      .append(s, [heartbeat("p1"), heartbeat("explode")], { expectedVersion: 2 })
      .catch((e) => e);
    expect(String(failed)).toContain("projection failed");
    const { rows } = await sql<{ n: number }>`SELECT n FROM ${table} WHERE run_id = 'p1'`.execute(
      database.db,
    );
    expect(rows[0]?.n).toBe(2);
    expect(await projected.streamVersion(s)).toBe(2);
  });

  it("delivers every event once, in order, to a subscription whose handler commits with its checkpoint", async () => {
    const table = sql.id(database.schema, "mirror");
    await sql`CREATE TABLE ${table} (position bigint PRIMARY KEY)`.execute(database.db);
    const s = `s-${randomUUID()}`;
    const appended = await log.append(
      s,
      Array.from({ length: 12 }, () => heartbeat("sub")),
      { expectedVersion: "no_stream" },
    );
    const lastAppended = appended.positions.at(-1) as number;
    let crashes = 1;
    const sub = {
      name: `mirror-${randomUUID()}`,
      batchSize: 5,
      async handle(trx: PgEventLog["db"], events: readonly { globalPosition: number }[]) {
        for (const e of events) await sql`INSERT INTO ${table} VALUES (${e.globalPosition})`.execute(trx);
        // A crash after the handler's writes: neither the writes nor the checkpoint may survive.
        if (crashes-- > 0) throw new Error("crash mid-batch");
      },
    };
    await expect(processSubscriptionBatch(log, sub)).rejects.toThrow("crash mid-batch");
    expect(await subscriptionCheckpoint(log, sub.name)).toBe(0);
    await eventually(
      async () => {
        await processSubscriptionBatch(log, sub);
        return subscriptionCheckpoint(log, sub.name);
      },
      (checkpoint) => checkpoint >= lastAppended,
    );
    const { rows } = await sql<{
      position: string | number;
    }>`SELECT position FROM ${table} ORDER BY position`.execute(database.db);
    const checkpoint = await subscriptionCheckpoint(log, sub.name);
    const all: number[] = [];
    for (let after = 0; after < checkpoint; ) {
      const page = await log.readAll({ after, limit: 1000 });
      if (page.length === 0) break;
      all.push(...page.map((e) => e.globalPosition).filter((p) => p <= checkpoint));
      after = page.at(-1)?.globalPosition as number;
    }
    // Every event up to the checkpoint was mirrored exactly once, in order, the stream's last
    // event among them.
    expect(rows.map((r) => Number(r.position))).toEqual(all);
    expect(all).toContain(lastAppended);
  });
});
