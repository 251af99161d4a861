import { describe, expect, it } from "vitest";
import { type ErrorCode, isShardledgerError, type ShardledgerError } from "../../src/errors.js";
import { WINNERS_PER_EVENT } from "../../src/events/catalogue.js";
import { defaultCatalogue } from "../../src/events/event-catalogue.js";
import { ATTEMPT_TABLE, attemptPhaseInfo, RUN_TABLE } from "../../src/machines/machine-tables.js";
import {
  attemptEventId,
  coverageErrorFrom,
  type DecideContext,
  decideRun,
  type RunCommand,
  type RunEvent,
} from "../../src/machines/run-commands.js";
import {
  attemptKey,
  attemptsAtUrl,
  cloneRunState,
  evolveRun,
  type FoldableEvent,
  foldRun,
  initialRunState,
  type RunState,
} from "../../src/machines/run-state.js";

const T0 = new Date("2026-03-01T10:00:00.000Z");
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const RUN = "r1";
const url = (shard: number, attempt: number, task?: string) =>
  `s3://bucket/ds/data/${RUN}/shard=${String(shard).padStart(5, "0")}/attempt=${String(attempt).padStart(2, "0")}${task ? `-${task}` : ""}`;

/** given(commands…).when(command).then(events) — a run decided and folded live, as a caller does. */
class Scenario {
  state: RunState = initialRunState();
  readonly log: FoldableEvent[] = [];
  now = T0;
  failedRetentionMs = DAY;

  given(...commands: RunCommand[]): this {
    for (const c of commands) this.run(c);
    return this;
  }

  advance(ms: number): this {
    this.now = new Date(this.now.getTime() + ms);
    return this;
  }

  /** Decides and appends (as the log would: an id already stored is not stored again). */
  run(command: RunCommand, context: Partial<DecideContext> = {}): RunEvent[] {
    const events = decideRun(this.state, command, {
      now: this.now,
      failedRetentionMs: this.failedRetentionMs,
      ...context,
    });
    for (const e of events) {
      if (e.eventId !== undefined && this.ids.has(e.eventId)) continue;
      if (e.eventId !== undefined) this.ids.add(e.eventId);
      const recorded: FoldableEvent = { type: e.type, data: e.data, recordedAt: this.now };
      this.log.push(recorded);
      evolveRun(this.state, recorded);
    }
    return events;
  }

  /** The error a command is refused with (it must be refused). */
  refused(command: RunCommand, context: Partial<DecideContext> = {}): ShardledgerError {
    const before = cloneRunState(this.state);
    try {
      this.run(command, context);
    } catch (e) {
      if (!isShardledgerError(e)) throw e;
      expect(this.state).toEqual(before);
      return e;
    }
    throw new Error(`expected ${command.type} to be refused`);
  }

  readonly ids = new Set<string>();
}

const start = (numShards = 3): RunCommand => ({ type: "start", runId: RUN, datasetId: "ds", numShards });
const succeeded = (shard: number, attempt = 0, taskAttemptId: string | null = null): RunCommand => ({
  type: "attemptSucceeded",
  runId: RUN,
  shard,
  attempt,
  taskAttemptId,
  url: url(shard, attempt, taskAttemptId ?? undefined),
});
const failed = (shard: number, attempt = 0, taskAttemptId: string | null = null): RunCommand => ({
  type: "attemptFailed",
  runId: RUN,
  shard,
  attempt,
  taskAttemptId,
  url: url(shard, attempt, taskAttemptId ?? undefined),
  error: "executor lost",
});
const started = (shard: number, attempt = 0, taskAttemptId: string | null = null): RunCommand => ({
  type: "attemptStarted",
  runId: RUN,
  shard,
  attempt,
  taskAttemptId,
  url: url(shard, attempt, taskAttemptId ?? undefined),
});
const selectWinners: RunCommand = { type: "selectWinners", runId: RUN };
const manifest: RunCommand = {
  type: "recordManifest",
  runId: RUN,
  manifestUrl: "s3://bucket/ds/manifests/r1.json",
};
const markSucceeded: RunCommand = { type: "markSucceeded", runId: RUN };
const publish = [selectWinners, manifest, markSucceeded];

const code = (e: ShardledgerError): ErrorCode => e.code;
const statusOf = (s: Scenario, shard: number, attempt = 0, task: string | null = null) =>
  s.state.attempts.get(attemptKey(shard, attempt, task))?.status;

