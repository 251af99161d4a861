import { fc, test } from "@fast-check/vitest";
import { expect } from "vitest";
import type { ErrorCode } from "../../src/errors.js";
import { MAX_TASK_ATTEMPT_ID } from "../../src/events/identifiers.js";
import type { AttemptStatus } from "../../src/machines/attempt-machine.js";
import { runStatusOf } from "../../src/machines/machine-tables.js";
import { attemptEventId, type RunCommand, type RunEvent } from "../../src/machines/run-commands.js";
import type { RunStatus } from "../../src/machines/run-machine.js";
import {
  attemptKey,
  type FoldableEvent,
  foldRun,
  type PublishProgress,
} from "../../src/machines/run-state.js";
import type { AttemptOutcome } from "../../src/machines/winner-selection.js";
import {
  commandArb,
  Live,
  MANIFESTS,
  MINUTE,
  RETENTION,
  RUN,
  reviveDates,
  T0,
  TASK_IDS,
  URLS,
} from "../support/run-histories.js";

test.prop([fc.array(commandArb, { minLength: 5, maxLength: 60, size: "max" })], { numRuns: 150 })(
  "replaying the log gives the live state, also after a JSON round trip of the events",
  (commands) => {
    const live = new Live();
    // Mostly a run to work on; sometimes none, so commands to a missing run are replayed too.
    if (commands.length % 5 !== 0) live.run({ type: "start", runId: RUN, datasetId: "ds", numShards: 2 });
    for (const command of commands) {
      if (command.type === "advance") live.now += command.ms;
      else live.run(command);
      live.now += 1000;
    }
    expect(foldRun(live.log)).toEqual(live.state);
    const roundTripped = JSON.parse(JSON.stringify(live.log), reviveDates) as FoldableEvent[];
    for (const e of roundTripped) expect(e.recordedAt).toBeInstanceOf(Date);
    expect(foldRun(roundTripped)).toEqual(live.state);
    expect(live.state.version).toBe(live.log.length);
  },
);

// ---------------------------------------------------------------------------------------------
// (b) model-based: the real decide/fold against an in-memory reference of the rules
// ---------------------------------------------------------------------------------------------

interface ModelAttempt {
  shard: number;
  attempt: number;
  taskAttemptId: string | null;
  url: string | null;
  outcome: AttemptOutcome;
  cleanup: null | "pending" | "deleted";
  exhausted: boolean;
}

interface Model {
  status: RunStatus;
  numShards: number;
  progress: PublishProgress;
  attempts: Map<string, ModelAttempt>;
  /** shard → winning attempt key, while a selection stands. */
  winners: Map<number, string> | null;
  failedAt: number | null;
  manifestUrl: string | null;
  urlCleanup: Map<string, "planned" | "failed" | "deleted">;
}

type Expect = { refused: ErrorCode } | { events: "none" | "some" };
const ILLEGAL: Expect = { refused: "ILLEGAL_TRANSITION" };
const NOT_FOUND: Expect = { refused: "NOT_FOUND" };
const NOOP: Expect = { events: "none" };
const OK: Expect = { events: "some" };

/** The rank the winner rule sorts by, computed the slow, obvious way. */
function referenceWinner(candidates: [string, ModelAttempt][]): string | undefined {
  const sorted = [...candidates].sort(([, x], [, y]) => {
    if (x.attempt !== y.attempt) return x.attempt - y.attempt;
    const tx = x.taskAttemptId === null ? MAX_TASK_ATTEMPT_ID : BigInt(x.taskAttemptId);
    const ty = y.taskAttemptId === null ? MAX_TASK_ATTEMPT_ID : BigInt(y.taskAttemptId);
    if (tx !== ty) return tx < ty ? -1 : 1;
    const ux = x.url ?? "";
    const uy = y.url ?? "";
    return ux === uy ? 0 : ux < uy ? -1 : 1;
  });
  return sorted[0]?.[0];
}

function expectedStatus(m: Model, key: string, a: ModelAttempt): AttemptStatus {
  if (m.winners?.get(a.shard) === key) return "WINNER";
  if (a.cleanup === "deleted") return "DELETED";
  if (a.cleanup === "pending") return "CLEANUP_PENDING";
  return m.winners ? "LOSER" : a.outcome;
}

