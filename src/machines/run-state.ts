import type { CleanupReason, PruneReason } from "../events/catalogue.js";
import type { AttemptStatus } from "./attempt-machine.js";
import { REPORT_EVENT, REPORTED_EVENT_TYPE } from "./attempt-reports.js";
import { ATTEMPT_TABLE, attemptPhaseInfo, RUN_TABLE, runStatusOf } from "./machine-tables.js";
import type { RunStatus } from "./run-machine.js";
import type { AttemptOutcome } from "./winner-selection.js";

/**
 * An event as the fold needs it: a {@link RecordedEvent} fits, and so does a decided
 * `NewEvent` with the time the log recorded it. `data` is trusted to satisfy the catalogue (the
 * log validates on append and upcasts on read).
 *
 * @example
 * ```ts
 * const e: FoldableEvent = { type: "RunHeartbeat", data: { runId: "r1" }, recordedAt: new Date() }
 * ```
 */
export interface FoldableEvent {
  readonly type: string;
  readonly data: unknown;
  readonly recordedAt: Date;
  /** When given, the state's `version` becomes it (else the count of events folded). */
  readonly streamVersion?: number;
}

/**
 * How far a publish got, so a crashed publish resumes at the right step: after `winners_selected`
 * write the manifest and record it, after `manifest_published` move `_CURRENT` and mark the run
 * succeeded.
 *
 * @example
 * ```ts
 * if (run.publishProgress === "manifest_published") await movePointerAndMarkSucceeded(run)
 * ```
 */
export type PublishProgress = "none" | "winners_selected" | "manifest_published" | "succeeded";

/**
 * Why a run failed (the `cause` of RunFailed).
 *
 * @example
 * ```ts
 * if (run.failureCause === "coverage") console.error("missing shards", run.missingShards)
 * ```
 */
type RunFailureCause = "coverage" | "writer_abort" | "heartbeat_timeout";

/**
 * The last error of a failed deletion.
 *
 * @example
 * ```ts
 * const e: CleanupError = { code: "SlowDown", message: "reduce your request rate", transient: true }
 * ```
 */
interface CleanupError {
  readonly code: string;
  readonly message: string;
  readonly transient: boolean;
}

/**
 * The cleanup of one url of the run (an attempt prefix, an orphan, a manifest): planned, failed
 * (and retried, or exhausted) or deleted.
 *
 * @example
 * ```ts
 * for (const c of run.cleanup.values()) if (c.state === "failed" && c.exhausted) report(c.url, c.lastError)
 * ```
 */
interface CleanupRecord {
  readonly url: string;
  readonly reason: CleanupReason | null;
  readonly state: "planned" | "failed" | "deleted";
  readonly tries: number;
  readonly exhausted: boolean;
  readonly lastError: CleanupError | null;
  readonly nextRetryAt: Date | null;
  readonly plannedAt: Date | null;
  readonly firstFailureAt: Date | null;
  readonly lastFailureAt: Date | null;
  readonly deletedAt: Date | null;
  readonly deletedObjects: number | null;
  readonly updatedAt: Date;
}

/**
 * The cleanup facts of an attempt's url, as last seen by the attempt.
 *
 * @example
 * ```ts
 * const due = (c: AttemptCleanup, now: Date) => !c.exhausted && (c.nextRetryAt ?? now) <= now
 * ```
 */
interface AttemptCleanup {
  readonly tries: number;
  readonly exhausted: boolean;
  readonly lastError: CleanupError | null;
  readonly nextRetryAt: Date | null;
}

/**
 * One attempt of the run. Identity is `(shard, attempt, taskAttemptId)` within the run (`key`);
 * the url is data (the latest non-null url reported).
 *
 * @example
 * ```ts
 * run.attempts.get(attemptKey(3, 0, null))?.status // "WINNER"
 * ```
 */
