import {
  ContradictingReportError,
  IllegalTransitionError,
  NotFoundError,
  retryFailedCommand,
  ShardCoverageError,
  ValidationError,
} from "../errors.js";
import { markBuilt } from "../events/built-events.js";
import {
  type CleanupReason,
  type EventData,
  type EventDataInput,
  type EventType,
  type PruneReason,
  WINNERS_PER_EVENT,
} from "../events/catalogue.js";
import type { EventMetadata, NewEvent } from "../events/envelope.js";
import { defaultCatalogue } from "../events/event-catalogue.js";
import { REPORT_EVENT, REPORTED_EVENT_TYPE } from "./attempt-reports.js";
import { deterministicEventId, SHARDLEDGER_EVENT_NAMESPACE } from "./event-ids.js";
import { ATTEMPT_TABLE, RUN_TABLE } from "./machine-tables.js";
import { type AttemptState, attemptKey, attemptsAtUrl, type RunState } from "./run-state.js";
import { summariseShards } from "./shard-summary.js";
import { type AttemptOutcome, selectWinners } from "./winner-selection.js";

/**
 * An event decided for the run stream: a {@link NewEvent} with its catalogue type and data.
 * `eventId` is set where a retry must be swallowed by the log's idempotency (attempt reports, the
 * publish steps, fail/reopen, start, prune).
 *
 * @example
 * ```ts
 * const events: RunEvent[] = decideRun(run, { type: "heartbeat", runId: "r1" }, { now: new Date() })
 * ```
 */
export type RunEvent = { [T in EventType]: NewEvent<T, EventData<T>> & { type: T } }[EventType];

/** Fields of an attempt report; `taskAttemptId` as a decimal string, a bigint or a safe integer. */
interface AttemptReportFields {
  runId: string;
  shard: number;
  attempt: number;
  taskAttemptId?: string | bigint | number | null;
  url?: string | null;
}

/**
 * A command to a run. Every command names its run; the state it is decided on must be that run's
 * (or the empty state, for `start`).
 *
 * @example
 * ```ts
 * const c: RunCommand = { type: "attemptSucceeded", runId: "r1", shard: 0, attempt: 0, url: "s3://b/d/data/r1/shard=00000/attempt=00" }
 * ```
 */
export type RunCommand =
  | { type: "start"; runId: string; datasetId: string; numShards: number }
  | { type: "heartbeat"; runId: string }
  | ({ type: "attemptStarted" } & AttemptReportFields)
  | ({ type: "attemptSucceeded" } & AttemptReportFields)
  | ({ type: "attemptFailed"; error: string } & AttemptReportFields)
  | { type: "selectWinners"; runId: string }
  | { type: "recordManifest"; runId: string; manifestUrl: string; createdAt?: Date }
  | { type: "markSucceeded"; runId: string }
  | {
      type: "fail";
      runId: string;
      cause: "writer_abort" | "heartbeat_timeout";
      reason: string;
      /**
       * For a `heartbeat_timeout`: the last sign of life the caller saw when it decided. Refused
       * when the run showed one since (a heartbeat or any report), or is no longer silent for
       * longer than `staleAfterMs` — the decision is re-made on the state the append sees.
       */
      silentSince?: Date;
      staleAfterMs?: number;
    }
  | { type: "reopen"; runId: string; reason?: string }
  | { type: "planCleanup"; runId: string; url: string; reason: CleanupReason }
  | { type: "recordCleanupSucceeded"; runId: string; url: string; deletedObjects: number }
  | {
      type: "recordCleanupFailed";
      runId: string;
      url: string;
      errorCode: string;
      errorMessage: string;
      transient: boolean;
      tries: number;
      exhausted: boolean;
      nextRetryAt: Date | null;
    }
  | { type: "requeueCleanup"; runId: string; url: string }
  | { type: "recordStaleCollected"; runId: string; url: string }
  | { type: "prune"; runId: string; reason: PruneReason; attempts?: number; failedItems?: number }
  | {
      type: "archive";
      runId: string;
      archiveUrl: string;
      events: number;
      /** v2 fields; the ledger's `archive` writes them on the dataset stream (src/ledger/archive.ts). */
      datasetId?: string | null;
      checksum?: string | null;
    };

/**
 * What a decision needs besides the state: the clock, the dataset's failed-retention floor (for
 * `reopen`), and metadata to stamp on every decided event.
 *
 * @example
 * ```ts
 * const ctx: DecideContext = { now: new Date(), failedRetentionMs: 7 * 86_400_000, metadata: { actor: "cli" } }
 * ```
 */