const exists = (m: Model) => m.status !== "NONE" && m.status !== "PRUNED";

function checkInvariants(m: Model, live: Live): void {
  const s = live.state;
  expect(s.status).toBe(m.status);
  expect(runStatusOf(s.phase)).toBe(s.status);
  expect(s.publishProgress).toBe(m.progress);
  expect(s.manifestUrl).toBe(m.manifestUrl);
  expect(s.failedAt?.getTime() ?? null).toBe(m.failedAt);
  expect([...s.attempts.keys()].sort()).toEqual([...m.attempts.keys()].sort());
  for (const [key, a] of m.attempts) {
    const real = s.attempts.get(key);
    expect(real?.outcome, key).toBe(a.outcome);
    expect(real?.url, key).toBe(a.url);
    expect(real?.status, key).toBe(expectedStatus(m, key, a));
    if (a.cleanup === "pending") expect(real?.cleanup?.exhausted, key).toBe(a.exhausted);
  }
  const published =
    m.status === "SUCCEEDED" ||
    (m.status === "PUBLISHING" && m.progress !== "none") ||
    (m.winners !== null && m.status === "PRUNED");
  if (published) {
    // Exactly one WINNER per shard, the one the rule names; nothing left unclassified.
    expect(s.winners.size).toBe(s.numShards);
    const winnersByShard = new Map<number, number>();
    for (const a of s.attempts.values()) {
      if (a.status === "WINNER") {
        winnersByShard.set(a.shard, (winnersByShard.get(a.shard) ?? 0) + 1);
        expect(s.winners.get(a.shard)?.attemptKey).toBe(a.key);
      } else {
        expect(["LOSER", "CLEANUP_PENDING", "DELETED"]).toContain(a.status);
      }
    }
    for (let shard = 0; shard < s.numShards; shard++) {
      expect(winnersByShard.get(shard)).toBe(1);
      expect(s.winners.get(shard)?.attemptKey).toBe(m.winners?.get(shard));
    }
  } else {
    expect(s.winners.size).toBe(0);
    for (const a of s.attempts.values()) expect(["WINNER", "LOSER"]).not.toContain(a.status);
  }
  // At every step, replaying the log gives the live state.
  expect(foldRun(live.log)).toEqual(s);
}

abstract class RunModelCommand implements fc.Command<Model, Live> {
  check(): boolean {
    return true;
  }
  abstract expect(m: Model, now: number): Expect;
  abstract command(): RunCommand;
  /** Updates the model for an accepted command (called only when it was). */
  abstract apply(m: Model, now: number, events: RunEvent[]): void;
  advanceBy(): number {
    return MINUTE;
  }
  run(m: Model, live: Live): void {
    live.now += this.advanceBy();
    // A run that does not exist answers every command but start with NOT_FOUND, whatever the
    // command's own rule would say of an existing run.
    const expected =
      m.status === "NONE" && !(this instanceof StartCommand) ? NOT_FOUND : this.expect(m, live.now);
    const outcome = live.run(this.command());
    if ("refused" in expected) {
      expect(outcome, this.toString()).toEqual({ ok: false, code: expected.refused });
    } else {
      expect(outcome.ok, `${this.toString()}: ${outcome.ok ? "" : outcome.code}`).toBe(true);
      if (outcome.ok) {
        if (expected.events === "none") expect(outcome.events).toEqual([]);
        else {
          expect(outcome.events.length).toBeGreaterThan(0);
          this.apply(m, live.now, outcome.events);
        }
      }
    }
    checkInvariants(m, live);
  }
}

class StartCommand extends RunModelCommand {
  constructor(readonly numShards: number) {
    super();
  }
  override expect(m: Model): Expect {
    if (m.status === "NONE") return OK;
    // A repeated start is a retry only while the run it names is still STARTED.
    if (m.status !== "STARTED" || m.numShards !== this.numShards) return ILLEGAL;
    return NOOP;
  }
  override command(): RunCommand {
    return { type: "start", runId: RUN, datasetId: "ds", numShards: this.numShards };
  }
  override apply(m: Model): void {
    m.status = "STARTED";
    m.numShards = this.numShards;
  }
  override toString() {
    return `start(${this.numShards})`;
  }
}

