import { randomUUID } from "node:crypto";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPgEventLog, type PgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import { OneAppendPerTransactionError } from "../../src/errors.js";
import type { NewEvent } from "../../src/events/envelope.js";
import { BACKEND, openTestDatabase } from "../support/database.js";
import { eventually } from "../support/eventually.js";

type TestDb = Awaited<ReturnType<typeof openTestDatabase>>;
const heartbeat = (runId: string): NewEvent => ({ type: "RunHeartbeat", data: { runId } });

/** What a reader that trusts the sequence alone would do: the bug this log exists to avoid. */
async function naiveReadAll(log: PgEventLog, after: number): Promise<number[]> {
  const { rows } = await sql<{ p: string }>`
    SELECT global_position AS p FROM ${sql.id(log.schema, "events")}
    WHERE global_position > ${after} ORDER BY global_position LIMIT 1000`.execute(log.db);
  return rows.map((r) => Number(r.p));
}

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe.runIf(BACKEND === "postgres")("read-all never skips under concurrent commits (real server)", () => {
  let database: TestDb;
  let log: PgEventLog;
  beforeAll(async () => {
    database = await openTestDatabase("concurrency", { poolSize: 48 });
    log = createPgEventLog({ db: database.db, schema: database.schema });
  });
  afterAll(() => database.close());

  it("holds back a later position until an earlier in-flight one commits", async () => {
    const start = (await log.readAll({ after: 0, limit: 10_000 })).at(-1)?.globalPosition ?? 0;
    const reserved = deferred();
    const release = deferred();
    // Transaction A takes a position and stays open; B takes a later one and commits first.
    const a = database.db.transaction().execute(async (trx) => {
      await log.session(trx).append(`a-${randomUUID()}`, [heartbeat("a")], { expectedVersion: "any" });
      reserved.resolve();
      await release.promise;
    });
    await reserved.promise;
    const b = await log.append(`b-${randomUUID()}`, [heartbeat("b")], { expectedVersion: "any" });
    const bPosition = b.positions[0] as number;

    const naive = await naiveReadAll(log, start);
    expect(naive).toContain(bPosition); // a naive reader would now move its checkpoint past A
    const safe = await log.readAll({ after: start });
    expect(safe.map((e) => e.globalPosition)).not.toContain(bPosition);

    release.resolve();
    await a;
    const after = await log.readAll({ after: start });
    const positions = after.map((e) => e.globalPosition);
    expect(positions).toHaveLength(2);
    expect(positions[1]).toBe(bPosition);
    expect(positions[0]).toBeLessThan(bPosition);
    expect(await naiveReadAll(log, bPosition)).not.toContain(positions[0]); // …and never see A
  });

  it("never skips an event when one transaction appends again after another transaction's append", async () => {
    // Issue item 9, forced step by step: A reserves, B reserves, A tries to reserve again and
    // commits, a reader reads, B commits. A second reservation would give A a position above B's
    // while A's xid is below it, so the reader would pass B's position before B commits.
    const start = await lastPosition(log, 0);
    const [streamA, streamB] = [`twice-a-${randomUUID()}`, `twice-b-${randomUUID()}`];
    const aAppended = deferred();
    const bAppended = deferred();
    const releaseB = deferred();
    let aXid = "";
    let bXid = "";
    let secondAppend: unknown = null;
    const currentXid = async (trx: typeof database.db) =>
      (await sql<{ x: string }>`SELECT pg_current_xact_id()::text AS x`.execute(trx)).rows[0]?.x as string;

    const a = database.db.transaction().execute(async (trx) => {
      const session = log.session(trx);
      await session.append(streamA, [heartbeat("a1")], { expectedVersion: "any" });
      aXid = await currentXid(trx);
      aAppended.resolve();
      await bAppended.promise;
      secondAppend = await session.append(streamA, [heartbeat("a2")], { expectedVersion: "any" }).then(
        () => null,
        (e: unknown) => e,
      );
      // A refused append must not commit the rest of the transaction.
      if (secondAppend !== null) throw secondAppend;
    });
    const b = database.db.transaction().execute(async (trx) => {
      await aAppended.promise;
      await log.session(trx).append(streamB, [heartbeat("b")], { expectedVersion: "any" });
      bXid = await currentXid(trx);
      bAppended.resolve();
      await releaseB.promise;
    });

    const seen: number[] = [];
    let checkpoint = start;
    try {
      await a.catch(() => {});
      // A has ended and B is still open: read as a tailing subscriber would, and move the checkpoint.
      await waitForXminPast(log, aXid);
      for (const e of await log.readAll({ after: checkpoint })) seen.push(e.globalPosition);
      checkpoint = seen.at(-1) ?? checkpoint;
    } finally {
      releaseB.resolve();
    }
    await b;
    await waitForXminPast(log, bXid);
    for (;;) {
      const page = await log.readAll({ after: checkpoint });
      if (page.length === 0) break;
      for (const e of page) seen.push(e.globalPosition);
      checkpoint = page.at(-1)?.globalPosition as number;
    }

    const { rows } = await sql<{ p: string }>`
      SELECT global_position AS p FROM ${sql.id(log.schema, "events")}
      WHERE stream_id IN (${streamA}, ${streamB}) ORDER BY global_position`.execute(log.db);
    expect(seen).toEqual(rows.map((r) => Number(r.p)));
    // …because A's second append is refused and A rolls back: only B's event is stored.
    expect(secondAppend).toBeInstanceOf(OneAppendPerTransactionError);
    expect(rows).toHaveLength(1);
  });

  it("never skips an event whose transaction took its position before an older transaction took its own", async () => {
    // Positions are taken without a mutex (migration 0012), so position order is no longer
    // transaction-id order. Forced: H appends to X and stays open; R appends to X, gets its
    // transaction id and waits for X's row lock; U (a younger id) appends to Y and stays open; H
    // commits, so R takes a position above U's and commits. A reader bounded by xmin alone would
    // now return R's event and move its checkpoint past U's position while U is still in flight.
    const start = await lastPosition(log, 0);
    const [x, y] = [`old-id-x-${randomUUID()}`, `old-id-y-${randomUUID()}`];
    const hAppended = deferred();
    const releaseH = deferred();
    const uAppended = deferred();
    const releaseU = deferred();
    const h = database.db.transaction().execute(async (trx) => {
      await log.session(trx).append(x, [heartbeat("h")], { expectedVersion: "any" });
      hAppended.resolve();
      await releaseH.promise;
    });
    await hAppended.promise;
    const rXid = deferred();
    let rId = "";
    const r = database.db.transaction().execute(async (trx) => {
      const appended = log.session(trx).append(x, [heartbeat("r")], { expectedVersion: "any" });
      // R has its transaction id once it waits on H's row lock.
      rId = await waitForLockWaiter(log, x);
      rXid.resolve();
      return appended;
    });
    await rXid.promise;
    let uPosition = Number.NaN;
    const u = database.db.transaction().execute(async (trx) => {
      const appended = await log.session(trx).append(y, [heartbeat("u")], { expectedVersion: "any" });
      uPosition = appended.positions[0] as number;
      uAppended.resolve();
      await releaseU.promise;
    });
    await uAppended.promise;
    releaseH.resolve();
    await h;
    const rResult = await r;
    try {
      const rPosition = rResult.positions[0] as number;
      expect(uPosition).toBeLessThan(rPosition); // the order the old reader could not survive
      expect(BigInt(rId)).toBeGreaterThan(0n);
      // What a reader bounded by xmin alone returns now: R's event, above U's in-flight one.
      const { rows } = await sql<{ p: string }>`
        SELECT global_position AS p FROM ${sql.id(log.schema, "events")}
        WHERE global_position > ${start} AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
        ORDER BY global_position`.execute(log.db);
      expect(rows.map((row) => Number(row.p))).toContain(rPosition);
      // The log's reader stops below U's position while U is open…
      const early = (await readEverything(log, start)).map((e) => e.globalPosition);
      expect(early.every((p) => p < uPosition)).toBe(true);
    } finally {
      releaseU.resolve();
    }
    await u;
    // …and once U has committed, it reads H, U and R in position order, none skipped.
    const all = (await readEverything(log, start)).filter((e) => e.streamId === x || e.streamId === y);
    expect(all.map((e) => e.data)).toEqual([{ runId: "h" }, { runId: "u" }, { runId: "r" }]);
  });

  it("32 writers on 8 streams, 4 tailing readers: every reader sees every committed event once, in order", async () => {
    const ROUNDS = 4;
    const WRITERS = 32;
    const APPENDS_PER_WRITER = 40;
    for (let round = 0; round < ROUNDS; round++) {
      const streams = Array.from({ length: 8 }, (_, i) => `conc-${round}-${i}-${randomUUID()}`);
      const start = (await log.readAll({ after: 0, limit: 10_000 })).at(-1)?.globalPosition ?? 0;
      const startCursor = await lastPosition(log, start);
      const committed = new Set<number>();
      let appended = 0;
      let writing = true;
      const writers = Array.from({ length: WRITERS }, async (_, w) => {
        for (let i = 0; i < APPENDS_PER_WRITER; i++) {
          const stream = streams[(w + i) % streams.length] as string;
          const size = 1 + ((w * 7 + i) % 3);
          appended += size;
          const result = await log.append(
            stream,
            Array.from({ length: size }, () => heartbeat(`w${w}`)),
            {
              expectedVersion: "any",
            },
          );
          for (const p of result.positions) committed.add(p);
        }
      });
      // Readers tail until the writers are done and they have read as many events as were
      // committed (another test file's open transaction may hold the server's xmin back a while).
      const deadline = Date.now() + 60_000;
      const readers = Array.from({ length: 4 }, async (_, r) => {
        const seen: number[] = [];
        let after = startCursor;
        for (;;) {
          const page = await log.readAll({ after, limit: 50 + r * 37 });
          for (const e of page) seen.push(e.globalPosition);
          if (page.length > 0) after = page.at(-1)?.globalPosition as number;
          else if ((!writing && seen.length >= committed.size) || Date.now() > deadline) return seen;
          else await new Promise((res) => setTimeout(res, 1 + r));
        }
      });
      await Promise.all(writers);
      writing = false;
      const seenByReaders = await Promise.all(readers);
      const expected = [...committed].sort((x, y) => x - y);
      expect(expected).toHaveLength(appended);
      for (const seen of seenByReaders) {
        for (let i = 1; i < seen.length; i++)
          expect(seen[i] as number).toBeGreaterThan(seen[i - 1] as number);
        expect(seen).toEqual(expected);
      }
    }
  });
});