export interface DecideContext {
  now: Date;
  failedRetentionMs?: number;
  metadata?: Partial<EventMetadata>;
}

/**
 * The deterministic event id of an attempt report: the same identity and outcome always give the
 * same id, so a writer's retry is stored once.
 *
 * @example
 * ```ts
 * attemptEventId("r1", 3, 0, null, "SUCCEEDED") === attemptEventId("r1", 3, 0, null, "SUCCEEDED") // true
 * ```
 */
export function attemptEventId(
  runId: string,
  shard: number,
  attempt: number,
  taskAttemptId: string | null,
  outcome: AttemptOutcome,
): string {
  return deterministicEventId(
    SHARDLEDGER_EVENT_NAMESPACE,
    `${runId}/${attemptKey(shard, attempt, taskAttemptId)}/${outcome}`,
  );
}

/**
 * Decides which events a command appends to the run stream, or throws a typed error: a
 * {@link ValidationError} naming the field for bad input (including `shard` outside the run), a
 * {@link NotFoundError} for any command but `start` to a run that does not exist, an
 * {@link IllegalTransitionError} for what the lifecycle refuses (a pruned run, publishing twice,
 * reopening past the floor, …; a FAILED run's refusal names `retry-failed`, which reopens it), a
 * {@link ContradictingReportError} for an
 * attempt reported with the other outcome or at another url (both urls given and different). Pure: reads `state`, never changes it. Folding the
 * returned events (with the time the log records them) into `state` gives exactly
 * `foldRun(all events)`.
 *
 * An empty array means "already so": a repeated report, `AttemptStarted` after an outcome, a
 * repeated identical `start` of a STARTED run, `recordManifest` of the recorded manifest, `markSucceeded` of a
 * succeeded run. `selectWinners` with a shard missing returns ShardCoverageFailed + RunFailed
 * (cause `coverage`): append them, then throw {@link coverageErrorFrom}'s error.
 *
 * @example
 * ```ts
 * const events = decideRun(run, { type: "selectWinners", runId: "r1" }, { now: new Date() })
 * await log.append("run-r1", events, { expectedVersion: run.version })
 * const coverage = coverageErrorFrom(events)
 * if (coverage) throw coverage
 * ```
 */
