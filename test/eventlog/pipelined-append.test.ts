import { sql } from "kysely";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type Database, openDatabase } from "../../src/adapters/postgres/database.js";
import type { PipelineClient } from "../../src/adapters/postgres/pipelined-transaction.js";
import { isConcurrencyError } from "../../src/errors.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { openLedgerOn } from "../../src/ledger/open-ledger.js";
import { BACKEND, openTestDatabase, SERVER_URL, serverClient } from "../support/database.js";

type TestDb = Awaited<ReturnType<typeof openTestDatabase>>;

/**
 * What a pipelined client saw, in order: each statement sent, each answer received, and how the
 * client went back to the pool ("release": kept for reuse; "destroy": closed, with the error).
 */
type Seen = { what: "send" | "answer" | "failed" | "release" | "destroy"; statement: string };

/** The first words of a statement, enough to tell which it is. */
function label(text: string): string {
  const t = text.replace(/\s+/g, " ").trim();
  if (t.includes("append_events")) return "append";
  const table = /FROM "[^"]+"\."([a-z_]+)"/.exec(t)?.[1] ?? /INTO "[^"]+"\."([a-z_]+)"/.exec(t)?.[1];
  const verb = t.split(" ")[0]?.toUpperCase() ?? "";
  return table ? `${verb} ${table}` : verb;
}

/** The database with every pipelined client's statements and answers recorded in `seen`. */
function recording(database: Database, seen: Seen[]): Database {
  const connect = database.connectPipelined;
  if (!connect) throw new Error("a server database has connectPipelined");
  return {
    ...database,
    connectPipelined: async () => {
      const client = await connect();
      const recorded: PipelineClient = {
        get pipeline() {
          return client.pipeline;
        },
        set pipeline(on: boolean) {
          client.pipeline = on;
        },
        query(text, values) {
          const statement = label(text);
          seen.push({ what: "send", statement });
          const answered = client.query(text, values);
          answered.then(
            () => seen.push({ what: "answer", statement }),
            () => seen.push({ what: "failed", statement }),
          );
          return answered;
        },
        release: (destroy) => {
          seen.push(
            destroy ? { what: "destroy", statement: String(destroy) } : { what: "release", statement: "" },
          );
          client.release(destroy);
        },
      };
      return recorded;
    },
  };
}

/*
 * An append with the ledger's inline projection on a server is one pipelined transaction: BEGIN,
 * the append's call and the projection's reads go out together, the projection's writes and
 * COMMIT together once the reads have answered (PipelinedTransaction). What must hold is what held
 * when each statement waited for the one before: all or nothing, and the connection back in the
 * pool whatever happened. Server only: PGlite runs in this process, with no round trips to save
 * and no pipeline (its suite runs the same statements one after another).
 */