describe("the machines", () => {
  it("tabulate every reachable state of the statecharts", () => {
    expect([...RUN_TABLE.states].sort()).toEqual(
      [
        "NONE",
        "STARTED",
        "PUBLISHING.selecting",
        "PUBLISHING.winnersSelected",
        "PUBLISHING.manifestPublished",
        "SUCCEEDED",
        "FAILED",
        "PRUNED",
      ].sort(),
    );
    const statuses = new Set(ATTEMPT_TABLE.states.map((p) => attemptPhaseInfo(p).status));
    expect([...statuses].sort()).toEqual(
      ["STARTED", "SUCCEEDED", "FAILED", "WINNER", "LOSER", "CLEANUP_PENDING", "DELETED"].sort(),
    );
    // Only a success can win; a failure or an unfinished attempt can only lose.
    for (const phase of ATTEMPT_TABLE.states) {
      const to = ATTEMPT_TABLE.next(phase, "SELECT_WINNER");
      if (to !== undefined) expect(attemptPhaseInfo(phase).status).toBe("SUCCEEDED");
    }
  });
});

describe("start", () => {
  it("given no run, when started, then RunStarted with a deterministic id and a STARTED run", () => {
    const s = new Scenario();
    const [e] = s.run(start(4));
    expect(e?.type).toBe("RunStarted");
    expect(e?.data).toEqual({ runId: RUN, datasetId: "ds", numShards: 4 });
    expect(e?.eventId).toBe(decideRun(initialRunState(), start(4), { now: T0 })[0]?.eventId);
    expect(s.state).toMatchObject({
      status: "STARTED",
      runId: RUN,
      datasetId: "ds",
      numShards: 4,
      startedAt: T0,
      lastHeartbeatAt: T0,
      publishProgress: "none",
      version: 1,
    });
  });

  it("given a started run, an identical start is a no-op and a different one is refused", () => {
    const s = new Scenario().given(start(4));
    expect(s.run(start(4))).toEqual([]);
    expect(code(s.refused(start(5)))).toBe("ILLEGAL_TRANSITION");
    expect(code(s.refused({ type: "start", runId: RUN, datasetId: "other", numShards: 4 }))).toBe(
      "ILLEGAL_TRANSITION",
    );
  });

  it("refuses an identical start of a run that is no longer STARTED, naming its status", () => {
    const publishing = new Scenario().given(start(1), succeeded(0), selectWinners);
    const done = new Scenario().given(start(1), succeeded(0), ...publish);
    const failedRun = new Scenario().given(start(1), {
      type: "fail",
      runId: RUN,
      cause: "writer_abort",
      reason: "x",
    });
    for (const [s, status] of [
      [publishing, "PUBLISHING"],
      [done, "SUCCEEDED"],
      [failedRun, "FAILED"],
    ] as const) {
      const e = s.refused(start(1));
      expect(code(e)).toBe("ILLEGAL_TRANSITION");
      expect(e.message).toContain(status);
      expect(e.details).toMatchObject({ command: "start", state: status });
    }
  });

  it("refuses bad input naming the field", () => {
    const s = new Scenario();
    const e = s.refused({ type: "start", runId: RUN, datasetId: "ds", numShards: 0 });
    expect(e.code).toBe("VALIDATION");
    expect(e.details.field).toBe("RunStarted.data.numShards");
    expect(s.refused({ type: "start", runId: "../x", datasetId: "ds", numShards: 1 }).details.field).toBe(
      "RunStarted.data.runId",
    );
  });

  it("refuses a command for another run than the state's", () => {
    const s = new Scenario().given(start());
    const e = s.refused({ type: "heartbeat", runId: "r2" });
    expect(e.code).toBe("VALIDATION");
    expect(e.details.field).toBe("runId");
  });
});

describe("a run that does not exist", () => {
  const commands: RunCommand[] = [
    { type: "heartbeat", runId: RUN },
    succeeded(0),
    started(0),
    failed(0),
    selectWinners,
    manifest,
    markSucceeded,
    { type: "fail", runId: RUN, cause: "writer_abort", reason: "x" },
    { type: "reopen", runId: RUN },
    { type: "planCleanup", runId: RUN, url: url(0, 0), reason: "loser" },
    { type: "prune", runId: RUN, reason: "retention" },
    { type: "archive", runId: RUN, archiveUrl: "s3://b/_archive/run-r1.jsonl", events: 3 },
  ];
  for (const command of commands) {
    it(`refuses ${command.type} as not found`, () => {
      const e = new Scenario().refused(command);
      expect(e.code).toBe("NOT_FOUND");
      expect(e.details).toEqual({ kind: "run", id: RUN });
      expect(e.message).toBe(`run ${RUN} does not exist`);
    });
  }
});