export function decideRun(state: RunState, command: RunCommand, context: DecideContext): RunEvent[] {
  if (state.runId !== null && command.runId !== state.runId) {
    throw new ValidationError(
      "runId",
      `command for run ${JSON.stringify(command.runId)} decided on the state of run ${state.runId}`,
    );
  }
  const b = new EventBuilder(state, command, context);
  switch (command.type) {
    case "start":
      return decideStart(b, command);
    case "heartbeat": {
      const e = b.build("RunHeartbeat", { runId: command.runId });
      b.requireRun();
      b.requireAccepted(
        "RunHeartbeat",
        `run ${command.runId} is ${state.status}; only a STARTED run heartbeats${b.reopenHint()}`,
      );
      return [e];
    }
    case "attemptStarted":
      return decideReport(b, command, "STARTED");
    case "attemptSucceeded":
      return decideReport(b, command, "SUCCEEDED");
    case "attemptFailed":
      return decideReport(b, command, "FAILED");
    case "selectWinners":
      return decideSelectWinners(b);
    case "recordManifest": {
      const e = b.build(
        "ManifestPublished",
        {
          runId: command.runId,
          manifestUrl: command.manifestUrl,
          createdAt: (command.createdAt ?? context.now).toISOString(),
        },
        b.generationId("manifest"),
      );
      b.requireRun();
      if (state.publishProgress === "manifest_published" || state.publishProgress === "succeeded") {
        if (state.manifestUrl === e.data.manifestUrl) return [];
        b.refuse(`run ${command.runId} already recorded manifest ${state.manifestUrl}`);
      }
      b.requireAccepted(
        "ManifestPublished",
        `run ${command.runId} is ${state.status}; a manifest is recorded only after its winners are selected`,
      );
      return [e];
    }
    case "markSucceeded": {
      const e = b.build("RunSucceeded", { runId: command.runId }, b.generationId("succeeded"));
      b.requireRun();
      if (state.status === "SUCCEEDED") return [];
      b.requireAccepted(
        "RunSucceeded",
        `run ${command.runId} is ${state.status}; it succeeds only after its manifest is recorded`,
      );
      return [e];
    }
    case "fail": {
      if (command.cause !== "writer_abort" && command.cause !== "heartbeat_timeout") {
        throw new ValidationError(
          "cause",
          `must be writer_abort or heartbeat_timeout (coverage failures come from selectWinners), got ${JSON.stringify(command.cause)}`,
        );
      }
      const e = b.build(
        "RunFailed",
        { runId: command.runId, cause: command.cause, reason: command.reason },
        b.generationId("failed"),
      );
      b.requireRun();
      if (command.cause === "heartbeat_timeout") {
        const lastSign = Math.max(state.lastHeartbeatAt?.getTime() ?? 0, state.updatedAt?.getTime() ?? 0);
        if (command.silentSince !== undefined && lastSign > command.silentSince.getTime()) {
          b.refuse(
            `run ${command.runId} showed a sign of life at ${new Date(lastSign).toISOString()}, after the silence this was decided on (${command.silentSince.toISOString()}); it is not abandoned`,
          );
        }
        if (
          command.staleAfterMs !== undefined &&
          !(context.now.getTime() - lastSign > command.staleAfterMs)
        ) {
          b.refuse(
            `run ${command.runId} is not silent for longer than staleAfter (${command.staleAfterMs} ms)`,
          );
        }
      }
      b.requireAccepted(
        "RunFailed",
        state.status === "PUBLISHING"
          ? `run ${command.runId} already recorded its manifest; finish the publish instead`
          : `run ${command.runId} is ${state.status}; only a STARTED or PUBLISHING run can fail`,
      );
      return [e];
    }
    case "reopen":
      return decideReopen(b, command);
    case "planCleanup": {
      const e = b.build("CleanupPlanned", { runId: command.runId, url: command.url, reason: command.reason });
      b.requireRun();
      b.requireAccepted("CleanupPlanned", b.cleanupRefusal());
      if (command.reason === "loser" || command.reason === "orphan") {
        const winner = attemptsAtUrl(state, command.url).some((a) => a.status === "WINNER");
        if (winner) {
          b.refuse(`${command.url} holds a winner of run ${command.runId}; it is not ${command.reason} data`);
        }
      }
      return [e];
    }
    case "recordCleanupSucceeded": {
      const e = b.build("CleanupSucceeded", {
        runId: command.runId,
        url: command.url,
        deletedObjects: command.deletedObjects,
      });
      b.requireRun();
      b.requireAccepted("CleanupSucceeded", b.cleanupRefusal());
      return [e];
    }
    case "recordCleanupFailed": {
      const e = b.build("CleanupFailed", {
        runId: command.runId,
        url: command.url,
        errorCode: command.errorCode,
        errorMessage: command.errorMessage,
        transient: command.transient,
        tries: command.tries,
        exhausted: command.exhausted,
        nextRetryAt: command.nextRetryAt === null ? null : isoOrThrow("nextRetryAt", command.nextRetryAt),
      });
      b.requireRun();
      b.requireAccepted("CleanupFailed", b.cleanupRefusal());
      return [e];
    }
    case "requeueCleanup": {
      const e = b.build("CleanupRequeued", { runId: command.runId, url: command.url });
      b.requireRun();
      b.requireAccepted("CleanupRequeued", b.cleanupRefusal());
      if (state.cleanup.get(command.url)?.state !== "failed") {
        b.refuse(`${command.url} of run ${command.runId} has no failed cleanup to requeue`);
      }
      return [e];
    }
    case "recordStaleCollected": {
      const e = b.build("StaleAttemptCollected", { runId: command.runId, url: command.url });
      b.requireRun();
      b.requireAccepted("StaleAttemptCollected", b.cleanupRefusal());
      return [e];
    }
    case "prune":
      return decidePrune(b, command);
    case "archive": {
      const e = b.build("Archived", {
        runId: command.runId,
        archiveUrl: command.archiveUrl,
        events: command.events,
        datasetId: command.datasetId ?? state.datasetId ?? null,
        checksum: command.checksum ?? null,
        pruned: null,
      });
      b.requireRun({ allowPruned: true });
      b.requireAccepted("Archived", `run ${command.runId} is ${state.status}; only a pruned run is archived`);
      return [e];
    }
    default:
      throw new ValidationError(
        "type",
        `unknown run command ${JSON.stringify((command as { type: unknown }).type)}`,
      );
  }
}