export interface AttemptState {
  readonly key: string;
  readonly shard: number;
  readonly attempt: number;
  readonly taskAttemptId: string | null;
  readonly url: string | null;
  /** What the writer reported. */
  readonly outcome: AttemptOutcome;
  /** The lifecycle status (SPEC "Attempt lifecycle"). */
  readonly status: AttemptStatus;
  /** The attempt machine's state key. */
  readonly phase: string;
  readonly error: string | null;
  readonly reportedAt: Date;
  readonly updatedAt: Date;
  readonly cleanup: AttemptCleanup | null;
}

/**
 * The winner of one shard, as WinnerSelected recorded it.
 *
 * @example
 * ```ts
 * const manifestEntries = [...run.winners.values()].map((w) => ({ shard: w.shard, url: w.url }))
 * ```
 */
interface WinnerRecord {
  readonly shard: number;
  readonly attempt: number;
  readonly taskAttemptId: string | null;
  readonly url: string | null;
  readonly attemptKey: string;
  readonly selectedAt: Date;
}

/**
 * The state of a run: the fold of its stream `run-<runId>`.
 *
 * @example
 * ```ts
 * const run = foldRun(await log.readStream(`run-${runId}`))
 * if (run.status === "PUBLISHING") resumePublish(run)
 * ```
 */
export interface RunState {
  readonly status: RunStatus;
  /** The run machine's state key (`"PUBLISHING.manifestPublished"`, …). */
  readonly phase: string;
  readonly runId: string | null;
  readonly datasetId: string | null;
  /** 0 until the run is started. */
  readonly numShards: number;
  readonly startedAt: Date | null;
  /** Time of the last event folded. */
  readonly updatedAt: Date | null;
  /** Last sign of life: the start, a heartbeat or a reopen. */
  readonly lastHeartbeatAt: Date | null;
  /**
   * When a writer last reported an attempt of the run (any outcome, accepted or not new): a
   * writer of the run was at work then, so the run's unreported files are not collected as
   * orphans until this is older than the safety window.
   */
  readonly lastReportAt: Date | null;
  /** When the run failed; `null` unless FAILED (a reopen clears it). */
  readonly failedAt: Date | null;
  readonly succeededAt: Date | null;
  readonly failureCause: RunFailureCause | null;
  readonly failureReason: string | null;
  /** How many times the run was reopened (the generation of its publish/fail events). */
  readonly reopenCount: number;
  readonly reopenedAt: Date | null;
  /** Every attempt, by {@link attemptKey}. */
  readonly attempts: ReadonlyMap<string, AttemptState>;
  /** Winners by shard, once selected (cleared when a publish is abandoned by a failure). */
  readonly winners: ReadonlyMap<number, WinnerRecord>;
  /** The shards the last coverage failure named (cleared by a reopen). */
  readonly missingShards: readonly number[];
  readonly manifestUrl: string | null;
  readonly manifestCreatedAt: Date | null;
  readonly publishProgress: PublishProgress;
  /** Cleanup of every url of the run that cleanup touched, attempt or not. */
  readonly cleanup: ReadonlyMap<string, CleanupRecord>;
  readonly prunedAt: Date | null;
  readonly pruneReason: PruneReason | null;
  readonly archiveUrl: string | null;
  /** Stream version of the last event folded (its `streamVersion`, else the count folded). */
  readonly version: number;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };
type MutableAttempt = Mutable<AttemptState>;
type MutableCleanup = Mutable<CleanupRecord>;
interface MutableRun extends Omit<Mutable<RunState>, "attempts" | "winners" | "cleanup" | "missingShards"> {
  attempts: Map<string, MutableAttempt>;
  winners: Map<number, WinnerRecord>;
  cleanup: Map<string, MutableCleanup>;
  missingShards: number[];
}

/**
 * The key of an attempt within its run: `shard/attempt/taskAttemptId`, `-` when the engine gave
 * no taskAttemptId. The url is data, not identity. (The same format as the projections use.)
 *
 * @example
 * ```ts
 * attemptKey(3, 1, null) // "3/1/-"
 * ```
 */