describe("heartbeat", () => {
  it("given a STARTED run, when it heartbeats, then lastHeartbeatAt moves", () => {
    const s = new Scenario().given(start()).advance(60_000);
    const [e] = s.run({ type: "heartbeat", runId: RUN });
    expect(e).toMatchObject({ type: "RunHeartbeat", data: { runId: RUN } });
    expect(e?.eventId).toBeUndefined();
    expect(s.state.lastHeartbeatAt).toEqual(new Date(T0.getTime() + 60_000));
    expect(s.state.updatedAt).toEqual(new Date(T0.getTime() + 60_000));
  });

  it("lastReportAt moves with every report, also after publish, and not with a heartbeat or the publish itself", () => {
    const s = new Scenario().given(start(1)).advance(60_000);
    s.run({ type: "heartbeat", runId: RUN });
    expect(s.state.lastReportAt).toBeNull();
    s.given(started(0));
    const reported = new Date(T0.getTime() + 60_000);
    expect(s.state.lastReportAt).toEqual(reported);
    s.advance(60_000).given(succeeded(0));
    s.advance(60_000).given(...publish);
    expect(s.state.status).toBe("SUCCEEDED");
    expect(s.state.lastReportAt).toEqual(new Date(reported.getTime() + 60_000));
    s.advance(60_000).given(failed(0, 1));
    expect(s.state.lastReportAt).toEqual(new Date(reported.getTime() + 180_000));
  });

  it("is refused once the run is publishing, succeeded or failed", () => {
    const publishing = new Scenario().given(start(1), succeeded(0), selectWinners);
    expect(code(publishing.refused({ type: "heartbeat", runId: RUN }))).toBe("ILLEGAL_TRANSITION");
    const done = new Scenario().given(start(1), succeeded(0), ...publish);
    expect(code(done.refused({ type: "heartbeat", runId: RUN }))).toBe("ILLEGAL_TRANSITION");
    const failedRun = new Scenario().given(start(1), {
      type: "fail",
      runId: RUN,
      cause: "writer_abort",
      reason: "x",
    });
    expect(code(failedRun.refused({ type: "heartbeat", runId: RUN }))).toBe("ILLEGAL_TRANSITION");
  });
});

describe("attempt reports", () => {
  it("records each outcome once, under an id derived from the identity and the outcome", () => {
    const s = new Scenario().given(start());
    const [a] = s.run(started(1, 0, "42"));
    const [b] = s.run(succeeded(1, 0, "42"));
    expect(a?.eventId).toBe(attemptEventId(RUN, 1, 0, "42", "STARTED"));
    expect(b?.eventId).toBe(attemptEventId(RUN, 1, 0, "42", "SUCCEEDED"));
    expect(a?.eventId).not.toBe(b?.eventId);
    expect(statusOf(s, 1, 0, "42")).toBe("SUCCEEDED");
    expect(s.run(succeeded(1, 0, "42"))).toEqual([]);
    // Two writers deciding the same report on the same state get the same id: the log keeps one.
    const fresh = new Scenario().given(start());
    const x = decideRun(fresh.state, succeeded(2), { now: T0 });
    const y = decideRun(fresh.state, succeeded(2), { now: new Date(T0.getTime() + 5) });
    expect(x[0]?.eventId).toBe(y[0]?.eventId);
  });

  it("treats AttemptStarted after an outcome as a no-op", () => {
    const s = new Scenario().given(start(), succeeded(0), failed(1));
    expect(s.run(started(0))).toEqual([]);
    expect(s.run(started(1))).toEqual([]);
    expect(statusOf(s, 0)).toBe("SUCCEEDED");
    expect(statusOf(s, 1)).toBe("FAILED");
  });

  it("refuses a report that contradicts the recorded outcome", () => {
    const s = new Scenario().given(start(), succeeded(0), failed(1));
    const e = s.refused(failed(0));
    expect(e.code).toBe("CONTRADICTING_REPORT");
    expect(e.details).toMatchObject({ identity: `${RUN}/0/0/-`, recorded: "SUCCEEDED", reported: "FAILED" });
    expect(code(s.refused(succeeded(1)))).toBe("CONTRADICTING_REPORT");
  });

  it("keeps identities apart: the taskAttemptId is part of it, the url is not", () => {
    const s = new Scenario().given(start(), succeeded(0, 0, "1"));
    expect(s.run(failed(0, 0, "2"))).toHaveLength(1);
    // Another url for a recorded identity is not another attempt: it contradicts the recorded one.
    const e = s.refused({ ...(succeeded(0, 0, "1") as object), url: "s3://elsewhere" } as RunCommand);
    expect(code(e)).toBe("CONTRADICTING_REPORT");
    expect(e.details).toMatchObject({ recordedUrl: url(0, 0, "1"), reportedUrl: "s3://elsewhere" });
    expect(s.state.attempts.size).toBe(2);
    expect(s.state.attempts.get("0/0/1")?.url).toBe(url(0, 0, "1"));
  });

  it("normalises taskAttemptIds to decimal strings, exactly", () => {
    const s = new Scenario().given(start());
    const [e] = s.run({
      type: "attemptSucceeded",
      runId: RUN,
      shard: 0,
      attempt: 0,
      taskAttemptId: 9223372036854775806n,
    });
    expect(e?.data).toMatchObject({ taskAttemptId: "9223372036854775806", url: null });
    expect(s.state.attempts.has("0/0/9223372036854775806")).toBe(true);
    const bad = s.refused({
      type: "attemptSucceeded",
      runId: RUN,
      shard: 0,
      attempt: 0,
      taskAttemptId: "12x",
    });
    expect(bad.details.field).toBe("AttemptSucceeded.data.taskAttemptId");
  });

  it("refuses a shard outside the run with a ValidationError naming shard", () => {
    const s = new Scenario().given(start(3));
    const e = s.refused(succeeded(3));
    expect(e.code).toBe("VALIDATION");
    expect(e.details.field).toBe("shard");
    expect(s.refused(succeeded(-1)).details.field).toBe("AttemptSucceeded.data.shard");
  });

  it("learns the url from a later report when the first had none", () => {
    const s = new Scenario().given(start(1), { type: "attemptStarted", runId: RUN, shard: 0, attempt: 0 });
    expect(s.state.attempts.get("0/0/-")?.url).toBeNull();
    s.run(succeeded(0));
    expect(s.state.attempts.get("0/0/-")?.url).toBe(url(0, 0));
    expect(attemptsAtUrl(s.state, url(0, 0)).map((a) => a.key)).toEqual(["0/0/-"]);
  });
});