/**
 * The {@link ShardCoverageError} a decided `selectWinners` stands for, or `null` when it selected
 * winners. The caller appends the events first (the run becomes FAILED), then throws it.
 *
 * @example
 * ```ts
 * const error = coverageErrorFrom(events)
 * if (error) throw error
 * ```
 */
export function coverageErrorFrom(events: readonly RunEvent[]): ShardCoverageError | null {
  for (const e of events) {
    if (e.type === "ShardCoverageFailed") return new ShardCoverageError(e.data.runId, e.data.missingShards);
  }
  return null;
}

class EventBuilder {
  constructor(
    readonly state: RunState,
    readonly command: RunCommand,
    readonly context: DecideContext,
  ) {}

  /**
   * Validates the data against the catalogue (the error names the field) and builds the event,
   * marked as built from validated data ({@link markBuilt}) so the event log does not parse it
   * again: validated once here, built once, folded once.
   */
  build<T extends EventType>(
    type: T,
    data: EventDataInput<T>,
    eventId?: string,
  ): NewEvent<T, EventData<T>> & { type: T } {
    const validated = defaultCatalogue.validate(type, data).data as EventData<T>;
    return markBuilt(this.trusted(type, validated, eventId), defaultCatalogue);
  }

  /**
   * Builds an event whose every field is a value the state holds, validated when it was
   * recorded, and marks it built: the log does not parse it again. Only where that parse costs:
   * a publish's WinnerSelected events (100,000 winners took 0.23 s of zod, with its BigInt check
   * of every taskAttemptId, to re-validate what the reports had). The assembly's shape is checked
   * by tests instead: every event decided in the run-machine properties is validated against the
   * catalogue and must come out unchanged (test/support/run-histories.ts).
   */
  fromState<T extends EventType>(
    type: T,
    data: EventData<T>,
    eventId?: string,
  ): NewEvent<T, EventData<T>> & { type: T } {
    return markBuilt(this.trusted(type, data, eventId), defaultCatalogue);
  }

  /**
   * Builds an event from data taken from the state, which was validated when it was recorded.
   * Not marked: the event log validates it (the only check of this assembly of the data).
   */
  trusted<T extends EventType>(
    type: T,
    data: EventData<T>,
    eventId?: string,
  ): NewEvent<T, EventData<T>> & { type: T } {
    const e: NewEvent<T, EventData<T>> & { type: T } = { type, data };
    if (eventId !== undefined) e.eventId = eventId;
    if (this.context.metadata !== undefined) e.metadata = { ...this.context.metadata };
    return e;
  }

  /** An id unique to this run, this generation (reopen count) and this step. */
  generationId(step: string): string {
    return deterministicEventId(
      SHARDLEDGER_EVENT_NAMESPACE,
      `${this.command.runId}/g${this.state.reopenCount}/${step}`,
    );
  }

  refuse(message: string): never {
    throw new IllegalTransitionError(this.command.type, this.state.status, message, {
      runId: this.command.runId,
      ...(this.state.datasetId !== null ? { datasetId: this.state.datasetId } : {}),
    });
  }

  requireRun(options: { allowPruned?: boolean } = {}): void {
    // No such run is a wrong id (exit 2 in the CLI), not a state that refuses the command.
    if (this.state.status === "NONE") throw new NotFoundError("run", this.command.runId);
    if (this.state.status === "PRUNED" && !options.allowPruned) {
      this.refuse(`run ${this.command.runId} is pruned; it accepts no more commands`);
    }
  }

  requireAccepted(eventKey: string, message: string): void {
    if (RUN_TABLE.next(this.state.phase, eventKey) === undefined) this.refuse(message);
  }

  /**
   * For a FAILED run, the command that reopens it (after a `; `), so a refusal names its fix;
   * empty for any other status.
   */
  reopenHint(): string {
    if (this.state.status !== "FAILED") return "";
    return `; reopen it with \`${retryFailedCommand(this.state.datasetId, this.command.runId)}\` while it is inside its failed-retention floor`;
  }

  cleanupRefusal(): string {
    return `run ${this.command.runId} is ${this.state.status}; cleanup is recorded only for SUCCEEDED or FAILED runs`;
  }
}