export function attemptKey(shard: number, attempt: number, taskAttemptId: string | null): string {
  return `${shard}/${attempt}/${taskAttemptId ?? "-"}`;
}

/**
 * The state of a run stream with no events: status `NONE`.
 *
 * @example
 * ```ts
 * decideRun(initialRunState(), { type: "start", runId: "r1", datasetId: "d1", numShards: 4 }, { now })
 * ```
 */
export function initialRunState(): RunState {
  const state: MutableRun = {
    status: runStatusOf(RUN_TABLE.initial),
    phase: RUN_TABLE.initial,
    runId: null,
    datasetId: null,
    numShards: 0,
    startedAt: null,
    updatedAt: null,
    lastHeartbeatAt: null,
    lastReportAt: null,
    failedAt: null,
    succeededAt: null,
    failureCause: null,
    failureReason: null,
    reopenCount: 0,
    reopenedAt: null,
    attempts: new Map(),
    winners: new Map(),
    missingShards: [],
    manifestUrl: null,
    manifestCreatedAt: null,
    publishProgress: "none",
    cleanup: new Map(),
    prunedAt: null,
    pruneReason: null,
    archiveUrl: null,
    version: 0,
  };
  return state;
}

/**
 * Folds a run stream's events into its state. O(events + attempts): each event costs a table
 * lookup of the run machine and, for attempt events, of the attempt machine; the one pass over all
 * attempts happens when the last winner is selected (they become losers) and when a publish is
 * abandoned.
 *
 * @example
 * ```ts
 * const run = foldRun(await log.readStream("run-r1"))
 * ```
 */
export function foldRun(events: Iterable<FoldableEvent>): RunState {
  const state = initialRunState();
  for (const event of events) evolveRun(state, event);
  return state;
}

/**
 * Applies one event to a run state and returns it. **Updates `state` in place** (its maps are not
 * copied, which is what keeps a fold of 300,000 events linear); use {@link cloneRunState} first to
 * keep the previous state. Events the run machine refuses in the current state (a second
 * RunStarted, a report to a pruned run, …) change nothing but `version` and `updatedAt`; so do
 * a repeated report and the later of two contradicting reports (the first report stands).
 *
 * @example
 * ```ts
 * for (const e of decideRun(run, command, { now })) evolveRun(run, { ...e, recordedAt: now })
 * ```
 */