describe.runIf(BACKEND === "postgres")("pipelined appends (real server)", () => {
  let test: TestDb;
  let ledger: Ledger;
  let database: Database;
  const seen: Seen[] = [];
  const runId = "run-1";
  const url = (shard: number) =>
    `file:///data/events/data/${runId}/shard=${String(shard).padStart(5, "0")}/attempt=00`;

  beforeEach(async () => {
    test = await openTestDatabase("pipelined");
    seen.length = 0;
    // Two connections: a pipelined transaction that did not give its client back, twice, would
    // stall the next statement until the pool's timeout.
    database = await openDatabase(SERVER_URL as string, {
      schema: test.schema,
      poolSize: 2,
      connectTimeoutMs: 3_000,
    });
    ledger = await openLedgerOn(recording(database, seen), { migrate: false, cleanupAfterPublish: false });
    await ledger.createDataset({ datasetId: "events", root: "file:///data/events" });
    await ledger.startRun({ datasetId: "events", runId, numShards: 10 });
  });
  afterEach(async () => {
    await ledger.close();
    await test.close();
  });

  const storedEvents = async () =>
    (
      await sql<{
        type: string;
      }>`SELECT type FROM ${sql.id(test.schema, "events")} ORDER BY global_position`.execute(test.db)
    ).rows.map((r) => r.type);
  const attemptRows = async () =>
    (
      await sql<{
        shard: number;
        status: string;
      }>`SELECT shard, status FROM ${sql.id(test.schema, "attempt_records")} ORDER BY shard`.execute(test.db)
    ).rows.map((r) => [Number(r.shard), r.status]);

  it("sends the append with the projection's reads, then its writes with COMMIT: two round trips", async () => {
    seen.length = 0;
    await ledger.reportAttempts(
      [1, 2, 3].map((shard) => ({ kind: "succeeded", runId, shard, attempt: 0, url: url(shard) })),
    );
    const sends = seen.filter((s) => s.what === "send").map((s) => s.statement);
    expect(sends).toEqual([
      "BEGIN",
      "append",
      "SELECT runs",
      "SELECT datasets",
      "SELECT attempt_records",
      "INSERT runs",
      "INSERT attempt_records",
      "COMMIT",
    ]);
    // Round trip one: nothing answered before the reads were sent. Round trip two: the writes
    // and COMMIT were all sent before the first write answered.
    const at = (what: Seen["what"], statement: string) =>
      seen.findIndex((s) => s.what === what && s.statement === statement);
    expect(seen.findIndex((s) => s.what === "answer")).toBeGreaterThan(at("send", "SELECT attempt_records"));
    expect(at("send", "COMMIT")).toBeLessThan(at("answer", "INSERT runs"));
    expect(at("send", "INSERT runs")).toBeGreaterThan(at("answer", "SELECT attempt_records"));
    expect(await attemptRows()).toEqual([
      [1, "SUCCEEDED"],
      [2, "SUCCEEDED"],
      [3, "SUCCEEDED"],
    ]);
  });

  it("stores nothing when a projection write fails, and gives the connection back", async () => {
    // A write the server refuses after the append has stored its event in the same transaction.
    await sql`ALTER TABLE ${sql.id(test.schema, "attempt_records")} ADD CONSTRAINT no_shard_7 CHECK (shard <> 7)`.execute(
      test.db,
    );
    const before = await storedEvents();
    for (let i = 0; i < 3; i++) {
      seen.length = 0;
      const refused = await ledger
        .attemptSucceeded({ runId, shard: 7, attempt: 0, url: url(7) })
        .catch((e: unknown) => e);
      expect((refused as { code?: string }).code).toBe("23514");
      expect(seen.some((s) => s.what === "answer" && s.statement === "append")).toBe(true);
      // A statement the server refused leaves the connection sound: it goes back for reuse.
      expect(seen.map((s) => s.what)).toContain("release");
      expect(seen.map((s) => s.what)).not.toContain("destroy");
    }
    expect(await storedEvents()).toEqual(before);
    expect(await attemptRows()).toEqual([]);
    // Every connection is back and sound: the next report goes through.
    await ledger.attemptSucceeded({ runId, shard: 6, attempt: 0, url: url(6) });
    expect(await attemptRows()).toEqual([[6, "SUCCEEDED"]]);
    expect(await storedEvents()).toEqual([...before, "AttemptSucceeded"]);
  });

  it("writes nothing on a version conflict, and the next append goes through", async () => {
    const log = (ledger as unknown as { log?: unknown }).log;
    expect(log).toBeUndefined(); // the ledger keeps its log private: append through a log of our own
    const { createPgEventLog } = await import("../../src/adapters/postgres/pg-event-log.js");
    const { ledgerProjection } = await import("../../src/adapters/postgres/projection-store.js");
    const mine = createPgEventLog({
      db: database.db,
      schema: database.schema,
      projections: [ledgerProjection],
      connectPipelined: recording(database, seen).connectPipelined as NonNullable<
        Database["connectPipelined"]
      >,
    });
    const stream = `run-${runId}`;
    const version = await mine.streamVersion(stream);
    const before = await storedEvents();
    for (let i = 0; i < 3; i++) {
      const conflict = await mine
        .append(stream, [{ type: "RunHeartbeat", data: { runId } }], { expectedVersion: version + 5 })
        .catch((e: unknown) => e);
      expect(isConcurrencyError(conflict)).toBe(true);
    }
    expect(await storedEvents()).toEqual(before);
    await mine.append(stream, [{ type: "RunHeartbeat", data: { runId } }], { expectedVersion: version });
    expect(await mine.streamVersion(stream)).toBe(version + 1);
  });

  it("fails the append when its connection dies mid-transaction, closes that connection, stores nothing, and the next report goes through", async () => {
    const stream = `run-${runId}`;
    // Hold the run stream's lock in another transaction, so the next report waits on the server
    // with its statements sent; then end that waiting session from outside.
    const holder = await openDatabase(SERVER_URL as string, { schema: test.schema, poolSize: 1 });
    const { createPgEventLog } = await import("../../src/adapters/postgres/pg-event-log.js");
    const holding = createPgEventLog({ db: holder.db, schema: test.schema });
    const before = await storedEvents();
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    // The holder's callback runs once its transaction holds the stream's lock. Send the report only
    // then: on a loaded machine the holder's fresh connection was slower than the ledger's warm one,
    // the report went through unopposed, and no session ever waited (CI on e158d5b).
    let locked!: () => void;
    const lockTaken = new Promise<void>((resolve) => {
      locked = resolve;
    });
    const holdingLock = holding.transaction(
      () => {
        locked();
        return held;
      },
      { serialiseWith: stream },
    );
    const admin = serverClient();
    await admin.connect();
    try {
      await Promise.race([lockTaken, holdingLock]);
      const waiting = ledger.reportAttempts([
        { kind: "succeeded", runId, shard: 4, attempt: 0, url: url(4) },
      ]);
      let pid: number | undefined;
      // Up to 30 s for the report's statements to reach the server and wait there.
      for (let i = 0; i < 1200 && pid === undefined; i++) {
        // Only this test's session: other test files append in the same database at the same
        // time, and ending one of theirs failed them (their statements name their own schema).
        const { rows } = await admin.query<{ pid: number }>(
          `SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%append_events%'
             AND strpos(query, $1) > 0 AND datname = current_database()`,
          [test.schema],
        );
        pid = rows[0]?.pid;
        if (pid === undefined) await new Promise((r) => setTimeout(r, 25));
      }
      expect(pid).toBeDefined();
      await admin.query("SELECT pg_terminate_backend($1)", [pid]);
      const [outcome] = await waiting;
      expect(outcome?.ok).toBe(false);
      // The connection that died under the transaction was closed, with its error, not put back.
      expect(seen.filter((s) => s.what === "destroy")).toHaveLength(1);
      release();
      await holdingLock;
      expect(await storedEvents()).toEqual(before);
      // The dead connection was closed, not handed out again: the next report goes through.
      await ledger.attemptSucceeded({ runId, shard: 5, attempt: 0, url: url(5) });
      expect(await attemptRows()).toEqual([[5, "SUCCEEDED"]]);
    } finally {
      release();
      await holdingLock.catch(() => {});
      await admin.end();
      await holder.close();
    }
  });
});
