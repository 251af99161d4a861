import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPgEventLog, type PgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import { isConcurrencyError, isValidationError, type ValidationError } from "../../src/errors.js";
import type { NewEvent } from "../../src/events/envelope.js";
import { BACKEND, openTestDatabase } from "../support/database.js";
import { eventually } from "../support/eventually.js";
import { waitingForStreamLock } from "../support/stream-lock.js";

const heartbeat = (runId: string): NewEvent => ({ type: "RunHeartbeat", data: { runId } });
const heartbeats = (runId: string, n: number) => Array.from({ length: n }, () => heartbeat(runId));

/** A promise and the function that resolves it. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

/** Thrown inside a transaction to roll it back. */
class RollBack extends Error {}

/*
 * Chained appends (AppendChain, migration 0013): an append sent behind another append of the same
 * stream before that one has committed. The run executor sends a report group's append this way
 * behind the previous group's.
 */
describe(`chained appends on ${BACKEND}`, () => {
  let database: Awaited<ReturnType<typeof openTestDatabase>>;
  let log: PgEventLog;
  beforeAll(async () => {
    database = await openTestDatabase("chained", { poolSize: 6 });
    log = createPgEventLog({
      db: database.db,
      schema: database.schema,
      overlappingAppends: BACKEND === "postgres",
    });
  });
  afterAll(() => database.close());

  const versionOf = (stream: string) => log.streamVersion(stream);

  /** Appends `n` heartbeats in a transaction that rolls back after them; answers their positions. */
  async function rolledBack(stream: string, expectedVersion: number, n: number): Promise<number[]> {
    let positions: number[] = [];
    await log
      .transaction(async (session) => {
        positions = (await session.append(stream, heartbeats(stream, n), { expectedVersion, chain: {} }))
          .positions;
        throw new RollBack();
      })
      .catch((e: unknown) => {
        if (!(e instanceof RollBack)) throw e;
      });
    return positions;
  }

  it("commits behind the append whose last event it names", async () => {
    const first = await log.append("run-a", heartbeats("a", 3), { expectedVersion: "no_stream", chain: {} });
    const second = await log.append("run-a", heartbeats("a", 2), {
      expectedVersion: 3,
      chain: { afterPosition: first.positions.at(-1) as number },
    });
    expect(second.written.map((e) => e.streamVersion)).toEqual([4, 5]);
    expect(await versionOf("run-a")).toBe(5);
  });

  it("is refused behind an append that rolled back, even when another writer's events of the same count took its versions", async () => {
    await log.append("run-b", heartbeats("b", 1), { expectedVersion: "no_stream" });
    const lost = await rolledBack("run-b", 1, 2);
    expect(await versionOf("run-b")).toBe(1);
    // Another writer appends as many events: the stream is at the version the chained append expects.
    await log.append("run-b", heartbeats("b", 2), { expectedVersion: 1 });
    expect(await versionOf("run-b")).toBe(3);

    const refused = await log
      .append("run-b", heartbeats("b", 1), {
        expectedVersion: 3,
        chain: { afterPosition: lost.at(-1) as number },
      })
      .catch((e: unknown) => e);
    expect(isConcurrencyError(refused)).toBe(true);
    expect(await versionOf("run-b")).toBe(3);
    // What the check adds: the version alone would have let it in.
    const unchained = await log.append("run-b", heartbeats("b", 1), { expectedVersion: 3 });
    expect(unchained.written).toHaveLength(1);
  });

  it("refuses an afterPosition that is not a position, or without an exact version, naming the field and writing nothing", async () => {
    await log.append("run-c", heartbeats("c", 1), { expectedVersion: "no_stream" });
    const cases = [
      [{ expectedVersion: 1, chain: { afterPosition: 0 } }, "chain.afterPosition"],
      [{ expectedVersion: 1, chain: { afterPosition: 1.5 } }, "chain.afterPosition"],
      [{ expectedVersion: "any", chain: { afterPosition: 1 } }, "expectedVersion"],
    ] as const;
    for (const [options, field] of cases) {
      const error = await log.append("run-c", heartbeats("c", 1), options).catch((e: unknown) => e);
      expect(isValidationError(error)).toBe(true);
      expect((error as ValidationError).field).toBe(field);
    }
    expect(await versionOf("run-c")).toBe(1);
  });

  const waitingFor = (streamId: string) => waitingForStreamLock(database, streamId);

  /**
   * Opens a transaction that appends `n` heartbeats chained and holds it open until `release`,
   * then commits or rolls back: answers the positions `onWritten` gave and the transaction's end.
   */
  async function heldOpen(
    stream: string,
    expectedVersion: number | "no_stream",
    n: number,
    end: "commit" | "rollback",
  ) {
    const held = gate();
    let onWritten!: (positions: readonly number[]) => void;
    const written = new Promise<readonly number[]>((resolve) => {
      onWritten = resolve;
    });
    const ended = log.transaction(async (session) => {
      await session.append(stream, heartbeats(stream, n), { expectedVersion, chain: { onWritten } });
      await held.opened;
      if (end === "rollback") throw new RollBack();
    });
    ended.catch(() => {});
    return { positions: await written, release: held.open, ended };
  }

  it.runIf(BACKEND === "postgres")(
    "waits on the server behind an append that has written and not committed, then commits after it (server only: PGlite has one connection)",
    async () => {
      const { positions, release, ended } = await heldOpen("run-d", "no_stream", 3, "commit");
      expect(positions).toHaveLength(3);
      let secondDone = false;
      const second = log
        .append("run-d", heartbeats("d", 2), {
          expectedVersion: 3,
          chain: { afterPosition: positions.at(-1) as number },
        })
        .finally(() => {
          secondDone = true;
        });
      expect(
        await eventually(
          () => waitingFor("run-d"),
          (w) => w >= 1,
        ),
      ).toBe(1);
      expect(secondDone).toBe(false);
      release();
      await ended;
      expect((await second).written.map((e) => e.streamVersion)).toEqual([4, 5]);
      const versions = (await log.readStream("run-d")).map((e) => e.streamVersion);
      expect(versions).toEqual([1, 2, 3, 4, 5]);
    },
  );

  it.runIf(BACKEND === "postgres")(
    "is refused, with nothing written, when the append it waits behind rolls back (server only)",
    async () => {
      await log.append("run-e", heartbeats("e", 1), { expectedVersion: "no_stream" });
      const { positions, release, ended } = await heldOpen("run-e", 1, 2, "rollback");
      const second = log
        .append("run-e", heartbeats("e", 1), {
          expectedVersion: 3,
          chain: { afterPosition: positions.at(-1) as number },
        })
        .catch((e: unknown) => e);
      await eventually(
        () => waitingFor("run-e"),
        (w) => w >= 1,
      );
      release();
      await ended.catch(() => {});
      expect(isConcurrencyError(await second)).toBe(true);
      expect(await versionOf("run-e")).toBe(1);
    },
  );

  it.runIf(BACKEND === "postgres")(
    "stores an id once when another writer stores it while the append waits behind the one ahead: it answers the stored copy (server only)",
    async () => {
      // The id is not stored when the append is sent, and is by the time its wait ends. Any move of
      // the lookup before the wait (tried: bench/RESULTS.md, report-throughput) must keep this.
      const { positions, release, ended } = await heldOpen("run-r", "no_stream", 2, "commit");
      const id = randomUUID();
      const second = log.append("run-r", [{ ...heartbeat("r"), eventId: id }, heartbeat("r")], {
        expectedVersion: 2,
        chain: { afterPosition: positions.at(-1) as number },
      });
      await eventually(
        () => waitingFor("run-r"),
        (w) => w >= 1,
      );
      // A retry of the same report in another process stores the id meanwhile.
      const other = await log.append("run-s", [{ ...heartbeat("s"), eventId: id }], {
        expectedVersion: "no_stream",
      });
      release();
      await ended;
      const result = await second;
      expect(result.positions[0]).toBe(other.positions[0]);
      expect(result.duplicates).toBe(1);
      expect(result.written.map((e) => e.streamVersion)).toEqual([3]);
      const stream = await log.readStream("run-r");
      expect(stream.map((e) => e.streamVersion)).toEqual([1, 2, 3]);
      expect(stream.some((e) => e.eventId === id)).toBe(false);
    },
  );

  it("answers the stored positions of ids stored before it and writes the rest, chained", async () => {
    const id = randomUUID();
    const first = await log.append("run-h", [{ ...heartbeat("h"), eventId: id }], {
      expectedVersion: "no_stream",
      chain: {},
    });
    // The same event sent again with a new one, behind the first (a retried group).
    const again = await log.append("run-h", [{ ...heartbeat("h"), eventId: id }, heartbeat("h")], {
      expectedVersion: 1,
      chain: { afterPosition: first.positions.at(-1) as number },
    });
    expect(again.positions[0]).toBe(first.positions[0]);
    expect(again.duplicates).toBe(1);
    expect(again.written.map((e) => e.streamVersion)).toEqual([2]);
    expect(await versionOf("run-h")).toBe(2);
  });

  it("never says written on a log that cannot overlap appends, and says it once where it can", async () => {
    const calls: (readonly number[])[] = [];
    const single = createPgEventLog({ db: database.db, schema: database.schema });
    await single.append("run-f", heartbeats("f", 2), {
      expectedVersion: "no_stream",
      chain: { onWritten: (p) => calls.push(p) },
    });
    expect(calls).toEqual([]);
    if (BACKEND === "postgres") {
      const result = await log.append("run-f", heartbeats("f", 2), {
        expectedVersion: 2,
        chain: { onWritten: (p) => calls.push(p) },
      });
      expect(calls).toEqual([result.positions]);
    }
  });
});
