import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { InlineProjection } from "../../src/adapters/postgres/inline-projection.js";
import { createPgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import { isConcurrencyError } from "../../src/errors.js";
import type { EventLog } from "../../src/events/event-log.js";
import { type ReportCommand, RunExecutor } from "../../src/ledger/run-executor.js";
import { BACKEND, openTestDatabase } from "../support/database.js";

/*
 * A run's report groups are appended chained (AppendChain): while one group's append is between
 * writing its events and committing, the next group's append is sent behind it, and commits only
 * on exactly what the first one stored. On PGlite (one connection) appends never overlap, and the
 * same tests show the groups appended one after another with the same answers.
 */
describe(`report groups appended behind one another on ${BACKEND}`, () => {
  let database: Awaited<ReturnType<typeof openTestDatabase>>;
  beforeEach(async () => {
    database = await openTestDatabase("chained-groups", { poolSize: 8 });
  });
  afterEach(() => database.close());

  const started = (shard: number): ReportCommand => ({
    type: "attemptStarted",
    runId: "r",
    shard,
    attempt: 0,
  });
  const view = (s: { attempts: ReadonlyMap<string, { status: string }> }, c: ReportCommand) =>
    s.attempts.get(`${c.shard}/0/-`)?.status ?? "none";

  /**
   * The log of the test (overlapping appends where the backend has them), wrapped to see each
   * append: `afterAppend` may fail one after it returned (an answer lost after the commit).
   *
   * The first group's transaction (the first append of 1,000 events) is held between writing its
   * events and its commit until an append chained behind it has been sent, so that the chain is
   * seen whatever the machine's speed (a wait of at most 5 s; on PGlite, where nothing chains, not
   * at all); `failFirstGroup` then fails that transaction instead of committing it.
   */
  function observedLog(options: { failFirstGroup?: boolean; afterAppend?: (n: number) => void } = {}) {
    let chainedSent: () => void = () => {};
    const sentBehind = new Promise<void>((resolve) => {
      chainedSent = resolve;
    });
    let held = false;
    const holdFirstGroup: InlineProjection = {
      name: "holds-the-first-group",
      async apply(_trx, events) {
        if (held || events.length < 1000) return;
        held = true;
        if (BACKEND === "postgres")
          await Promise.race([sentBehind, new Promise((resolve) => setTimeout(resolve, 5000))]);
        if (options.failFirstGroup)
          throw new Error("the first group's transaction fails after writing (test)");
      },
    };
    const log = createPgEventLog({
      db: database.db,
      schema: database.schema,
      overlappingAppends: BACKEND === "postgres",
      projections: [holdFirstGroup],
    });
    const seen = { appends: 0, inFlight: 0, sentBehindUncommitted: 0, chainedRefused: 0 };
    const wrapped: EventLog = {
      readAll: (o) => log.readAll(o),
      readStream: (s, o) => log.readStream(s, o),
      streamVersion: (s) => log.streamVersion(s),
      transaction: (fn, o) => log.transaction(fn, o),
      async append(stream, events, o) {
        const n = ++seen.appends;
        if (seen.inFlight > 0 && o.chain?.afterPosition !== undefined) seen.sentBehindUncommitted++;
        if (o.chain?.afterPosition !== undefined) chainedSent();
        seen.inFlight++;
        try {
          const result = await log.append(stream, events, o);
          options.afterAppend?.(n);
          return result;
        } catch (e) {
          if (isConcurrencyError(e) && o.chain?.afterPosition !== undefined) seen.chainedRefused++;
          throw e;
        } finally {
          seen.inFlight--;
        }
      },
    };
    return { wrapped, seen };
  }

  async function startedRun(log: EventLog, shards: number) {
    const executor = new RunExecutor(log, () => new Date(), {});
    await executor.execute({ type: "start", runId: "r", datasetId: "d", numShards: shards });
    return executor;
  }

  /** The shards of the run's AttemptStarted events, in stream order, and whether versions are contiguous. */
  async function storedShards(log: EventLog) {
    const stream = await log.readStream("run-r");
    return {
      shards: stream
        .filter((e) => e.type === "AttemptStarted")
        .map((e) => (e.data as { shard: number }).shard),
      contiguous: stream.every((e, i) => e.streamVersion === i + 1),
    };
  }

  it("3,000 waiting reports: each group's append is sent before the previous one committed, and every report lands once, in order", async () => {
    const { wrapped, seen } = observedLog();
    const executor = await startedRun(wrapped, 3000);
    const outcomes = await executor.reportAll(
      Array.from({ length: 3000 }, (_, shard) => started(shard)),
      { view },
    );
    expect(outcomes.every((o) => o.ok && o.view === "STARTED")).toBe(true);
    const { shards, contiguous } = await storedShards(wrapped);
    expect(shards).toEqual(Array.from({ length: 3000 }, (_, i) => i));
    expect(contiguous).toBe(true);
    // One append per group of 1,000 (and the start).
    expect(seen.appends).toBe(4);
    if (BACKEND === "postgres") expect(seen.sentBehindUncommitted).toBeGreaterThanOrEqual(1);
    else expect(seen.sentBehindUncommitted).toBe(0);
    const fresh = await new RunExecutor(wrapped, () => new Date(), {}).load("r");
    expect(fresh.attempts.size).toBe(3000);
  });

  it("the append ahead fails after writing: the group sent behind it is refused by its head check and decided again, and nothing is lost or doubled", async () => {
    // Fails the first group's transaction after its events are written (the projections run
    // between writing and commit), once the next group's append waits behind it.
    const { wrapped, seen } = observedLog({ failFirstGroup: true });
    const executor = await startedRun(wrapped, 2000);
    const outcomes = await executor.reportAll(
      Array.from({ length: 2000 }, (_, shard) => started(shard)),
      { view },
    );
    expect(outcomes.slice(0, 1000).every((o) => !o.ok && /fails after writing/.test(String(o.error)))).toBe(
      true,
    );
    expect(outcomes.slice(1000).every((o) => o.ok && o.view === "STARTED")).toBe(true);
    const { shards, contiguous } = await storedShards(wrapped);
    expect(shards).toEqual(Array.from({ length: 1000 }, (_, i) => 1000 + i));
    expect(contiguous).toBe(true);
    if (BACKEND === "postgres") {
      expect(seen.sentBehindUncommitted).toBeGreaterThanOrEqual(1);
      expect(seen.chainedRefused).toBeGreaterThanOrEqual(1);
    }
    // The executor's own state agrees with the log: the failed group's shards can still report.
    const again = await executor.reportAll([started(0)], { view });
    expect(again).toEqual([{ ok: true, view: "STARTED" }]);
    expect((await executor.load("r")).attempts.size).toBe(1001);
  });

  it("the append ahead committed but its answer was lost: the group sent behind it stands on its own success", async () => {
    const { wrapped, seen } = observedLog({
      afterAppend: (n) => {
        // Append 1 is the start; 2 is the first group's, committed before this throws.
        if (n === 2) throw new Error("connection lost after the commit (test)");
      },
    });
    const executor = await startedRun(wrapped, 2000);
    const outcomes = await executor.reportAll(
      Array.from({ length: 2000 }, (_, shard) => started(shard)),
      { view },
    );
    expect(outcomes.slice(0, 1000).every((o) => !o.ok && /connection lost/.test(String(o.error)))).toBe(true);
    expect(outcomes.slice(1000).every((o) => o.ok && o.view === "STARTED")).toBe(true);
    const { shards, contiguous } = await storedShards(wrapped);
    expect(shards).toEqual(Array.from({ length: 2000 }, (_, i) => i));
    expect(contiguous).toBe(true);
    if (BACKEND === "postgres") expect(seen.sentBehindUncommitted).toBeGreaterThanOrEqual(1);
    // The callers of the first group retry: repeats, answered from the state the log holds.
    const retried = await executor.reportAll(
      Array.from({ length: 1000 }, (_, shard) => started(shard)),
      { view },
    );
    expect(retried.every((o) => o.ok && o.view === "STARTED")).toBe(true);
    expect((await storedShards(wrapped)).shards).toHaveLength(2000);
  });
});