export function evolveRun(state: RunState, event: FoldableEvent): RunState {
  const s = state as MutableRun;
  s.version = event.streamVersion ?? s.version + 1;
  s.updatedAt = event.recordedAt;
  const at = event.recordedAt;
  const d = event.data as Record<string, unknown>;
  switch (event.type) {
    case "RunStarted":
      if (!stepRun(s, "RunStarted")) break;
      s.runId = d.runId as string;
      s.datasetId = d.datasetId as string;
      s.numShards = d.numShards as number;
      s.startedAt = at;
      s.lastHeartbeatAt = at;
      break;
    case "RunHeartbeat":
      if (stepRun(s, "RunHeartbeat")) s.lastHeartbeatAt = at;
      break;
    case "AttemptStarted":
      applyReport(s, "STARTED", d, at);
      break;
    case "AttemptSucceeded":
      applyReport(s, "SUCCEEDED", d, at);
      break;
    case "AttemptFailed":
      applyReport(s, "FAILED", d, at);
      break;
    case "WinnerSelected":
      applyWinners(s, d, at);
      break;
    case "ShardCoverageFailed":
      if (stepRun(s, "ShardCoverageFailed")) s.missingShards = [...(d.missingShards as number[])];
      break;
    case "ManifestPublished":
      if (!stepRun(s, "ManifestPublished")) break;
      s.manifestUrl = d.manifestUrl as string;
      s.manifestCreatedAt = new Date(d.createdAt as string);
      s.publishProgress = "manifest_published";
      break;
    case "RunSucceeded":
      if (!stepRun(s, "RunSucceeded")) break;
      s.succeededAt = at;
      s.publishProgress = "succeeded";
      break;
    case "RunFailed": {
      const wasPublishing = s.status === "PUBLISHING";
      if (!stepRun(s, "RunFailed")) break;
      s.failedAt = at;
      s.failureCause = d.cause as RunFailureCause;
      s.failureReason = d.reason as string;
      // A publish abandoned before its manifest published nothing: its selection is void, the
      // attempts are what they were before it, and a reopened run selects again.
      if (wasPublishing) {
        for (const a of s.attempts.values()) if (stepAttempt(a, "PUBLISH_UNDONE")) a.updatedAt = at;
        s.winners.clear();
        s.publishProgress = "none";
      }
      break;
    }
    case "RunReopened":
      // The failed-retention floor was checked when the reopen was decided; a recorded one was inside it.
      if (!stepRun(s, "RunReopened.inside")) break;
      s.failedAt = null;
      s.failureCause = null;
      s.failureReason = null;
      s.missingShards = [];
      s.reopenCount += 1;
      s.reopenedAt = at;
      s.lastHeartbeatAt = at;
      break;
    case "CleanupPlanned": {
      if (!stepRun(s, "CleanupPlanned")) break;
      const c = cleanupRecord(s, d.url as string, at);
      c.reason = d.reason as CleanupReason;
      c.state = "planned";
      c.plannedAt = at;
      c.nextRetryAt = null;
      break;
    }
    case "CleanupFailed": {
      if (!stepRun(s, "CleanupFailed")) break;
      const c = cleanupRecord(s, d.url as string, at);
      c.state = "failed";
      c.tries = d.tries as number;
      c.exhausted = d.exhausted as boolean;
      c.lastError = {
        code: d.errorCode as string,
        message: d.errorMessage as string,
        transient: d.transient as boolean,
      };
      c.nextRetryAt = d.nextRetryAt === null ? null : new Date(d.nextRetryAt as string);
      c.firstFailureAt ??= at;
      c.lastFailureAt = at;
      applyCleanupToAttempts(s, c, c.exhausted ? "CLEANUP_FAILED.exhausted" : "CLEANUP_FAILED", at);
      break;
    }
    case "CleanupRequeued": {
      if (!stepRun(s, "CleanupRequeued")) break;
      const c = s.cleanup.get(d.url as string);
      if (c?.state !== "failed") break;
      c.state = "planned";
      c.exhausted = false;
      c.nextRetryAt = null;
      c.updatedAt = at;
      applyCleanupToAttempts(s, c, "CLEANUP_REQUEUED", at);
      break;
    }
    case "CleanupSucceeded":
    case "StaleAttemptCollected": {
      if (!stepRun(s, event.type)) break;
      const c = cleanupRecord(s, d.url as string, at);
      if (event.type === "StaleAttemptCollected") c.reason ??= "stale";
      c.state = "deleted";
      c.exhausted = false;
      c.nextRetryAt = null;
      c.deletedAt = at;
      c.deletedObjects = typeof d.deletedObjects === "number" ? d.deletedObjects : null;
      applyCleanupToAttempts(s, c, "CLEANUP_SUCCEEDED", at);
      break;
    }
    case "Pruned":
      if (!stepRun(s, "Pruned")) break;
      s.prunedAt = at;
      s.pruneReason = d.reason as PruneReason;
      break;
    case "Archived":
      if (stepRun(s, "Archived")) s.archiveUrl = d.archiveUrl as string;
      break;
    default:
      // Events of types this fold does not know (a newer writer's) change nothing but the version.
      break;
  }
  return s;
}

/**
 * A deep copy of a run state, for a caller that must keep the state before an {@link evolveRun}.
 *
 * @example
 * ```ts
 * const before = cloneRunState(run)
 * ```
 */
