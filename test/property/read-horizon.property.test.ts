import { randomUUID } from "node:crypto";
import fc from "fast-check";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPgEventLog, type PgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import type { AppendResult } from "../../src/events/event-log.js";
import { BACKEND, openTestDatabase } from "../support/database.js";
import { eventually } from "../support/eventually.js";

/*
 * Readers never skip, whatever order appends take their positions and commit in (migration 0012:
 * positions without a mutex, readers bounded by a settled horizon). A real server only: PGlite has
 * one backend, so nothing is ever in flight beside a reader.
 *
 * Each history interleaves, one step at a time and in an order fast-check chooses:
 * - a transaction that appends (the plain INSERT … SELECT path is autocommit-only, so in a
 *   transaction it is append_events, with or without caller-chosen ids) and stays open; when its
 *   stream's row is held by another open transaction it waits on the row lock with its
 *   transaction id already taken, so it takes its position after younger transactions did;
 * - the commit or the rollback of an open transaction (which lets a waiting one through);
 * - an autocommit append (the one-statement path, or append_events with caller ids);
 * - a read by one of two tailing readers, with a small page.
 * Oracle: every reader ends with exactly the committed positions, in increasing order: none
 * skipped, none twice, none that rolled back.
 */

const RUNS = Number(process.env.HORIZON_RUNS ?? 15);
const STREAMS = 2;
const SLOTS = 3;

type Step =
  | { kind: "open"; slot: number; stream: number; ids: boolean; size: number }
  | { kind: "end"; slot: number; commit: boolean }
  | { kind: "autocommit"; stream: number; ids: boolean; size: number }
  | { kind: "read"; reader: number; limit: number };

/** What an append names: its stream, whether its events carry caller-chosen ids, how many. */
const appendOf = {
  stream: fc.nat(STREAMS - 1),
  ids: fc.boolean(),
  size: fc.integer({ min: 1, max: 3 }),
};

// Weighted towards transactions that open and end, where the interleavings that matter live.
const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant("open" as const), slot: fc.nat(SLOTS - 1), ...appendOf }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("end" as const),
      slot: fc.nat(SLOTS - 1),
      commit: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("autocommit" as const), ...appendOf }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("read" as const),
      reader: fc.nat(1),
      limit: fc.integer({ min: 1, max: 8 }),
    }),
  },
);

class Rollback extends Error {}

interface Slot {
  stream: number;
  appended: Promise<AppendResult>;
  release: (commit: boolean) => void;
  done: Promise<void>;
}