class ReportCommand extends RunModelCommand {
  constructor(
    readonly outcome: AttemptOutcome,
    readonly shard: number,
    readonly attempt: number,
    readonly taskAttemptId: string | null,
    readonly url: string | null,
  ) {
    super();
  }
  get key() {
    return attemptKey(this.shard, this.attempt, this.taskAttemptId);
  }
  override expect(m: Model): Expect {
    if (!exists(m)) return ILLEGAL;
    if (this.shard >= m.numShards) return { refused: "VALIDATION" };
    const existing = m.attempts.get(this.key);
    if (!existing) return OK;
    // One attempt, one place: two urls for it contradict, whatever the outcomes.
    if (existing.url !== null && this.url !== null && existing.url !== this.url) {
      return { refused: "CONTRADICTING_REPORT" };
    }
    if (existing.outcome === this.outcome || this.outcome === "STARTED") {
      // A report that stores nothing may not bring a url the record lacks: it would be answered
      // as recorded at that url while the url is dropped.
      return existing.url === null && this.url !== null ? { refused: "CONTRADICTING_REPORT" } : NOOP;
    }
    if (existing.outcome !== "STARTED") return { refused: "CONTRADICTING_REPORT" };
    return OK;
  }
  override command(): RunCommand {
    const base = {
      runId: RUN,
      shard: this.shard,
      attempt: this.attempt,
      taskAttemptId: this.taskAttemptId,
      url: this.url,
    };
    return this.outcome === "FAILED"
      ? { type: "attemptFailed", ...base, error: "lost" }
      : { type: this.outcome === "STARTED" ? "attemptStarted" : "attemptSucceeded", ...base };
  }
  override apply(m: Model, _now: number, events: RunEvent[]): void {
    expect(events).toHaveLength(1);
    expect(events[0]?.eventId).toBe(
      attemptEventId(RUN, this.shard, this.attempt, this.taskAttemptId, this.outcome),
    );
    const existing = m.attempts.get(this.key);
    if (existing) {
      existing.outcome = this.outcome;
      if (this.url !== null) existing.url = this.url;
    } else {
      m.attempts.set(this.key, {
        shard: this.shard,
        attempt: this.attempt,
        taskAttemptId: this.taskAttemptId,
        url: this.url,
        outcome: this.outcome,
        cleanup: null,
        exhausted: false,
      });
    }
  }
  override toString() {
    return `report(${this.outcome}, ${this.key}, ${this.url})`;
  }
}

class HeartbeatCommand extends RunModelCommand {
  override expect(m: Model): Expect {
    return m.status === "STARTED" ? OK : ILLEGAL;
  }
  override command(): RunCommand {
    return { type: "heartbeat", runId: RUN };
  }
  override apply(): void {}
  override toString() {
    return "heartbeat";
  }
}

class SelectWinnersCommand extends RunModelCommand {
  override expect(m: Model): Expect {
    return m.status === "STARTED" ? OK : ILLEGAL;
  }
  override command(): RunCommand {
    return { type: "selectWinners", runId: RUN };
  }
  override apply(m: Model, now: number, events: RunEvent[]): void {
    const winners = new Map<number, string>();
    const missing: number[] = [];
    for (let shard = 0; shard < m.numShards; shard++) {
      const candidates = [...m.attempts].filter(
        ([, a]) => a.shard === shard && a.outcome === "SUCCEEDED" && a.cleanup === null,
      );
      const winner = referenceWinner(candidates);
      if (winner === undefined) missing.push(shard);
      else winners.set(shard, winner);
    }
    if (missing.length > 0) {
      expect(events.map((e) => e.type)).toEqual(["ShardCoverageFailed", "RunFailed"]);
      expect(events[0]?.data).toEqual({ runId: RUN, missingShards: missing });
      m.status = "FAILED";
      m.failedAt = now;
      return;
    }
    expect(
      events.flatMap((e) => (e.data as { winners: { shard: number }[] }).winners.map((w) => w.shard)),
    ).toEqual([...winners.keys()]);
    m.status = "PUBLISHING";
    m.progress = "winners_selected";
    m.winners = winners;
  }
  override toString() {
    return "selectWinners";
  }
}