function decideStart(b: EventBuilder, command: Extract<RunCommand, { type: "start" }>): RunEvent[] {
  const e = b.build(
    "RunStarted",
    { runId: command.runId, datasetId: command.datasetId, numShards: command.numShards },
    deterministicEventId(
      SHARDLEDGER_EVENT_NAMESPACE,
      `${command.runId}/started/${command.datasetId}/${command.numShards}`,
    ),
  );
  const state = b.state;
  if (state.status === "PRUNED")
    b.refuse(`run ${command.runId} existed and was pruned; choose another runId`);
  if (state.status !== "NONE") {
    // An identical start is a retry of the one recorded, but only while that run still takes
    // reports: "starting" a finished run again would let a rerun's attempts join a published or
    // failed run (and be deleted as its losers) while the caller believes it has a fresh run.
    if (
      state.status === "STARTED" &&
      state.datasetId === e.data.datasetId &&
      state.numShards === e.data.numShards
    )
      return [];
    b.refuse(
      `run ${command.runId} already exists and is ${state.status} (dataset ${state.datasetId}, ${state.numShards} shards); choose another runId${b.reopenHint()}`,
    );
  }
  b.requireAccepted("RunStarted", `run ${command.runId} cannot start in ${state.status}`);
  return [e];
}

function decideReport(
  b: EventBuilder,
  command: Extract<RunCommand, { type: "attemptStarted" | "attemptSucceeded" | "attemptFailed" }>,
  outcome: AttemptOutcome,
): RunEvent[] {
  const ref = {
    runId: command.runId,
    shard: command.shard,
    attempt: command.attempt,
    taskAttemptId: command.taskAttemptId ?? null,
    url: command.url ?? null,
  };
  const type = REPORTED_EVENT_TYPE[outcome];
  const e: RunEvent =
    command.type === "attemptFailed"
      ? b.build("AttemptFailed", { ...ref, error: command.error })
      : b.build(type as "AttemptStarted" | "AttemptSucceeded", ref);
  const state = b.state;
  b.requireRun();
  b.requireAccepted(
    type,
    `run ${command.runId} is ${state.status}; it records no attempt reports${b.reopenHint()}`,
  );
  const data = e.data as EventData<"AttemptStarted">;
  if (data.shard >= state.numShards) {
    throw new ValidationError(
      "shard",
      `must be < numShards (${state.numShards}) of run ${command.runId}, got ${data.shard}`,
    );
  }
  const existing = state.attempts.get(attemptKey(data.shard, data.attempt, data.taskAttemptId));
  if (existing) {
    // One attempt wrote to one place: a second url for it is a different attempt misreported, and
    // dropping it silently would leave its data unrecorded (never cleaned) while the writer
    // believes it was. A url on one side only is a report completing the other, not contradicting it.
    if (existing.url !== null && data.url !== null && existing.url !== data.url) {
      throw new ContradictingReportError(`${command.runId}/${existing.key}`, existing.outcome, outcome, {
        recordedUrl: existing.url,
        reportedUrl: data.url,
      });
    }
    // A report that would store nothing must not carry a url the record lacks: answering it as
    // recorded would tell its writer that data at that url is known (and cleaned) when it is not.
    const dropsUrl = existing.url === null && data.url !== null;
    const refuseDroppedUrl = () =>
      new ContradictingReportError(`${command.runId}/${existing.key}`, existing.outcome, outcome, {
        recordedUrl: null,
        reportedUrl: data.url as string,
      });
    if (existing.outcome === outcome) {
      if (dropsUrl) throw refuseDroppedUrl();
      return [];
    }
    if (ATTEMPT_TABLE.next(existing.phase, REPORT_EVENT[outcome]) === undefined) {
      if (outcome === "STARTED") {
        if (dropsUrl) throw refuseDroppedUrl();
        return [];
      }
      throw new ContradictingReportError(`${command.runId}/${existing.key}`, existing.outcome, outcome);
    }
  }
  e.eventId = attemptEventId(data.runId, data.shard, data.attempt, data.taskAttemptId, outcome);
  return [e];
}