export function cloneRunState(state: RunState): RunState {
  const attempts = new Map<string, MutableAttempt>();
  for (const [k, a] of state.attempts) attempts.set(k, { ...a, cleanup: a.cleanup && { ...a.cleanup } });
  const cleanup = new Map<string, MutableCleanup>();
  for (const [u, c] of state.cleanup) cleanup.set(u, { ...c });
  const copy: MutableRun = {
    ...(state as MutableRun),
    attempts,
    winners: new Map(state.winners),
    cleanup,
    missingShards: [...state.missingShards],
  };
  return copy;
}

function stepRun(s: MutableRun, eventKey: string): boolean {
  const next = RUN_TABLE.next(s.phase, eventKey);
  if (next === undefined) return false;
  if (next !== s.phase) {
    s.phase = next;
    s.status = runStatusOf(next);
  }
  return true;
}

function stepAttempt(a: MutableAttempt, eventKey: string): boolean {
  const next = ATTEMPT_TABLE.next(a.phase, eventKey);
  if (next === undefined) return false;
  if (next !== a.phase) {
    const info = attemptPhaseInfo(next);
    a.phase = next;
    a.status = info.status;
    a.outcome = info.outcome;
  }
  return true;
}

function applyReport(s: MutableRun, outcome: AttemptOutcome, d: Record<string, unknown>, at: Date): void {
  const shard = d.shard as number;
  if (shard >= s.numShards) return;
  if (!stepRun(s, REPORTED_EVENT_TYPE[outcome])) return;
  s.lastReportAt = at;
  const taskAttemptId = (d.taskAttemptId ?? null) as string | null;
  const key = attemptKey(shard, d.attempt as number, taskAttemptId);
  let a = s.attempts.get(key);
  if (a) {
    // The same outcome twice is one report; STARTED after an outcome and a contradicting outcome
    // are refused by the machine, and the first report stands.
    if (a.outcome === outcome || !stepAttempt(a, REPORT_EVENT[outcome])) return;
  } else {
    const initial = attemptPhaseInfo(ATTEMPT_TABLE.initial);
    a = {
      key,
      shard,
      attempt: d.attempt as number,
      taskAttemptId,
      url: null,
      outcome: initial.outcome,
      status: initial.status,
      phase: ATTEMPT_TABLE.initial,
      error: null,
      reportedAt: at,
      updatedAt: at,
      cleanup: null,
    };
    s.attempts.set(key, a);
    stepAttempt(a, REPORT_EVENT[outcome]);
  }
  const url = (d.url ?? null) as string | null;
  if (url !== null && url !== a.url) setAttemptUrl(s, a, url);
  if (outcome === "FAILED") a.error = d.error as string;
  a.updatedAt = at;
  // Reported after winners were selected: a loser at once, never unclassified.
  if (s.status === "PUBLISHING" || s.status === "SUCCEEDED") stepAttempt(a, "SELECT_LOSER");
}

function setAttemptUrl(s: MutableRun, a: MutableAttempt, url: string): void {
  const index = urlIndexes.get(s);
  if (index) {
    if (a.url !== null) unindex(index, a.url, a);
    indexAttempt(index, url, a);
  }
  a.url = url;
}

/**
 * Attempts by url, for cleanup events (which name a url). Cleanup only happens once a run is
 * terminal, so the index is built on first use rather than paid for by every report of a publish;
 * it lives beside the state (not in it) and is kept current from then on.
 */
const urlIndexes = new WeakMap<RunState, Map<string, MutableAttempt | MutableAttempt[]>>();

function urlIndex(state: RunState): Map<string, MutableAttempt | MutableAttempt[]> {
  let index = urlIndexes.get(state);
  if (!index) {
    index = new Map();
    for (const a of (state as MutableRun).attempts.values())
      if (a.url !== null) indexAttempt(index, a.url, a);
    urlIndexes.set(state, index);
  }
  return index;
}

function indexAttempt(
  index: Map<string, MutableAttempt | MutableAttempt[]>,
  url: string,
  a: MutableAttempt,
): void {
  const existing = index.get(url);
  if (existing === undefined) index.set(url, a);
  else if (Array.isArray(existing)) existing.push(a);
  else index.set(url, [existing, a]);
}

