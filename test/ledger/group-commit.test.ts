import { sql } from "kysely";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createPgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import { ContradictingReportError, isValidationError, ValidationError } from "../../src/errors.js";
import type { NewEvent } from "../../src/events/envelope.js";
import type { EventLog } from "../../src/events/event-log.js";
import type { AttemptReport, AttemptResult, Ledger } from "../../src/ledger/open-ledger.js";
import { type ReportCommand, RunExecutor } from "../../src/ledger/run-executor.js";
import type { RunState } from "../../src/machines/run-state.js";
import { BACKEND, openTestDatabase } from "../support/database.js";
import { openTestLedger } from "../support/ledger.js";

const url = (root: string, runId: string, shard: number, attempt: number) =>
  `${root}/data/${runId}/shard=${String(shard).padStart(5, "0")}/attempt=${String(attempt).padStart(2, "0")}`;

describe(`group commit of attempt reports on ${BACKEND}`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;

  beforeEach(async () => {
    t = await openTestLedger({ poolSize: 12 });
    ledger = t.ledger;
    await ledger.createDataset({ datasetId: "ds", root: t.root, safetyWindow: "0s" });
  });
  afterEach(() => t.close());

  /** Appends to the run's stream: one append is one transaction of the log. */
  async function appendsTo(runId: string): Promise<number> {
    const { rows } = await sql<{ n: string | number }>`
      SELECT count(DISTINCT transaction_id) AS n FROM ${sql.id(t.schema, "events")}
      WHERE stream_id = ${`run-${runId}`}`.execute(t.database.db);
    return Number(rows[0]?.n);
  }
  const eventsOf = async (runId: string) => ledger.events({ stream: `run-${runId}`, limit: 10_000 });
  const reportEvents = async (runId: string) =>
    (await eventsOf(runId)).filter((e) => e.type.startsWith("Attempt"));

  it("64 concurrent reporters of one run share a few appends, and each gets its own answer", async () => {
    await ledger.startRun({ datasetId: "ds", numShards: 64, runId: "r" });
    const before = await appendsTo("r");
    const answers = await Promise.all(
      Array.from({ length: 64 }, async (_, shard) => {
        const started = await ledger.attemptStarted({ runId: "r", shard, attempt: 0 });
        const succeeded = await ledger.attemptSucceeded({
          runId: "r",
          shard,
          attempt: 0,
          url: url(t.root, "r", shard, 0),
        });
        return { started, succeeded };
      }),
    );
    const appends = (await appendsTo("r")) - before;
    // 128 reports; one at a time they took 128 appends.
    expect(appends).toBeGreaterThan(0);
    expect(appends).toBeLessThanOrEqual(16);
    expect(await reportEvents("r")).toHaveLength(128);
    for (const [shard, { started, succeeded }] of answers.entries()) {
      expect(started).toEqual({
        runId: "r",
        shard,
        attempt: 0,
        taskAttemptId: null,
        url: null,
        status: "STARTED",
      });
      expect(succeeded).toEqual({
        runId: "r",
        shard,
        attempt: 0,
        taskAttemptId: null,
        url: url(t.root, "r", shard, 0),
        status: "SUCCEEDED",
      });
    }
    const shown = await ledger.run("r");
    expect(shown.attempts.map((a) => a.status)).toEqual(Array(64).fill("SUCCEEDED"));
  });

  it("answers each report of a group with its own attempt as it stood right after that report", async () => {
    await ledger.startRun({ datasetId: "ds", numShards: 2, runId: "r" });
    const before = await appendsTo("r");
    const [started, succeeded] = await Promise.all([
      ledger.attemptStarted({ runId: "r", shard: 0, attempt: 0 }),
      ledger.attemptSucceeded({ runId: "r", shard: 0, attempt: 0, url: url(t.root, "r", 0, 0) }),
    ]);
    expect(await appendsTo("r")).toBe(before + 1);
    expect(started.status).toBe("STARTED");
    expect(started.url).toBeNull();
    expect(succeeded.status).toBe("SUCCEEDED");
  });

  it("a refused report in a group fails only its own caller; the others are stored in one append", async () => {
    await ledger.startRun({ datasetId: "ds", numShards: 4, runId: "r" });
    await ledger.attemptSucceeded({ runId: "r", shard: 3, attempt: 0, url: url(t.root, "r", 3, 0) });
    const before = await appendsTo("r");
    const calls: Promise<AttemptResult>[] = [
      ledger.attemptSucceeded({ runId: "r", shard: 0, attempt: 0, url: url(t.root, "r", 0, 0) }),
      // Outside the run: the shard names no shard of it.
      ledger.attemptSucceeded({ runId: "r", shard: 9, attempt: 0, url: url(t.root, "r", 9, 0) }),
      ledger.attemptFailed({ runId: "r", shard: 1, attempt: 0, error: "lost" }),
      // Outside the run's data area: refused by the safety rail in prepare.
      ledger.attemptSucceeded({ runId: "r", shard: 2, attempt: 0, url: `${t.root}/manifests/r.json` }),
      // Contradicts what is recorded: another url for the same attempt.
      ledger.attemptSucceeded({ runId: "r", shard: 3, attempt: 0, url: url(t.root, "r", 3, 7) }),
      ledger.attemptStarted({ runId: "r", shard: 2, attempt: 1 }),
    ];
    const settled = await Promise.allSettled(calls);
    expect(settled.map((s) => s.status)).toEqual([
      "fulfilled",
      "rejected",
      "fulfilled",
      "rejected",
      "rejected",
      "fulfilled",
    ]);
    const reason = (i: number) =>
      (settled[i] as PromiseRejectedResult).reason as { code: string; field?: string };
    expect(reason(1).code).toBe("VALIDATION");
    expect(reason(1).field).toBe("shard");
    expect(reason(3).code).toBe("SAFETY_RAIL");
    expect(reason(4)).toBeInstanceOf(ContradictingReportError);
    expect(await appendsTo("r")).toBe(before + 1);
    const stored = (await reportEvents("r")).map((e) => {
      const d = e.data as { shard: number; attempt: number };
      return `${e.type} ${d.shard}/${d.attempt}`;
    });
    expect(stored).toEqual([
      "AttemptSucceeded 3/0",
      "AttemptSucceeded 0/0",
      "AttemptFailed 1/0",
      "AttemptStarted 2/1",
    ]);
  });

  it("reportAttempts validates each item on its own and answers in input order", async () => {
    await ledger.startRun({ datasetId: "ds", numShards: 4, runId: "r" });
    const before = await appendsTo("r");
    const results = await ledger.reportAttempts([
      { kind: "started", runId: "r", shard: 0, attempt: 0 },
      { kind: "succeeded", runId: "r", shard: -1, attempt: 0 },
      { kind: "bogus", runId: "r", shard: 1, attempt: 0 } as unknown as AttemptReport,
      { kind: "failed", runId: "r", shard: 1, attempt: 0, error: "oom", taskAttemptId: "42" },
      { kind: "succeeded", runId: "r", shard: 2, attempt: 0, error: "no" } as unknown as AttemptReport,
      { kind: "succeeded", runId: "nope", shard: 2, attempt: 0 },
      { kind: "succeeded", runId: "r", shard: 2, attempt: 0, url: url(t.root, "r", 2, 0) },
    ]);
    expect(results.map((r) => r.index)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(results.map((r) => (r.ok ? r.attempt.status : `${r.error.code}:${r.error.field ?? ""}`))).toEqual([
      "STARTED",
      "VALIDATION:shard",
      "VALIDATION:kind",
      "FAILED",
      "VALIDATION:error",
      "NOT_FOUND:",
      "SUCCEEDED",
    ]);
    const failed = results[3];
    expect(failed?.ok && failed.attempt).toEqual({
      runId: "r",
      shard: 1,
      attempt: 0,
      taskAttemptId: "42",
      url: null,
      status: "FAILED",
    });
    expect(await appendsTo("r")).toBe(before + 1);
    expect(await reportEvents("r")).toHaveLength(3);
  });

  it("repeats inside one group and across groups write nothing and answer the same", async () => {
    await ledger.startRun({ datasetId: "ds", numShards: 2, runId: "r" });
    const batch: AttemptReport[] = [
      { kind: "succeeded", runId: "r", shard: 0, attempt: 0, url: url(t.root, "r", 0, 0) },
      { kind: "succeeded", runId: "r", shard: 0, attempt: 0, url: url(t.root, "r", 0, 0) },
      // The same attempt again without its url completes nothing and contradicts nothing.
      { kind: "succeeded", runId: "r", shard: 0, attempt: 0 },
      { kind: "failed", runId: "r", shard: 1, attempt: 0, error: "x" },
      { kind: "failed", runId: "r", shard: 1, attempt: 0, error: "x" },
    ];
    const first = await ledger.reportAttempts(batch);
    expect(first.every((r) => r.ok)).toBe(true);
    expect(await reportEvents("r")).toHaveLength(2);
    const appends = await appendsTo("r");
    const again = await ledger.reportAttempts(batch);
    expect(again).toEqual(first);
    // Across groups too: the same reports as concurrent single calls.
    const singles = await Promise.all([
      ledger.attemptSucceeded({ runId: "r", shard: 0, attempt: 0, url: url(t.root, "r", 0, 0) }),
      ledger.attemptFailed({ runId: "r", shard: 1, attempt: 0, error: "x" }),
    ]);
    expect(singles).toEqual([first[0]?.ok && first[0].attempt, first[3]?.ok && first[3].attempt]);
    expect(await appendsTo("r")).toBe(appends);
    expect(await reportEvents("r")).toHaveLength(2);
  });

  it("a contradiction inside one group: the first report stands, the second caller gets ContradictingReportError", async () => {
    await ledger.startRun({ datasetId: "ds", numShards: 1, runId: "r" });
    const results = await ledger.reportAttempts([
      { kind: "succeeded", runId: "r", shard: 0, attempt: 0, url: url(t.root, "r", 0, 0) },
      { kind: "succeeded", runId: "r", shard: 0, attempt: 0, url: url(t.root, "r", 0, 1) },
      { kind: "failed", runId: "r", shard: 0, attempt: 0, error: "late" },
    ]);
    expect(results[0]?.ok).toBe(true);
    expect(results.slice(1).map((r) => !r.ok && r.error.code)).toEqual([
      "CONTRADICTING_REPORT",
      "CONTRADICTING_REPORT",
    ]);
    const stored = await reportEvents("r");
    expect(stored.map((e) => [e.type, (e.data as { url: string }).url])).toEqual([
      ["AttemptSucceeded", url(t.root, "r", 0, 0)],
    ]);
  });

  it("bounds a group: 2,500 waiting reports of one run take three appends (1,000 + 1,000 + 500)", async () => {
    await ledger.startRun({ datasetId: "ds", numShards: 2500, runId: "r" });
    const before = await appendsTo("r");
    const results = await ledger.reportAttempts(
      Array.from({ length: 2500 }, (_, shard) => ({
        kind: "started" as const,
        runId: "r",
        shard,
        attempt: 0,
      })),
    );
    expect(results.every((r) => r.ok)).toBe(true);
    expect((await appendsTo("r")) - before).toBe(3);
    expect(await reportEvents("r")).toHaveLength(2500);
  });

  it("reports of several runs in one batch go to each run's own group", async () => {
    await ledger.startRun({ datasetId: "ds", numShards: 2, runId: "a" });
    await ledger.startRun({ datasetId: "ds", numShards: 2, runId: "b" });
    const [a, b] = [await appendsTo("a"), await appendsTo("b")];
    const results = await ledger.reportAttempts([
      { kind: "started", runId: "a", shard: 0, attempt: 0 },
      { kind: "started", runId: "b", shard: 0, attempt: 0 },
      { kind: "started", runId: "a", shard: 1, attempt: 0 },
      { kind: "started", runId: "b", shard: 1, attempt: 0 },
    ]);
    expect(results.map((r) => r.ok && r.attempt.runId)).toEqual(["a", "b", "a", "b"]);
    expect([await appendsTo("a"), await appendsTo("b")]).toEqual([a + 1, b + 1]);
  });

  it("a report that lands after publish is a loser at once", async () => {
    await ledger.startRun({ datasetId: "ds", numShards: 1, runId: "r" });
    await ledger.attemptSucceeded({ runId: "r", shard: 0, attempt: 0, url: url(t.root, "r", 0, 0) });
    await ledger.publish("r");
    const results = await ledger.reportAttempts([
      { kind: "succeeded", runId: "r", shard: 0, attempt: 1, url: url(t.root, "r", 0, 1) },
      { kind: "failed", runId: "r", shard: 0, attempt: 2, error: "x" },
    ]);
    expect(results.map((r) => r.ok && r.attempt.status)).toEqual(["LOSER", "LOSER"]);
    const shown = await ledger.run("r");
    expect(shown.attempts.map((a) => a.status).sort()).toEqual(["LOSER", "LOSER", "WINNER"]);
  });

  it("refuses a batch that is not a list or is too large, writing nothing", async () => {
    await ledger.startRun({ datasetId: "ds", numShards: 1, runId: "r" });
    const versions = (await eventsOf("r")).length;
    for (const bad of [
      { reports: "no" as unknown as AttemptReport[] },
      {
        reports: Array.from({ length: 10_001 }, () => ({
          kind: "started" as const,
          runId: "r",
          shard: 0,
          attempt: 0,
        })),
      },
    ]) {
      const error = await ledger.reportAttempts(bad.reports).then(
        () => null,
        (e: unknown) => e,
      );
      expect(isValidationError(error) && error.field).toBe("reports");
    }
    expect(await ledger.reportAttempts([])).toEqual([]);
    expect((await eventsOf("r")).length).toBe(versions);
  });
});

