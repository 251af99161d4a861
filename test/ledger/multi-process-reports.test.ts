import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type Database, openDatabase } from "../../src/adapters/postgres/database.js";
import { createPgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import { errorBody } from "../../src/errors.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { type ReportCommand, RunExecutor } from "../../src/ledger/run-executor.js";
import type { RunState } from "../../src/machines/run-state.js";
import { BACKEND, openTestDatabase, SERVER_URL } from "../support/database.js";
import { openTestLedger } from "../support/ledger.js";

/*
 * Several ledger instances on one database (as several processes would be, each with its own
 * pool; on PGlite they share the one instance and take turns on its single connection, which still
 * interleaves one instance's read with another's append) reporting to ONE run at once. Each
 * instance's group commit races the others' appends on the run stream's expected version. A valid
 * report must never be refused because others wrote at the same time.
 */

const LEDGERS = 4;
const CALLERS = 24;
const SHARDS_PER_CALLER = 8;
const NUM_SHARDS = LEDGERS * CALLERS * SHARDS_PER_CALLER;

const url = (root: string, runId: string, shard: number) =>
  `${root}/data/${runId}/shard=${String(shard).padStart(5, "0")}/attempt=00`;

describe(`reports of one run from several ledger instances on ${BACKEND}`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledgers: Ledger[];

  beforeEach(async () => {
    t = await openTestLedger({ poolSize: 8 });
    ledgers = [t.ledger];
    for (let i = 1; i < LEDGERS; i++) ledgers.push(await t.reopen({ actor: `p${i}` }));
    await t.ledger.createDataset({ datasetId: "ds", root: t.root, safetyWindow: "0s" });
  });
  afterEach(() => t.close());

  it("every report is accepted (no CONCURRENCY), stored once, and repeats from another instance write nothing", async () => {
    await t.ledger.startRun({ datasetId: "ds", numShards: NUM_SHARDS, runId: "r" });
    const refused: string[] = [];
    const answers = new Map<number, string[]>();
    const report = async (ledger: Ledger, shard: number, kind: "started" | "succeeded") => {
      try {
        const answer =
          kind === "started"
            ? await ledger.attemptStarted({ runId: "r", shard, attempt: 0 })
            : await ledger.attemptSucceeded({ runId: "r", shard, attempt: 0, url: url(t.root, "r", shard) });
        answers.set(shard, [...(answers.get(shard) ?? []), `${kind}:${answer.status}`]);
      } catch (e) {
        refused.push(`${kind} ${shard}: ${JSON.stringify(errorBody(e).error)}`);
      }
    };
    // Every caller reports its shards started then succeeded; each succeeded report is sent again
    // by the next instance (a writer's retry landing elsewhere), so repeats race too.
    await Promise.all(
      ledgers.flatMap((ledger, l) =>
        Array.from({ length: CALLERS }, async (_, c) => {
          for (let k = 0; k < SHARDS_PER_CALLER; k++) {
            const shard = (l * CALLERS + c) * SHARDS_PER_CALLER + k;
            await report(ledger, shard, "started");
            await report(ledger, shard, "succeeded");
            await report(ledgers[(l + 1) % LEDGERS] as Ledger, shard, "succeeded");
          }
        }),
      ),
    );
    expect(refused).toEqual([]);
    for (let shard = 0; shard < NUM_SHARDS; shard++) {
      expect(answers.get(shard)).toEqual(["started:STARTED", "succeeded:SUCCEEDED", "succeeded:SUCCEEDED"]);
    }
    const events = (await t.ledger.events({ stream: "run-r", limit: 10_000 })).filter((e) =>
      e.type.startsWith("Attempt"),
    );
    const stored = events.map((e) => `${e.type} ${(e.data as { shard: number }).shard}`).sort();
    const expected = Array.from({ length: NUM_SHARDS }, (_, shard) => [
      `AttemptStarted ${shard}`,
      `AttemptSucceeded ${shard}`,
    ])
      .flat()
      .sort();
    expect(stored).toEqual(expected);
    const shown = await ledgers[LEDGERS - 1]?.run("r");
    expect(shown?.attempts.map((a) => a.status)).toEqual(Array(NUM_SHARDS).fill("SUCCEEDED"));
  });
});

describe(`run executors of several processes reporting to one run on ${BACKEND}`, () => {
  let database: Awaited<ReturnType<typeof openTestDatabase>>;
  const pools: Database[] = [];

  beforeEach(async () => {
    database = await openTestDatabase("multiproc", { poolSize: 6 });
  });
  afterEach(async () => {
    for (const p of pools.splice(0)) await p.close();
    await database.close();
  });

  /** An executor as another process would have it: its own log and, on the server, its own pool. */
  async function processExecutor(maxConflictRetries: number): Promise<RunExecutor> {
    let db = database.db;
    if (BACKEND === "postgres") {
      const own = await openDatabase(SERVER_URL as string, { schema: database.schema, poolSize: 6 });
      pools.push(own);
      db = own.db;
    }
    return new RunExecutor(
      createPgEventLog({ db, schema: database.schema }),
      () => new Date(),
      {},
      { maxConflictRetries },
    );
  }

  it("with no decide-again allowed by the retry bound, no report is refused: a writer that lost a conflict queues instead of spinning", async () => {
    // The bound is how often the executor decides again after a version conflict before it gives
    // up with CONCURRENCY; 1 allows no second decision. Four processes racing one run lose
    // conflicts all the time, so with the old decide-again-after-backoff every lost race refused
    // its group. A writer that lost a race must be served however low the bound (it only limits
    // spinning), since what it waits for is other writers' progress, not its own luck.
    const executors = await Promise.all(Array.from({ length: 4 }, () => processExecutor(1)));
    const [first] = executors as [RunExecutor];
    const callers = 12;
    const perCaller = 10;
    const numShards = executors.length * callers * perCaller;
    await first.execute({ type: "start", runId: "r", datasetId: "d", numShards });
    const view = (shard: number) => (s: RunState) => s.attempts.get(`${shard}/0/-`)?.status ?? "none";
    const refused: string[] = [];
    let accepted = 0;
    await Promise.all(
      executors.flatMap((executor, p) =>
        Array.from({ length: callers }, async (_, c) => {
          for (let k = 0; k < perCaller; k++) {
            const shard = (p * callers + c) * perCaller + k;
            for (const type of ["attemptStarted", "attemptSucceeded"] as const) {
              const command: ReportCommand =
                type === "attemptSucceeded"
                  ? { type, runId: "r", shard, attempt: 0, url: `file:///x/data/r/shard=${shard}/attempt=00` }
                  : { type, runId: "r", shard, attempt: 0 };
              try {
                const answer = await executor.report(command, { view: view(shard) });
                expect(answer.view).toBe(type === "attemptStarted" ? "STARTED" : "SUCCEEDED");
                accepted++;
              } catch (e) {
                refused.push(`${type} ${shard}: ${JSON.stringify(errorBody(e).error)}`);
              }
            }
          }
        }),
      ),
    );
    expect(refused).toEqual([]);
    expect(accepted).toBe(numShards * 2);
    const state = await first.load("r");
    expect(state.attempts.size).toBe(numShards);
    expect([...state.attempts.values()].every((a) => a.status === "SUCCEEDED")).toBe(true);
    const stored = (
      await createPgEventLog({ db: database.db, schema: database.schema }).readStream("run-r")
    ).filter((e) => e.type.startsWith("Attempt"));
    expect(stored).toHaveLength(numShards * 2);
  });
});