async function lastPosition(log: PgEventLog, from: number): Promise<number> {
  let after = from;
  for (;;) {
    const page = await log.readAll({ after, limit: 10_000 });
    if (page.length === 0) return after;
    after = page.at(-1)?.globalPosition as number;
  }
}

/** Waits until every transaction up to `xid` has ended for readers (the cluster's xmin is past it). */
async function waitForXminPast(log: PgEventLog, xid: string): Promise<void> {
  const past = await eventually(
    async () =>
      (
        await sql<{ past: boolean }>`
          SELECT pg_snapshot_xmin(pg_current_snapshot()) > ${xid}::xid8 AS past`.execute(log.db)
      ).rows[0]?.past === true,
    (value) => value,
    60_000,
  );
  expect(past, `the cluster's xmin never passed ${xid} (another transaction held it back)`).toBe(true);
}

/** Every event after `from` that readAll hands out now, page by page. */
async function readEverything(log: PgEventLog, from: number) {
  const out = [];
  let after = from;
  for (;;) {
    const page = await log.readAll({ after, limit: 10_000 });
    if (page.length === 0) return out;
    out.push(...page);
    after = page.at(-1)?.globalPosition as number;
  }
}

/**
 * Waits until a backend waits on a row lock of `stream`'s row, and answers its transaction id.
 * Only this log's appends count: test files share the database in CI, and another file's append
 * waiting on its own lock is not the one this test stages.
 */
async function waitForLockWaiter(log: PgEventLog, stream: string): Promise<string> {
  const xid = await eventually(
    async () =>
      (
        await sql<{ xid: string | null }>`
          SELECT a.backend_xid::text AS xid FROM pg_stat_activity a
          WHERE a.datname = current_database() AND a.wait_event_type = 'Lock'
            AND a.query LIKE ${`%${log.schema}".append_events%`} AND a.backend_xid IS NOT NULL
          LIMIT 1`.execute(log.db)
      ).rows[0]?.xid ?? null,
    (value) => value !== null,
    10_000,
  );
  expect(xid, `no append waited on the row lock of ${stream}`).not.toBeNull();
  return xid as string;
}