describe(`RunExecutor.report over a wrapped event log on ${BACKEND}`, () => {
  let database: Awaited<ReturnType<typeof openTestDatabase>>;
  beforeEach(async () => {
    database = await openTestDatabase("group");
  });
  afterEach(() => database.close());

  /** The real log, with its appends counted and, when `before` says so, something done first. */
  function wrappedLog(before?: (events: readonly NewEvent[]) => Promise<void>) {
    const log = createPgEventLog({ db: database.db, schema: database.schema });
    const counted = { appends: 0, reads: 0 };
    const wrapped: EventLog = {
      readAll: (o) => log.readAll(o),
      readStream: (s, o) => {
        counted.reads++;
        return log.readStream(s, o);
      },
      streamVersion: (s) => log.streamVersion(s),
      // A retry after a lost race appends through a serialised transaction: counted too.
      transaction: (fn, o) =>
        log.transaction(
          (session) =>
            fn({
              ...session,
              append(stream, events, options) {
                counted.appends++;
                return session.append(stream, events, options);
              },
            }),
          o,
        ),
      async append(stream, events, options) {
        counted.appends++;
        await before?.(events);
        return log.append(stream, events, options);
      },
    };
    return { log, wrapped, counted };
  }
  /** A log that refuses any append holding an event of shard 3 (nothing of it is written). */
  const refuseShard3 = async (events: readonly NewEvent[]) => {
    if (events.some((e) => (e.data as { shard?: number }).shard === 3)) {
      throw new ValidationError("AttemptStarted.shard", "refused by the log (test)");
    }
  };
  const view = (shard: number) => (s: RunState) => s.attempts.get(`${shard}/0/-`)?.status ?? "none";
  const started = (shard: number): ReportCommand => ({
    type: "attemptStarted",
    runId: "r",
    shard,
    attempt: 0,
  });

  it("64 concurrent reports: appends ≪ reports", async () => {
    const { wrapped, counted } = wrappedLog();
    const executor = new RunExecutor(wrapped, () => new Date(), {});
    await executor.execute({ type: "start", runId: "r", datasetId: "d", numShards: 64 });
    counted.appends = 0;
    const views = await Promise.all(
      Array.from({ length: 64 }, (_, shard) => executor.report(started(shard), { view: view(shard) })),
    );
    expect(views.map((v) => v.view)).toEqual(Array(64).fill("STARTED"));
    expect(views.every((v) => v.events.length === 1)).toBe(true);
    expect(counted.appends).toBeLessThanOrEqual(2);
    expect((await executor.load("r")).attempts.size).toBe(64);
  });

  it("an event the log refuses fails only its own report: the group is retried one by one", async () => {
    const { wrapped } = wrappedLog(refuseShard3);
    const executor = new RunExecutor(wrapped, () => new Date(), {});
    await executor.execute({ type: "start", runId: "r", datasetId: "d", numShards: 8 });
    const settled = await Promise.allSettled(
      [1, 2, 3, 4].map((shard) => executor.report(started(shard), { view: view(shard) })),
    );
    expect(settled.map((s) => s.status)).toEqual(["fulfilled", "fulfilled", "rejected", "fulfilled"]);
    const state = await executor.load("r");
    expect([...state.attempts.keys()].sort()).toEqual(["1/0/-", "2/0/-", "4/0/-"]);
  });

  it("reportAll answers a batch across runs once per slot, in input order: one append per run, a refused report fails only its slot", async () => {
    const { wrapped, counted } = wrappedLog();
    const executor = new RunExecutor(wrapped, () => new Date(), {});
    await executor.execute({ type: "start", runId: "r", datasetId: "d", numShards: 8 });
    await executor.execute({ type: "start", runId: "q", datasetId: "d", numShards: 8 });
    counted.appends = 0;
    const commands: ReportCommand[] = [
      started(0),
      { type: "attemptSucceeded", runId: "q", shard: 1, attempt: 0 },
      { type: "attemptSucceeded", runId: "r", shard: 0, attempt: 0 },
      // Contradicts the report just before it: refused, and only this slot says so.
      { type: "attemptFailed", runId: "r", shard: 0, attempt: 0, error: "late" },
      { type: "attemptStarted", runId: "nobody", shard: 0, attempt: 0 },
      started(5),
    ];
    const views: string[] = [];
    const outcomes = await executor.reportAll(commands, {
      view: (s, c) => {
        views.push(`${c.runId}/${c.shard}`);
        return s.attempts.get(`${c.shard}/0/-`)?.status ?? "none";
      },
    });
    expect(outcomes.map((o) => (o.ok ? o.view : (o.error as Error).name))).toEqual([
      "STARTED",
      "SUCCEEDED",
      "SUCCEEDED",
      "ContradictingReportError",
      "NotFoundError",
      "STARTED",
    ]);
    // `view` is given each report's own command, once per report that was decided.
    expect(views.sort()).toEqual(["q/1", "r/0", "r/0", "r/5"]);
    expect(counted.appends).toBe(2);
    expect([...(await executor.load("r")).attempts.keys()].sort()).toEqual(["0/0/-", "5/0/-"]);
    expect([...(await executor.load("q")).attempts.keys()]).toEqual(["1/0/-"]);
    expect(await executor.reportAll([], { view: () => "never" })).toEqual([]);
  });

  it("reportAll: an event the log refuses fails only its own slot, and a prepare that must wait is awaited", async () => {
    const { wrapped } = wrappedLog(refuseShard3);
    const executor = new RunExecutor(wrapped, () => new Date(), {});
    await executor.execute({ type: "start", runId: "r", datasetId: "d", numShards: 8 });
    const outcomes = await executor.reportAll([1, 2, 3, 4].map(started), {
      // Odd shards are completed at once, even ones only after a turn of the event loop.
      prepare: (c) => (c.shard % 2 === 1 ? c : new Promise((resolve) => setImmediate(() => resolve(c)))),
      view: (s, c) => s.attempts.get(`${c.shard}/0/-`)?.status ?? "none",
    });
    expect(outcomes.map((o) => (o.ok ? o.view : isValidationError(o.error)))).toEqual([
      "STARTED",
      "STARTED",
      true,
      "STARTED",
    ]);
    expect([...(await executor.load("r")).attempts.keys()].sort()).toEqual(["1/0/-", "2/0/-", "4/0/-"]);
  });

  it("a report another process stored between our read and our append is answered from the log", async () => {
    const other = new RunExecutor(
      createPgEventLog({ db: database.db, schema: database.schema }),
      () => new Date(),
      {},
    );
    let injected = true;
    const { wrapped } = wrappedLog(async () => {
      if (injected) return;
      injected = true;
      // The same report (same deterministic event id), stored by another process first.
      await other.report(started(0), { view: view(0) });
    });
    const executor = new RunExecutor(wrapped, () => new Date(), {});
    await executor.execute({ type: "start", runId: "r", datasetId: "d", numShards: 2 });
    injected = false;
    const answer = await executor.report(started(0), { view: view(0) });
    expect(answer).toEqual({ view: "STARTED", events: [] });
    const stream = await wrapped.readStream("run-r");
    expect(stream.map((e) => e.type)).toEqual(["RunStarted", "AttemptStarted"]);
  });

  it("a group whose event another process stored first in another form is decided again as a whole, in order", async () => {
    // Found by the group-commit race property (GROUP_RACE_RUNS=100 on PostgreSQL, about one run in
    // six): the group's only event was already stored, by another process, with a url. The
    // append stored nothing and answered without a version check, and a report of the group that
    // had been refused because of that event's url-less form kept its refusal although the log
    // never held that form.
    const other = new RunExecutor(
      createPgEventLog({ db: database.db, schema: database.schema }),
      () => new Date(),
      {},
    );
    const u = "file:///lake/d/data/r/shard=00000/attempt=00";
    let injected = true;
    const { wrapped, counted } = wrappedLog(async () => {
      if (injected) return;
      injected = true;
      // Between our read and our append: the same success (same deterministic event id), with its url.
      await other.report(
        { type: "attemptSucceeded", runId: "r", shard: 0, attempt: 0, url: u },
        { view: view(0) },
      );
    });
    const executor = new RunExecutor(wrapped, () => new Date(), {});
    await executor.execute({ type: "start", runId: "r", datasetId: "d", numShards: 2 });
    injected = false;
    counted.appends = 0;
    // One group, in this order: the success without a url, then a start that names the url.
    const [success, start] = await Promise.allSettled([
      executor.report({ type: "attemptSucceeded", runId: "r", shard: 0, attempt: 0 }, { view: view(0) }),
      executor.report(
        { type: "attemptStarted", runId: "r", shard: 0, attempt: 0, url: u },
        { view: view(0) },
      ),
    ]);
    // In the log's order both agree with the stored success: a repeat, and a start naming its url.
    expect(success).toMatchObject({ status: "fulfilled", value: { view: "SUCCEEDED" } });
    expect(start).toMatchObject({ status: "fulfilled", value: { view: "SUCCEEDED" } });
    const stream = await wrapped.readStream("run-r");
    expect(stream.map((e) => e.type)).toEqual(["RunStarted", "AttemptSucceeded"]);
    expect(stream[1]?.data).toMatchObject({ url: u });
    expect((await executor.load("r")).attempts.get("0/0/-")).toMatchObject({ outcome: "SUCCEEDED", url: u });
  });

  it("reports arriving while a group loses a race join its retry: one more append stores them all", async () => {
    const other = new RunExecutor(
      createPgEventLog({ db: database.db, schema: database.schema }),
      () => new Date(),
      {},
    );
    let injected = true;
    const late: Promise<unknown>[] = [];
    let executor: RunExecutor | undefined;
    const { wrapped, counted } = wrappedLog(async () => {
      if (injected) return;
      injected = true;
      // While our group's append is in flight, two more reports of the run arrive here, and
      // another process appends to the run first: our append will lose the race.
      late.push(
        (executor as RunExecutor).report(started(1), { view: view(1) }),
        (executor as RunExecutor).report(started(2), { view: view(2) }),
      );
      await other.report(started(3), { view: view(3) });
    });
    executor = new RunExecutor(wrapped, () => new Date(), {});
    await executor.execute({ type: "start", runId: "r", datasetId: "d", numShards: 4 });
    injected = false;
    counted.appends = 0;
    const first = await executor.report(started(0), { view: view(0) });
    const rest = await Promise.all(late);
    expect(first.view).toBe("STARTED");
    expect(rest.map((r) => (r as { view: string }).view)).toEqual(["STARTED", "STARTED"]);
    // The lost append, then ONE append (under the run stream's lock) for the group and the two
    // that arrived meanwhile.
    expect(counted.appends).toBe(2);
    const stored = (await wrapped.readStream("run-r")).map(
      (e) => `${e.type} ${(e.data as { shard?: number }).shard ?? ""}`,
    );
    expect(stored).toEqual([
      "RunStarted ",
      "AttemptStarted 3",
      "AttemptStarted 0",
      "AttemptStarted 1",
      "AttemptStarted 2",
    ]);
  });

  it("reports arriving while a group's append is in flight are decided meanwhile and appended right after it, without reading the run again", async () => {
    let calls = 0;
    const late: Promise<{ view: unknown }>[] = [];
    let executor: RunExecutor | undefined;
    let armed = false;
    const { wrapped, counted } = wrappedLog(async () => {
      if (!armed) return;
      calls++;
      if (calls !== 1) return;
      // The first group's append is in flight: 300 more reports of the run arrive (enough to be
      // decided ahead; a few would be left to gather until the append has answered).
      for (let shard = 1; shard <= 300; shard++)
        late.push((executor as RunExecutor).report(started(shard), { view: view(shard) }));
    });
    executor = new RunExecutor(wrapped, () => new Date(), {});
    await executor.execute({ type: "start", runId: "r", datasetId: "d", numShards: 301 });
    armed = true;
    counted.appends = 0;
    counted.reads = 0;
    const first = await executor.report(started(0), { view: view(0) });
    const rest = await Promise.all(late);
    expect([first, ...rest].map((r) => r.view)).toEqual(Array(301).fill("STARTED"));
    // Two appends, and the run read once: the second group was decided on the state the first
    // one's append left, while it was being stored, not read back and decided after it.
    expect(counted.appends).toBe(2);
    expect(counted.reads).toBe(1);
    const stored = (await wrapped.readStream("run-r")).map(
      (e) => `${e.type} ${(e.data as { shard?: number }).shard ?? ""}`,
    );
    expect(stored).toEqual([
      "RunStarted ",
      ...Array.from({ length: 301 }, (_, shard) => `AttemptStarted ${shard}`),
    ]);
  });

  it("a group decided while the previous one was stored is decided again when another process appended in between", async () => {
    const other = new RunExecutor(
      createPgEventLog({ db: database.db, schema: database.schema }),
      () => new Date(),
      {},
    );
    let calls = 0;
    const late: Promise<unknown>[] = [];
    const others: Promise<{ view: unknown }>[] = [];
    let executor: RunExecutor | undefined;
    let armed = false;
    const { wrapped, counted } = wrappedLog(async () => {
      if (!armed) return;
      calls++;
      if (calls === 1) {
        // The first group's append is in flight: shard 1's success is reported here, and is
        // decided (as succeeded) while that append is stored.
        late.push(
          (executor as RunExecutor).report({ ...started(1), type: "attemptSucceeded" }, { view: view(1) }),
        );
        // …with enough others to be decided ahead as one group.
        for (let shard = 2; shard <= 300; shard++)
          others.push((executor as RunExecutor).report(started(shard), { view: view(shard) }));
      } else if (calls === 2) {
        // Before the second group's append reaches the log, another process records shard 1's
        // attempt as failed: the speculative decision is stale, and must not be stored.
        await other.report(
          { ...started(1), type: "attemptFailed", error: "lost executor" },
          { view: view(1) },
        );
      }
    });
    executor = new RunExecutor(wrapped, () => new Date(), {});
    await executor.execute({ type: "start", runId: "r", datasetId: "d", numShards: 301 });
    armed = true;
    counted.appends = 0;
    const first = await executor.report(started(0), { view: view(0) });
    const [second] = await Promise.allSettled(late);
    expect(first.view).toBe("STARTED");
    expect(second?.status).toBe("rejected");
    expect((second as PromiseRejectedResult).reason).toBeInstanceOf(ContradictingReportError);
    const stored = (await wrapped.readStream("run-r")).map(
      (e) => `${e.type} ${(e.data as { shard?: number }).shard ?? ""}`,
    );
    expect((await Promise.all(others)).map((r) => r.view)).toEqual(Array(299).fill("STARTED"));
    expect(stored).toEqual([
      "RunStarted ",
      "AttemptStarted 0",
      "AttemptFailed 1",
      ...Array.from({ length: 299 }, (_, k) => `AttemptStarted ${k + 2}`),
    ]);
  });

  it("a version conflict re-decides the whole group on fresh state", async () => {
    const other = new RunExecutor(
      createPgEventLog({ db: database.db, schema: database.schema }),
      () => new Date(),
      {},
    );
    let injected = true;
    const { wrapped, counted } = wrappedLog(async () => {
      if (injected) return;
      injected = true;
      // Another process records a different report of shard 0's attempt first: our group's
      // contradicting report must now fail, and the rest still commit.
      await other.report({ ...started(0), type: "attemptFailed", error: "x" }, { view: view(0) });
    });
    const executor = new RunExecutor(wrapped, () => new Date(), {});
    await executor.execute({ type: "start", runId: "r", datasetId: "d", numShards: 4 });
    injected = false;
    counted.appends = 0;
    const settled = await Promise.allSettled([
      executor.report({ ...started(0), type: "attemptSucceeded" }, { view: view(0) }),
      executor.report(started(1), { view: view(1) }),
      executor.report(started(2), { view: view(2) }),
    ]);
    expect(settled.map((s) => s.status)).toEqual(["rejected", "fulfilled", "fulfilled"]);
    expect((settled[0] as PromiseRejectedResult).reason).toBeInstanceOf(ContradictingReportError);
    expect(counted.appends).toBe(2);
    const types = (await wrapped.readStream("run-r")).map((e) => e.type);
    expect(types).toEqual(["RunStarted", "AttemptFailed", "AttemptStarted", "AttemptStarted"]);
  });
});