class RecordManifestCommand extends RunModelCommand {
  constructor(readonly manifestUrl: string) {
    super();
  }
  override expect(m: Model): Expect {
    if (!exists(m)) return ILLEGAL;
    if (m.progress === "manifest_published" || m.progress === "succeeded") {
      return m.manifestUrl === this.manifestUrl ? NOOP : ILLEGAL;
    }
    return m.progress === "winners_selected" ? OK : ILLEGAL;
  }
  override command(): RunCommand {
    return { type: "recordManifest", runId: RUN, manifestUrl: this.manifestUrl };
  }
  override apply(m: Model): void {
    m.progress = "manifest_published";
    m.manifestUrl = this.manifestUrl;
  }
  override toString() {
    return `recordManifest(${this.manifestUrl})`;
  }
}

class MarkSucceededCommand extends RunModelCommand {
  override expect(m: Model): Expect {
    if (m.status === "SUCCEEDED") return NOOP;
    return m.status === "PUBLISHING" && m.progress === "manifest_published" ? OK : ILLEGAL;
  }
  override command(): RunCommand {
    return { type: "markSucceeded", runId: RUN };
  }
  override apply(m: Model): void {
    m.status = "SUCCEEDED";
    m.progress = "succeeded";
  }
  override toString() {
    return "markSucceeded";
  }
}

class FailCommand extends RunModelCommand {
  constructor(readonly cause: "writer_abort" | "heartbeat_timeout") {
    super();
  }
  override expect(m: Model): Expect {
    if (m.status === "STARTED") return OK;
    return m.status === "PUBLISHING" && m.progress === "winners_selected" ? OK : ILLEGAL;
  }
  override command(): RunCommand {
    return { type: "fail", runId: RUN, cause: this.cause, reason: "stopped" };
  }
  override apply(m: Model, now: number): void {
    m.status = "FAILED";
    m.failedAt = now;
    m.winners = null;
    m.progress = "none";
  }
  override toString() {
    return `fail(${this.cause})`;
  }
}

class ReopenCommand extends RunModelCommand {
  constructor(readonly wait: number) {
    super();
  }
  override advanceBy(): number {
    return this.wait;
  }
  override expect(m: Model, now: number): Expect {
    return m.status === "FAILED" && m.failedAt !== null && now - m.failedAt < RETENTION ? OK : ILLEGAL;
  }
  override command(): RunCommand {
    return { type: "reopen", runId: RUN };
  }
  override apply(m: Model): void {
    m.status = "STARTED";
    m.failedAt = null;
  }
  override toString() {
    return `reopen(after ${this.wait} ms)`;
  }
}

class CleanupCommand extends RunModelCommand {
  constructor(
    readonly kind: "plan" | "failed" | "exhausted" | "succeeded" | "requeue",
    readonly url: string,
  ) {
    super();
  }
  override expect(m: Model): Expect {
    if (m.status !== "SUCCEEDED" && m.status !== "FAILED") return ILLEGAL;
    if (this.kind === "plan") {
      const holdsWinner = [...m.attempts].some(
        ([k, a]) => a.url === this.url && m.winners?.get(a.shard) === k,
      );
      return holdsWinner ? ILLEGAL : OK;
    }
    if (this.kind === "requeue") return m.urlCleanup.get(this.url) === "failed" ? OK : ILLEGAL;
    return OK;
  }
  override command(): RunCommand {
    switch (this.kind) {
      case "plan":
        return { type: "planCleanup", runId: RUN, url: this.url, reason: "loser" };
      case "succeeded":
        return { type: "recordCleanupSucceeded", runId: RUN, url: this.url, deletedObjects: 1 };
      case "requeue":
        return { type: "requeueCleanup", runId: RUN, url: this.url };
      default:
        return {
          type: "recordCleanupFailed",
          runId: RUN,
          url: this.url,
          errorCode: this.kind === "exhausted" ? "AccessDenied" : "SlowDown",
          errorMessage: "no",
          transient: this.kind !== "exhausted",
          tries: 2,
          exhausted: this.kind === "exhausted",
          nextRetryAt: this.kind === "exhausted" ? null : new Date(T0),
        };
    }
  }
  override apply(m: Model): void {
    const previous = m.urlCleanup.get(this.url);
    m.urlCleanup.set(
      this.url,
      this.kind === "plan" || this.kind === "requeue"
        ? "planned"
        : this.kind === "succeeded"
          ? "deleted"
          : "failed",
    );
    if (this.kind === "plan") return;
    for (const [key, a] of m.attempts) {
      if (a.url !== this.url || m.winners?.get(a.shard) === key || a.cleanup === "deleted") continue;
      if (this.kind === "succeeded") a.cleanup = "deleted";
      else if (this.kind === "requeue") {
        if (previous === "failed" && a.cleanup === "pending") a.exhausted = false;
      } else {
        a.cleanup = "pending";
        a.exhausted = this.kind === "exhausted";
      }
    }
  }
  override toString() {
    return `cleanup(${this.kind}, ${this.url})`;
  }
}