function decideSelectWinners(b: EventBuilder): RunEvent[] {
  const state = b.state;
  const runId = b.command.runId;
  b.requireRun();
  if (state.status !== "STARTED") {
    b.refuse(
      state.status === "FAILED"
        ? `run ${runId} is FAILED${b.reopenHint()}, write its missing shards, then publish`
        : `run ${runId} is ${state.status}; a run publishes at most once`,
    );
  }
  b.requireAccepted("WinnerSelected", `run ${runId} cannot select winners in ${state.phase}`);
  const selection = selectWinners(state.numShards, eligibleAttempts(state));
  if (selection.missingShards.length > 0) {
    const missing = selection.missingShards;
    return [
      b.trusted("ShardCoverageFailed", { runId, missingShards: missing }, b.generationId("coverage")),
      b.trusted(
        "RunFailed",
        {
          runId,
          cause: "coverage",
          reason: `no successful attempt for shard(s) ${summariseShards(missing)}`,
        },
        b.generationId("failed"),
      ),
    ];
  }
  // Shard order (selectWinners' order), WINNERS_PER_EVENT to an event: the same selection always
  // gives the same events and ids, so a retried publish of this generation is the one recorded.
  const ordered = [...selection.winners];
  const events: RunEvent[] = [];
  for (let i = 0; i < ordered.length; i += WINNERS_PER_EVENT) {
    const chunk = ordered.slice(i, i + WINNERS_PER_EVENT);
    const winners = chunk.map(([shard, w]) => ({
      shard,
      attempt: w.attempt,
      taskAttemptId: w.taskAttemptId,
      url: w.url,
    }));
    const first = winners[0]?.shard;
    const last = winners.at(-1)?.shard;
    events.push(
      b.fromState("WinnerSelected", { runId, winners }, b.generationId(`winners/${first}-${last}`)),
    );
  }
  return events;
}

/** Successful attempts whose data is still there (a failed run's stale cleanup may have removed some). */
function* eligibleAttempts(state: RunState): Generator<AttemptState> {
  for (const a of state.attempts.values()) if (a.status === "SUCCEEDED") yield a;
}

function decideReopen(b: EventBuilder, command: Extract<RunCommand, { type: "reopen" }>): RunEvent[] {
  const e = b.build(
    "RunReopened",
    { runId: command.runId, reason: command.reason ?? "reopened" },
    b.generationId("reopened"),
  );
  const state = b.state;
  const { now, failedRetentionMs } = b.context;
  b.requireRun();
  if (state.status !== "FAILED" || state.failedAt === null) {
    b.refuse(`run ${command.runId} is ${state.status}; only a FAILED run can be reopened`);
  }
  if (failedRetentionMs === undefined || !Number.isFinite(failedRetentionMs) || failedRetentionMs <= 0) {
    throw new ValidationError(
      "failedRetentionMs",
      "a positive number of milliseconds is needed to reopen a run",
    );
  }
  // A prune that has begun took the manifest first and then some of the data: a publish after a
  // reopen would point _CURRENT at winners that are gone. (A raised floor can put such a run back
  // inside it.) It finishes instead.
  for (const c of state.cleanup.values()) {
    if (c.reason !== null && c.reason !== "loser" && c.reason !== "orphan") {
      b.refuse(
        `run ${command.runId} cannot be reopened: its prune (${c.reason}) has begun, ${c.url} was planned for deletion at ${c.plannedAt?.toISOString() ?? "an unknown time"}`,
      );
    }
  }
  const ageMs = now.getTime() - state.failedAt.getTime();
  const inside = ageMs < failedRetentionMs;
  if (RUN_TABLE.next(state.phase, inside ? "RunReopened.inside" : "RunReopened") === undefined) {
    b.refuse(
      `run ${command.runId} failed ${ageMs} ms ago, past its failed-retention floor of ${failedRetentionMs} ms; it can no longer be reopened`,
    );
  }
  return [e];
}

function decidePrune(b: EventBuilder, command: Extract<RunCommand, { type: "prune" }>): RunEvent[] {
  const state = b.state;
  b.requireRun();
  let exhausted = 0;
  for (const c of state.cleanup.values()) if (c.state === "failed" && c.exhausted) exhausted++;
  const e = b.build(
    "Pruned",
    {
      runId: command.runId,
      datasetId: state.datasetId ?? "",
      reason: command.reason,
      attempts: command.attempts ?? state.attempts.size,
      failedItems: command.failedItems ?? exhausted + (state.status === "FAILED" ? 1 : 0),
    },
    deterministicEventId(SHARDLEDGER_EVENT_NAMESPACE, `${command.runId}/pruned`),
  );
  b.requireAccepted(
    "Pruned",
    `run ${command.runId} is ${state.status}; only a SUCCEEDED or FAILED run is pruned`,
  );
  return [e];
}

function isoOrThrow(field: string, d: Date): string {
  if (!(d instanceof Date) || Number.isNaN(d.getTime()))
    throw new ValidationError(field, "must be a valid Date");
  return d.toISOString();
}