describe("selectWinners", () => {
  it("given full coverage, selects one winner per shard; every other attempt is a loser", () => {
    const s = new Scenario().given(
      start(2),
      succeeded(0, 1),
      succeeded(0, 0, "7"),
      failed(0, 0, "3"),
      started(1, 2),
      succeeded(1, 1, "9223372036854775807"),
      succeeded(1, 1),
    );
    const events = s.run(selectWinners);
    expect(events.map((e) => e.type)).toEqual(["WinnerSelected"]);
    expect(events.map((e) => e.data)).toEqual([
      {
        runId: RUN,
        winners: [
          { shard: 0, attempt: 0, taskAttemptId: "7", url: url(0, 0, "7") },
          // 2^63-1 and no taskAttemptId rank the same; the shorter url is first in code-unit order.
          { shard: 1, attempt: 1, taskAttemptId: null, url: url(1, 1) },
        ],
      },
    ]);
    expect(coverageErrorFrom(events)).toBeNull();
    expect(s.state).toMatchObject({ status: "PUBLISHING", publishProgress: "winners_selected" });
    expect(s.state.winners.get(0)?.attemptKey).toBe("0/0/7");
    expect(statusOf(s, 0, 0, "7")).toBe("WINNER");
    expect(statusOf(s, 0, 1)).toBe("LOSER");
    expect(statusOf(s, 0, 0, "3")).toBe("LOSER"); // failed, but it left data at its url
    expect(statusOf(s, 1, 2)).toBe("LOSER"); // started, never finished
    expect(statusOf(s, 1, 1)).toBe("WINNER");
    expect(statusOf(s, 1, 1, "9223372036854775807")).toBe("LOSER"); // same rank; the url broke the tie
  });

  it("records 2,500 winners as three WinnerSelected events in shard order, with ids a retry repeats", () => {
    const numShards = 2_500;
    const s = new Scenario().given(start(numShards));
    for (let shard = 0; shard < numShards; shard++) s.run(succeeded(shard));
    const retry = decideRun(s.state, selectWinners, { now: s.now });
    const events = s.run(selectWinners);
    expect(events.map((e) => (e.data as { winners: unknown[] }).winners.length)).toEqual([1000, 1000, 500]);
    expect(WINNERS_PER_EVENT).toBe(1000);
    const shards = events.flatMap((e) =>
      (e.data as { winners: { shard: number }[] }).winners.map((w) => w.shard),
    );
    expect(shards).toEqual([...Array(numShards).keys()]);
    expect(retry.map((e) => e.eventId)).toEqual(events.map((e) => e.eventId));
    expect(new Set(events.map((e) => e.eventId)).size).toBe(3);
    // Every event is valid at the catalogue's current version (the log validates on append).
    for (const e of events) expect(() => defaultCatalogue.validate("WinnerSelected", e.data)).not.toThrow();
    expect(s.state).toMatchObject({ status: "PUBLISHING", publishProgress: "winners_selected" });
    expect(s.state.winners.size).toBe(numShards);
  });

  it("folds v1 WinnerSelected events (one shard each, upcast on read) like the current shape", () => {
    const s = new Scenario().given(start(2), succeeded(0), succeeded(0, 1), succeeded(1));
    const v1 = [0, 1].map((shard) => ({
      runId: RUN,
      shard,
      attempt: 0,
      taskAttemptId: null,
      url: url(shard, 0),
    }));
    const upcast = v1.map((d) => defaultCatalogue.upcast("WinnerSelected", 1, d));
    expect(upcast[0]).toEqual({
      schemaVersion: 2,
      data: { runId: RUN, winners: [{ shard: 0, attempt: 0, taskAttemptId: null, url: url(0, 0) }] },
    });
    const v1Fold = foldRun([
      ...s.log,
      ...upcast.map((u) => ({ type: "WinnerSelected", data: u.data, recordedAt: s.now })),
    ]);
    s.run(selectWinners);
    expect(v1Fold.status).toBe(s.state.status);
    expect(v1Fold.publishProgress).toBe("winners_selected");
    expect([...v1Fold.attempts.values()].map((a) => [a.key, a.status])).toEqual(
      [...s.state.attempts.values()].map((a) => [a.key, a.status]),
    );
    expect([...v1Fold.winners.keys()]).toEqual([0, 1]);
  });

  it("given a missing shard, fails the run for coverage and names every missing shard", () => {
    const s = new Scenario().given(start(5), succeeded(1), failed(0), started(3));
    const events = s.run(selectWinners);
    expect(events.map((e) => e.type)).toEqual(["ShardCoverageFailed", "RunFailed"]);
    expect(events[0]?.data).toEqual({ runId: RUN, missingShards: [0, 2, 3, 4] });
    expect(events[1]?.data).toMatchObject({ runId: RUN, cause: "coverage" });
    const error = coverageErrorFrom(events);
    expect(error?.code).toBe("SHARD_COVERAGE");
    expect(error?.missingShards).toEqual([0, 2, 3, 4]);
    expect(s.state).toMatchObject({
      status: "FAILED",
      failureCause: "coverage",
      failedAt: T0,
      missingShards: [0, 2, 3, 4],
      publishProgress: "none",
    });
    expect(s.state.winners.size).toBe(0);
    expect(statusOf(s, 1)).toBe("SUCCEEDED");
  });

  it("is refused a second time, and on a FAILED run", () => {
    const s = new Scenario().given(start(1), succeeded(0), selectWinners);
    expect(s.refused(selectWinners).message).toContain("at most once");
    s.run(manifest);
    s.run(markSucceeded);
    expect(code(s.refused(selectWinners))).toBe("ILLEGAL_TRANSITION");
    const f = new Scenario().given(start(2), succeeded(0), selectWinners);
    expect(f.state.status).toBe("FAILED");
    expect(f.refused(selectWinners).message).toContain("FAILED");
  });

  it("makes a report that arrives after the winners a loser at once", () => {
    const s = new Scenario().given(start(2), succeeded(0), succeeded(1), selectWinners);
    s.run(succeeded(0, 0, "1")); // would have won (taskAttemptId 1 < none), but came too late
    expect(statusOf(s, 0, 0, "1")).toBe("LOSER");
    expect(s.state.winners.get(0)?.attemptKey).toBe("0/0/-");
    s.run(manifest);
    s.run(markSucceeded);
    s.run(started(1, 5));
    expect(statusOf(s, 1, 5)).toBe("LOSER");
    s.run(failed(1, 5)); // the late loser finishes: still a loser
    expect(statusOf(s, 1, 5)).toBe("LOSER");
    expect(s.state.attempts.get("1/5/-")?.outcome).toBe("FAILED");
    expect(code(s.refused(failed(0)))).toBe("CONTRADICTING_REPORT");
  });
});