class PruneCommand extends RunModelCommand {
  override expect(m: Model): Expect {
    return m.status === "SUCCEEDED" || m.status === "FAILED" ? OK : ILLEGAL;
  }
  override command(): RunCommand {
    return { type: "prune", runId: RUN, reason: "retention" };
  }
  override apply(m: Model): void {
    m.status = "PRUNED";
  }
  override toString() {
    return "prune";
  }
}

const reportCommand = fc
  .record({
    outcome: fc.constantFrom<AttemptOutcome>("STARTED", "SUCCEEDED", "SUCCEEDED", "FAILED"),
    shard: fc.integer({ min: 0, max: 3 }),
    attempt: fc.integer({ min: 0, max: 2 }),
    taskAttemptId: fc.constantFrom(...TASK_IDS),
    url: fc.option(fc.constantFrom(...URLS), { nil: null, freq: 4 }),
  })
  .map((r) => new ReportCommand(r.outcome, r.shard, r.attempt, r.taskAttemptId, r.url));
/** Reports that cover shards quickly, so publishes happen often. */
const coveringReport = fc
  .record({
    outcome: fc.constantFrom<AttemptOutcome>("SUCCEEDED", "SUCCEEDED", "FAILED"),
    shard: fc.integer({ min: 0, max: 2 }),
  })
  .map((r) => new ReportCommand(r.outcome, r.shard, 0, null, URLS[r.shard] ?? null));
const cleanupCommand = fc
  .record({
    kind: fc.constantFrom("plan", "failed", "exhausted", "succeeded", "requeue"),
    url: fc.constantFrom(...URLS),
  })
  .map((c) => new CleanupCommand(c.kind, c.url));

// fc.commands picks uniformly among the arbitraries: repeating one weights it.
const modelCommands = [
  fc.integer({ min: 1, max: 3 }).map((n) => new StartCommand(n)),
  reportCommand,
  reportCommand,
  reportCommand,
  coveringReport,
  coveringReport,
  coveringReport,
  fc.constant(new HeartbeatCommand()),
  fc.constant(new SelectWinnersCommand()),
  fc.constant(new SelectWinnersCommand()),
  fc.constantFrom(...MANIFESTS).map((u) => new RecordManifestCommand(u)),
  fc.constant(new RecordManifestCommand(MANIFESTS[0])),
  fc.constant(new MarkSucceededCommand()),
  fc.constant(new MarkSucceededCommand()),
  fc.constantFrom("writer_abort", "heartbeat_timeout").map((c) => new FailCommand(c)),
  fc.integer({ min: 0, max: 2 * RETENTION }).map((w) => new ReopenCommand(w)),
  fc.integer({ min: 0, max: RETENTION / 2 }).map((w) => new ReopenCommand(w)),
  cleanupCommand,
  cleanupCommand,
  cleanupCommand,
  fc.constant(new PruneCommand()),
];

test.prop([fc.integer({ min: 0, max: 3 }), fc.commands(modelCommands, { maxCommands: 50, size: "max" })], {
  numRuns: 150,
})(
  "the run agrees with a reference model under any interleaving of reports, publish steps, failures and reopens",
  (numShards, commands) => {
    const setup = () => {
      const real = new Live();
      const model: Model = {
        status: "NONE",
        numShards: 0,
        progress: "none",
        attempts: new Map(),
        winners: null,
        failedAt: null,
        manifestUrl: null,
        urlCleanup: new Map(),
      };
      // Usually a started run (0 shards: no run yet, so the refusals of a missing run are exercised).
      if (numShards > 0) new StartCommand(numShards).run(model, real);
      return { model, real };
    };
    fc.modelRun(setup, commands);
  },
);