function unindex(
  index: Map<string, MutableAttempt | MutableAttempt[]>,
  url: string,
  a: MutableAttempt,
): void {
  const existing = index.get(url);
  if (existing === a) index.delete(url);
  else if (Array.isArray(existing)) {
    const i = existing.indexOf(a);
    if (i >= 0) existing.splice(i, 1);
    if (existing.length === 0) index.delete(url);
  }
}

/**
 * The attempts of a run whose (latest) url is `url`, in report order. Several attempts may share
 * a url; cleanup events name urls, not attempts.
 *
 * @example
 * ```ts
 * attemptsAtUrl(run, "s3://b/d/data/r1/shard=00003/attempt=01").map((a) => a.status)
 * ```
 */
export function attemptsAtUrl(state: RunState, url: string): readonly AttemptState[] {
  const found = urlIndex(state).get(url);
  return found === undefined ? [] : Array.isArray(found) ? [...found] : [found];
}

/**
 * One WinnerSelected event: the winners of up to WINNERS_PER_EVENT shards (v1 events, one shard
 * each, arrive upcast). The selection completes with the event that names the last shard; then
 * every other attempt becomes a loser, in one pass.
 */
function applyWinners(s: MutableRun, d: Record<string, unknown>, at: Date): void {
  const named = d.winners as readonly Record<string, unknown>[];
  // A second selection for a shard (two publishers racing without an expected version) is void.
  const fresh = new Map<number, Record<string, unknown>>();
  for (const w of named) {
    const shard = w.shard as number;
    if (shard < s.numShards && !s.winners.has(shard) && !fresh.has(shard)) fresh.set(shard, w);
  }
  if (fresh.size === 0) return;
  const completes = s.winners.size + fresh.size === s.numShards;
  if (!stepRun(s, completes ? "WinnerSelected.completes" : "WinnerSelected")) return;
  for (const [shard, w] of fresh) {
    const taskAttemptId = (w.taskAttemptId ?? null) as string | null;
    const key = attemptKey(shard, w.attempt as number, taskAttemptId);
    s.winners.set(shard, {
      shard,
      attempt: w.attempt as number,
      taskAttemptId,
      url: (w.url ?? null) as string | null,
      attemptKey: key,
      selectedAt: at,
    });
    const winner = s.attempts.get(key);
    if (winner && stepAttempt(winner, "SELECT_WINNER")) winner.updatedAt = at;
  }
  if (!completes) return;
  s.publishProgress = "winners_selected";
  for (const a of s.attempts.values()) if (stepAttempt(a, "SELECT_LOSER")) a.updatedAt = at;
}

function cleanupRecord(s: MutableRun, url: string, at: Date): MutableCleanup {
  let c = s.cleanup.get(url);
  if (!c) {
    c = {
      url,
      reason: null,
      state: "planned",
      tries: 0,
      exhausted: false,
      lastError: null,
      nextRetryAt: null,
      plannedAt: null,
      firstFailureAt: null,
      lastFailureAt: null,
      deletedAt: null,
      deletedObjects: null,
      updatedAt: at,
    };
    s.cleanup.set(url, c);
  }
  c.updatedAt = at;
  return c;
}

function applyCleanupToAttempts(s: MutableRun, c: MutableCleanup, eventKey: string, at: Date): void {
  const found = urlIndex(s).get(c.url);
  if (found === undefined) return;
  for (const a of Array.isArray(found) ? found : [found]) {
    // A winner's data is never the loser cleanup's business: the machine refuses, nothing changes.
    if (!stepAttempt(a, eventKey)) continue;
    a.cleanup = {
      tries: c.tries,
      exhausted: c.exhausted,
      lastError: c.lastError,
      nextRetryAt: c.nextRetryAt,
    };
    a.updatedAt = at;
  }
}