describe("recordManifest and markSucceeded", () => {
  it("walk the publish forward one recorded step at a time", () => {
    const s = new Scenario().given(start(1), succeeded(0));
    expect(code(s.refused(manifest))).toBe("ILLEGAL_TRANSITION");
    expect(code(s.refused(markSucceeded))).toBe("ILLEGAL_TRANSITION");
    s.run(selectWinners);
    expect(code(s.refused(markSucceeded))).toBe("ILLEGAL_TRANSITION");
    const [m] = s.advance(1000).run({ ...(manifest as object), createdAt: T0 } as RunCommand);
    expect(m?.data).toEqual({
      runId: RUN,
      manifestUrl: "s3://bucket/ds/manifests/r1.json",
      createdAt: T0.toISOString(),
    });
    expect(s.state).toMatchObject({
      status: "PUBLISHING",
      publishProgress: "manifest_published",
      manifestUrl: "s3://bucket/ds/manifests/r1.json",
      manifestCreatedAt: T0,
    });
    expect(s.run(manifest)).toEqual([]); // a resumed publish records it once
    expect(code(s.refused({ type: "recordManifest", runId: RUN, manifestUrl: "s3://other.json" }))).toBe(
      "ILLEGAL_TRANSITION",
    );
    const [done] = s.run(markSucceeded);
    expect(done?.type).toBe("RunSucceeded");
    expect(s.state).toMatchObject({ status: "SUCCEEDED", publishProgress: "succeeded", succeededAt: s.now });
    expect(s.run(markSucceeded)).toEqual([]);
    expect(s.run(manifest)).toEqual([]);
  });
});

