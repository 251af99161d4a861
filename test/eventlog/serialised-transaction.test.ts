import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPgEventLog, type PgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import { isValidationError, type ValidationError } from "../../src/errors.js";
import type { NewEvent } from "../../src/events/envelope.js";
import { BACKEND, openTestDatabase } from "../support/database.js";
import { eventually } from "../support/eventually.js";
import { waitingForStreamLock } from "../support/stream-lock.js";

const heartbeat = (runId: string): NewEvent => ({ type: "RunHeartbeat", data: { runId } });

/** A promise and the function that resolves it. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

/*
 * log.transaction(fn, { serialiseWith: streamId }): a transaction-scoped lock keyed by the stream,
 * taken before fn runs. The group commit's retry after a lost race relies on it.
 */
describe(`transactions serialised with a stream on ${BACKEND}`, () => {
  let database: Awaited<ReturnType<typeof openTestDatabase>>;
  let log: PgEventLog;
  beforeAll(async () => {
    database = await openTestDatabase("serialise", { poolSize: 6 });
    log = createPgEventLog({ db: database.db, schema: database.schema });
  });
  afterAll(() => database.close());

  const waitingFor = (streamId: string) => waitingForStreamLock(database, streamId);

  it("the append is still the transaction's first write, at the version read under the lock", async () => {
    const result = await log.transaction(
      async (session) => {
        const version = await session.streamVersion("run-a");
        return session.append("run-a", [heartbeat("a")], {
          expectedVersion: version === 0 ? "no_stream" : version,
        });
      },
      { serialiseWith: "run-a" },
    );
    expect(result.written).toHaveLength(1);
    expect((await log.readStream("run-a")).map((e) => e.type)).toEqual(["RunHeartbeat"]);
  });

  it("a second transaction on the stream runs only after the first has committed, and sees its append", async () => {
    const held = gate();
    const entered: string[] = [];
    const first = log.transaction(
      async (session) => {
        entered.push("first");
        const version = await session.streamVersion("run-b");
        await session.append("run-b", [heartbeat("b")], {
          expectedVersion: version === 0 ? "no_stream" : version,
        });
        await held.opened;
      },
      { serialiseWith: "run-b" },
    );
    await eventually(
      async () => entered.length,
      (n) => n === 1,
    );
    const second = log.transaction(
      async (session) => {
        entered.push("second");
        return session.streamVersion("run-b");
      },
      { serialiseWith: "run-b" },
    );
    // On the server the second waits for the lock; on PGlite for the one connection.
    if (BACKEND === "postgres") {
      expect(
        await eventually(
          () => waitingFor("run-b"),
          (n) => n >= 1,
        ),
      ).toBe(1);
    }
    expect(entered).toEqual(["first"]);
    held.open();
    await first;
    expect(await second).toBe(1);
    expect(entered).toEqual(["first", "second"]);
  });

  it.runIf(BACKEND === "postgres")(
    "transactions serialised with different streams do not wait for each other (server only: PGlite has one connection)",
    async () => {
      const held = gate();
      let inside = false;
      const first = log.transaction(
        async () => {
          inside = true;
          await held.opened;
        },
        { serialiseWith: "run-c" },
      );
      await eventually(
        async () => inside,
        (v) => v,
      );
      const other = await log.transaction(
        async (session) => session.append("run-d", [heartbeat("d")], { expectedVersion: "no_stream" }),
        { serialiseWith: "run-d" },
      );
      expect(other.written).toHaveLength(1);
      held.open();
      await first;
    },
  );

  it("an empty serialiseWith is refused naming the field, and nothing runs", async () => {
    let ran = false;
    const error = await log
      .transaction(
        async () => {
          ran = true;
        },
        { serialiseWith: "" },
      )
      .catch((e: unknown) => e);
    expect(isValidationError(error)).toBe(true);
    expect((error as ValidationError).field).toBe("serialiseWith");
    expect(ran).toBe(false);
  });
});