function deferred<T>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe.runIf(BACKEND === "postgres")("read horizon under any interleaving of appends (real server)", () => {
  let database: Awaited<ReturnType<typeof openTestDatabase>>;
  beforeAll(async () => {
    database = await openTestDatabase("horizon", { poolSize: 16 });
  });
  afterAll(() => database.close());

  it("tailing readers see every committed event once, in position order, and nothing that rolled back", async () => {
    let interleaved = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 8, maxLength: 40 }), async (steps) => {
        const log = createPgEventLog({ db: database.db, schema: database.schema });
        const readers = [0, 1].map(() =>
          createPgEventLog({ db: database.db, schema: database.schema, readAllWaitMs: 20 }),
        );
        const prefix = `h-${randomUUID().slice(0, 8)}`;
        const streamId = (s: number) => `${prefix}-${s}`;
        const events = (size: number, ids: boolean) =>
          Array.from({ length: size }, () => ({
            type: "RunHeartbeat" as const,
            data: { runId: prefix },
            ...(ids ? { eventId: randomUUID() } : {}),
          }));
        const start = await lastReadable(readers[0] as PgEventLog);
        const cursors = [start, start];
        const seen: number[][] = [[], []];
        const committed: number[] = [];
        const slots = new Map<number, Slot>();
        /** Whose transaction holds each stream's row, and who waits for it (at most one). */
        const holder = new Map<number, number>();
        const waiter = new Map<number, number>();

        const openSlot = (slot: number, stream: number, ids: boolean, size: number): Slot => {
          const appended = deferred<AppendResult>();
          const release = deferred<boolean>();
          const done = database.db
            .transaction()
            .execute(async (trx) => {
              appended.resolve(
                await log
                  .session(trx)
                  .append(streamId(stream), events(size, ids), { expectedVersion: "any" }),
              );
              if (!(await release.promise)) throw new Rollback();
            })
            .catch((e: unknown) => {
              if (!(e instanceof Rollback)) throw e;
            });
          const s: Slot = { stream, appended: appended.promise, release: release.resolve, done };
          slots.set(slot, s);
          return s;
        };
        const end = async (slot: number, commit: boolean) => {
          const s = slots.get(slot) as Slot;
          const result = await s.appended;
          s.release(commit);
          await s.done;
          if (commit) committed.push(...result.positions);
          slots.delete(slot);
          holder.delete(s.stream);
          const next = waiter.get(s.stream);
          if (next !== undefined) {
            // The waiting append goes through now and holds the row in its turn.
            waiter.delete(s.stream);
            await (slots.get(next) as Slot).appended;
            holder.set(s.stream, next);
          }
        };

        for (const st of steps) {
          if (st.kind === "open") {
            if (slots.has(st.slot)) continue;
            const held = holder.get(st.stream);
            if (held === undefined) {
              await openSlot(st.slot, st.stream, st.ids, st.size).appended;
              holder.set(st.stream, st.slot);
            } else if (!waiter.has(st.stream)) {
              openSlot(st.slot, st.stream, st.ids, st.size);
              await waitUntilWaitingOnLock(log);
              waiter.set(st.stream, st.slot);
              interleaved++;
            }
          } else if (st.kind === "end") {
            const s = slots.get(st.slot);
            // A waiting transaction ends after the one it waits for.
            if (!s || holder.get(s.stream) !== st.slot) continue;
            await end(st.slot, st.commit);
          } else if (st.kind === "autocommit") {
            if (holder.has(st.stream)) continue;
            const result = await log.append(streamId(st.stream), events(st.size, st.ids), {
              expectedVersion: "any",
            });
            committed.push(...result.positions);
          } else {
            const page = await (readers[st.reader] as PgEventLog).readAll({
              after: cursors[st.reader] as number,
              limit: st.limit,
            });
            for (const e of page) {
              if (e.streamId.startsWith(prefix)) seen[st.reader]?.push(e.globalPosition);
            }
            if (page.length > 0) cursors[st.reader] = page.at(-1)?.globalPosition as number;
          }
        }
        // Everything still open commits, holders before their waiters.
        while (holder.size > 0) {
          const [, slot] = holder.entries().next().value as [number, number];
          await end(slot, true);
        }
        expect(slots.size).toBe(0);

        const expected = [...committed].sort((a, b) => a - b);
        for (const r of [0, 1]) {
          const reader = readers[r] as PgEventLog;
          await eventually(
            async () => {
              for (;;) {
                const page = await reader.readAll({ after: cursors[r] as number, limit: 5 });
                if (page.length === 0) return seen[r]?.length ?? 0;
                for (const e of page) if (e.streamId.startsWith(prefix)) seen[r]?.push(e.globalPosition);
                cursors[r] = page.at(-1)?.globalPosition as number;
              }
            },
            (n) => n >= expected.length,
            15_000,
          );
          expect(seen[r]).toEqual(expected);
        }
      }),
      {
        numRuns: RUNS,
        // The interleaving a reader bounded by xmin alone gets wrong, always among the histories:
        // H holds stream 0, R waits for it with its transaction id, U (younger) appends to stream
        // 1 and stays open, H commits and R takes a position above U's, R commits, a reader reads.
        examples: [
          [
            [
              { kind: "open", slot: 0, stream: 0, ids: false, size: 1 },
              { kind: "open", slot: 1, stream: 0, ids: true, size: 1 },
              { kind: "open", slot: 2, stream: 1, ids: false, size: 1 },
              { kind: "end", slot: 0, commit: true },
              { kind: "end", slot: 1, commit: true },
              { kind: "read", reader: 0, limit: 8 },
              { kind: "end", slot: 2, commit: true },
              { kind: "read", reader: 0, limit: 8 },
            ],
          ],
        ],
      },
    );
    // The histories did make transactions take positions out of transaction-id order.
    expect(interleaved).toBeGreaterThan(0);
  }, 240_000);
});

/** The position a reader has read up to once it has caught up. */
async function lastReadable(log: PgEventLog): Promise<number> {
  let after = 0;
  for (;;) {
    const page = await log.readAll({ after, limit: 10_000 });
    if (page.length === 0) return after;
    after = page.at(-1)?.globalPosition as number;
  }
}

/** Waits until an append to this log's schema waits on a row lock (it has its transaction id then). */
async function waitUntilWaitingOnLock(log: PgEventLog): Promise<void> {
  const waiting = await eventually(
    async () =>
      Number(
        (
          await sql<{ n: string }>`
            SELECT count(*) AS n FROM pg_stat_activity
            WHERE datname = current_database() AND wait_event_type = 'Lock'
              AND query LIKE ${`%${log.schema}".append_events%`}`.execute(log.db)
        ).rows[0]?.n ?? 0,
      ),
    (n) => n > 0,
    10_000,
  );
  expect(waiting).toBeGreaterThan(0);
}