describe("fail", () => {
  it("fails a STARTED run with the given cause", () => {
    const s = new Scenario().given(start());
    const [e] = s.run({ type: "fail", runId: RUN, cause: "heartbeat_timeout", reason: "silent for 2h" });
    expect(e?.data).toEqual({ runId: RUN, cause: "heartbeat_timeout", reason: "silent for 2h" });
    expect(s.state).toMatchObject({
      status: "FAILED",
      failureCause: "heartbeat_timeout",
      failureReason: "silent for 2h",
      failedAt: T0,
    });
  });

  it("abandons a publish that has not recorded its manifest: the selection is void", () => {
    const s = new Scenario().given(start(2), succeeded(0), succeeded(0, 1), succeeded(1), selectWinners);
    s.run({ type: "fail", runId: RUN, cause: "writer_abort", reason: "publisher crashed" });
    expect(s.state).toMatchObject({ status: "FAILED", publishProgress: "none" });
    expect(s.state.winners.size).toBe(0);
    expect([...s.state.attempts.values()].map((a) => a.status)).toEqual([
      "SUCCEEDED",
      "SUCCEEDED",
      "SUCCEEDED",
    ]);
  });

  it("is refused after the manifest, on a terminal run, and for the coverage cause", () => {
    const s = new Scenario().given(start(1), succeeded(0), selectWinners, manifest);
    expect(s.refused({ type: "fail", runId: RUN, cause: "writer_abort", reason: "x" }).message).toContain(
      "manifest",
    );
    s.run(markSucceeded);
    expect(code(s.refused({ type: "fail", runId: RUN, cause: "writer_abort", reason: "x" }))).toBe(
      "ILLEGAL_TRANSITION",
    );
    const f = new Scenario().given(start(), { type: "fail", runId: RUN, cause: "writer_abort", reason: "x" });
    expect(code(f.refused({ type: "fail", runId: RUN, cause: "writer_abort", reason: "again" }))).toBe(
      "ILLEGAL_TRANSITION",
    );
    const v = new Scenario().given(start());
    const e = v.refused({ type: "fail", runId: RUN, cause: "coverage" as "writer_abort", reason: "x" });
    expect(e.details.field).toBe("cause");
  });
});

describe("reopen", () => {
  it("given a FAILED run inside the floor, reopens it keeping its successes; only missing shards need writing", () => {
    const s = new Scenario().given(start(3), succeeded(0), failed(1), succeeded(2, 1), selectWinners);
    expect(s.state.missingShards).toEqual([1]);
    s.advance(DAY - 1);
    const [e] = s.run({ type: "reopen", runId: RUN, reason: "operator retry" });
    expect(e).toMatchObject({ type: "RunReopened", data: { runId: RUN, reason: "operator retry" } });
    expect(s.state).toMatchObject({
      status: "STARTED",
      failedAt: null,
      failureCause: null,
      missingShards: [],
      reopenCount: 1,
      lastHeartbeatAt: s.now,
    });
    expect(statusOf(s, 0)).toBe("SUCCEEDED");
    expect(statusOf(s, 1)).toBe("FAILED");
    s.run(succeeded(1, 1));
    const winners = s.run(selectWinners).flatMap((e) => (e.data as { winners: { url: string }[] }).winners);
    expect(winners.map((w) => w.url)).toEqual([url(0, 0), url(1, 1), url(2, 1)]);
    expect(s.state.status).toBe("PUBLISHING");
  });

  it("is refused at and past the failed-retention floor, and without one", () => {
    const s = new Scenario().given(start(1), {
      type: "fail",
      runId: RUN,
      cause: "writer_abort",
      reason: "x",
    });
    s.advance(DAY);
    expect(s.refused({ type: "reopen", runId: RUN }).message).toContain("failed-retention floor");
    const e = s.refused(
      { type: "reopen", runId: RUN },
      { failedRetentionMs: undefined as unknown as number },
    );
    expect(e.details.field).toBe("failedRetentionMs");
    expect(s.run({ type: "reopen", runId: RUN }, { failedRetentionMs: DAY + 1 })).toHaveLength(1);
  });

  it("is refused unless the run is FAILED", () => {
    const s = new Scenario().given(start(1));
    expect(code(s.refused({ type: "reopen", runId: RUN }))).toBe("ILLEGAL_TRANSITION");
    s.given(succeeded(0), ...publish);
    expect(code(s.refused({ type: "reopen", runId: RUN }))).toBe("ILLEGAL_TRANSITION");
  });

  it("gives the publish and fail events of each generation their own ids", () => {
    const s = new Scenario().given(start(1), succeeded(0));
    const first = s.run(selectWinners);
    s.run({ type: "fail", runId: RUN, cause: "writer_abort", reason: "crash" });
    s.run({ type: "reopen", runId: RUN });
    const second = s.run(selectWinners);
    expect(second[0]?.eventId).not.toBe(first[0]?.eventId);
    expect(statusOf(s, 0)).toBe("WINNER");
    const replayed = foldRun(s.log);
    expect(replayed).toEqual(s.state);
  });
});

describe("cleanup", () => {
  const published = () =>
    new Scenario().given(start(1), succeeded(0), succeeded(0, 1), failed(0, 2), ...publish);

  it("given a published run, a failed deletion makes the loser CLEANUP_PENDING with its error, tries and retry time", () => {
    const s = published();
    s.run({ type: "planCleanup", runId: RUN, url: url(0, 1), reason: "loser" });
    expect(s.state.cleanup.get(url(0, 1))).toMatchObject({
      state: "planned",
      reason: "loser",
      plannedAt: T0,
    });
    expect(statusOf(s, 0, 1)).toBe("LOSER");
    const next = new Date(T0.getTime() + 30_000);
    s.run({
      type: "recordCleanupFailed",
      runId: RUN,
      url: url(0, 1),
      errorCode: "SlowDown",
      errorMessage: "reduce your request rate",
      transient: true,
      tries: 3,
      exhausted: false,
      nextRetryAt: next,
    });
    const a = s.state.attempts.get("0/1/-");
    expect(a?.status).toBe("CLEANUP_PENDING");
    expect(a?.cleanup).toEqual({
      tries: 3,
      exhausted: false,
      lastError: { code: "SlowDown", message: "reduce your request rate", transient: true },
      nextRetryAt: next,
    });
    s.run({
      type: "recordCleanupFailed",
      runId: RUN,
      url: url(0, 1),
      errorCode: "AccessDenied",
      errorMessage: "denied",
      transient: false,
      tries: 4,
      exhausted: true,
      nextRetryAt: null,
    });
    expect(s.state.attempts.get("0/1/-")?.cleanup).toMatchObject({
      exhausted: true,
      tries: 4,
      nextRetryAt: null,
    });
    expect(s.state.cleanup.get(url(0, 1))).toMatchObject({
      state: "failed",
      exhausted: true,
      firstFailureAt: T0,
    });
    s.run({ type: "requeueCleanup", runId: RUN, url: url(0, 1) });
    expect(s.state.attempts.get("0/1/-")).toMatchObject({
      status: "CLEANUP_PENDING",
      cleanup: { exhausted: false },
    });
    expect(s.state.cleanup.get(url(0, 1))).toMatchObject({ state: "planned", exhausted: false });
    s.run({ type: "recordCleanupSucceeded", runId: RUN, url: url(0, 1), deletedObjects: 12 });
    expect(statusOf(s, 0, 1)).toBe("DELETED");
    expect(s.state.cleanup.get(url(0, 1))).toMatchObject({ state: "deleted", deletedObjects: 12 });
    expect(statusOf(s, 0)).toBe("WINNER");
  });

  it("keeps a record for urls that are not attempts (orphans, manifests)", () => {
    const s = published();
    const orphan = `s3://bucket/ds/data/${RUN}/shard=00000/attempt=07`;
    s.run({ type: "planCleanup", runId: RUN, url: orphan, reason: "orphan" });
    s.run({ type: "recordCleanupSucceeded", runId: RUN, url: orphan, deletedObjects: 0 });
    expect(s.state.cleanup.get(orphan)).toMatchObject({
      state: "deleted",
      reason: "orphan",
      deletedObjects: 0,
    });
  });

  it("refuses to plan a winner's url as loser or orphan data, and requeueing what did not fail", () => {
    const s = published();
    expect(code(s.refused({ type: "planCleanup", runId: RUN, url: url(0, 0), reason: "loser" }))).toBe(
      "ILLEGAL_TRANSITION",
    );
    expect(code(s.refused({ type: "requeueCleanup", runId: RUN, url: url(0, 2) }))).toBe(
      "ILLEGAL_TRANSITION",
    );
  });

  it("refuses cleanup bookkeeping on a run that is still active", () => {
    const s = new Scenario().given(start(1), succeeded(0));
    expect(code(s.refused({ type: "planCleanup", runId: RUN, url: url(0, 0), reason: "stale" }))).toBe(
      "ILLEGAL_TRANSITION",
    );
    s.run(selectWinners);
    expect(
      code(s.refused({ type: "recordCleanupSucceeded", runId: RUN, url: url(0, 0), deletedObjects: 1 })),
    ).toBe("ILLEGAL_TRANSITION");
  });

  it("collects the stale attempts of a failed run", () => {
    const s = new Scenario().given(start(2), succeeded(0), {
      type: "fail",
      runId: RUN,
      cause: "heartbeat_timeout",
      reason: "x",
    });
    s.run({ type: "recordStaleCollected", runId: RUN, url: url(0, 0) });
    expect(statusOf(s, 0)).toBe("DELETED");
    expect(s.state.cleanup.get(url(0, 0))).toMatchObject({ state: "deleted", reason: "stale" });
  });
});

describe("prune and archive", () => {
  it("prunes a terminal run, counting its attempts and failed items; a pruned run accepts nothing but its archive", () => {
    const s = new Scenario().given(start(2), succeeded(0), failed(1), selectWinners);
    const [e] = s.run({ type: "prune", runId: RUN, reason: "failed_retention" });
    expect(e?.data).toEqual({
      runId: RUN,
      datasetId: "ds",
      reason: "failed_retention",
      attempts: 2,
      failedItems: 1,
    });
    expect(s.state).toMatchObject({ status: "PRUNED", pruneReason: "failed_retention", prunedAt: T0 });
    for (const c of [
      succeeded(0, 1),
      { type: "heartbeat", runId: RUN } as RunCommand,
      start(2),
      selectWinners,
    ]) {
      expect(s.refused(c).code).toBe("ILLEGAL_TRANSITION");
    }
    expect(code(s.refused({ type: "prune", runId: RUN, reason: "retention" }))).toBe("ILLEGAL_TRANSITION");
    s.run({ type: "archive", runId: RUN, archiveUrl: "s3://bucket/ds/_archive/run-r1.jsonl", events: 6 });
    expect(s.state.archiveUrl).toBe("s3://bucket/ds/_archive/run-r1.jsonl");
  });

  it("refuses to prune an active run and to archive an unpruned one", () => {
    const s = new Scenario().given(start(1), succeeded(0));
    expect(code(s.refused({ type: "prune", runId: RUN, reason: "stale" }))).toBe("ILLEGAL_TRANSITION");
    expect(code(s.refused({ type: "archive", runId: RUN, archiveUrl: "s3://a", events: 1 }))).toBe(
      "ILLEGAL_TRANSITION",
    );
  });
});

describe("the fold", () => {
  it("replays the log into the state the live decisions produced, and counts versions", () => {
    const s = new Scenario().given(
      start(2),
      started(0),
      succeeded(0),
      failed(1),
      succeeded(1, 1, "5"),
      ...publish,
      { type: "planCleanup", runId: RUN, url: url(1, 0), reason: "loser" },
    );
    const replayed = foldRun(s.log);
    expect(replayed).toEqual(s.state);
    expect(replayed.version).toBe(s.log.length);
    expect(foldRun(s.log.map((e, i) => ({ ...e, streamVersion: i + 11 }))).version).toBe(s.log.length + 10);
  });

  it("ignores what the machines refuse: a second RunStarted, a duplicate or contradicting report, reports to a pruned run", () => {
    const at = T0;
    const ev = (type: string, data: Record<string, unknown>): FoldableEvent => ({
      type,
      data,
      recordedAt: at,
    });
    const ref = { runId: RUN, shard: 0, attempt: 0, taskAttemptId: null, url: "u" };
    const state = foldRun([
      ev("RunStarted", { runId: RUN, datasetId: "ds", numShards: 1 }),
      ev("RunStarted", { runId: RUN, datasetId: "other", numShards: 9 }),
      ev("AttemptSucceeded", ref),
      ev("AttemptFailed", { ...ref, error: "late contradiction" }),
      ev("AttemptSucceeded", { ...ref, url: "v" }),
      ev("SomethingNewer", {}),
    ]);
    expect(state).toMatchObject({ datasetId: "ds", numShards: 1, version: 6 });
    expect(state.attempts.get("0/0/-")).toMatchObject({ status: "SUCCEEDED", url: "u", error: null });
  });

  it("folds a 100,000-shard publish (300,000 events) into one winner per shard", () => {
    const numShards = 100_000;
    const at = T0;
    const events: FoldableEvent[] = [
      { type: "RunStarted", data: { runId: RUN, datasetId: "ds", numShards }, recordedAt: at },
    ];
    const ref = (shard: number) => ({
      runId: RUN,
      shard,
      attempt: 0,
      taskAttemptId: String(shard),
      url: url(shard, 0, String(shard)),
    });
    for (let i = 0; i < numShards; i++) events.push({ type: "AttemptStarted", data: ref(i), recordedAt: at });
    for (let i = 0; i < numShards; i++)
      events.push({ type: "AttemptSucceeded", data: ref(i), recordedAt: at });
    for (let i = 0; i < numShards; i += WINNERS_PER_EVENT) {
      const winners = [];
      for (let shard = i; shard < Math.min(numShards, i + WINNERS_PER_EVENT); shard++) {
        const { runId: _, ...winner } = ref(shard);
        winners.push(winner);
      }
      events.push({ type: "WinnerSelected", data: { runId: RUN, winners }, recordedAt: at });
    }
    // Speed is measured in bench/publish.ts, not asserted here.
    const state = foldRun(events);
    expect(state.status).toBe("PUBLISHING");
    expect(state.winners.size).toBe(numShards);
    expect(state.attempts.get(attemptKey(99_999, 0, "99999"))?.status).toBe("WINNER");
  });
});
