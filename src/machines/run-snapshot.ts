import { attemptPhaseInfo } from "./machine-tables.js";
import { type AttemptState, attemptKey, initialRunState, type RunState } from "./run-state.js";

/**
 * The version of the run fold ({@link evolveRun}) and of the snapshot format below. A snapshot
 * records the version that wrote it and is used only by the same version: one written by an older
 * (or newer) fold is ignored and the run is folded from its log. Bump it whenever a recorded
 * history would fold into a different state, or the format changes; test/machines/run-snapshot
 * keeps a hash of the fold's sources to remind whoever changes them. 2: `lastReportAt`.
 *
 * @example
 * ```ts
 * if (snapshot.foldVersion !== RUN_FOLD_VERSION) state = foldRun(await log.readStream(stream))
 * ```
 */
export const RUN_FOLD_VERSION = 2;

type Winner = RunState["winners"] extends ReadonlyMap<number, infer W> ? W : never;
type Cleanup = RunState["cleanup"] extends ReadonlyMap<string, infer C> ? C : never;
type CleanupError = NonNullable<Cleanup["lastError"]>;

/** A date as an index into the snapshot's `times` (epoch ms, each distinct time once), or null. */
type T = number | null;
/** [code, message, transient] */
type ErrorTuple = [string, string, boolean] | null;
/** Every field of a cleanup record, dates as T. */
type CleanupTuple = [
  string,
  Cleanup["reason"],
  Cleanup["state"],
  number,
  boolean,
  ErrorTuple,
  T,
  T,
  T,
  T,
  T,
  number | null,
  T,
];

/** The run's scalar fields, dates as T. */
interface RunScalars {
  status: RunState["status"];
  phase: string;
  runId: string | null;
  datasetId: string | null;
  numShards: number;
  startedAt: T;
  updatedAt: T;
  lastHeartbeatAt: T;
  lastReportAt: T;
  failedAt: T;
  succeededAt: T;
  failureCause: RunState["failureCause"];
  failureReason: string | null;
  reopenCount: number;
  reopenedAt: T;
  missingShards: number[];
  manifestUrl: string | null;
  manifestCreatedAt: T;
  publishProgress: RunState["publishProgress"];
  prunedAt: T;
  pruneReason: RunState["pruneReason"];
  archiveUrl: string | null;
  version: number;
}

/**
 * The serialised form (JSON) of one run state. Attempts and winners are stored by column (one
 * array per field: JSON of plain number and string arrays is small and parses fast), repeated
 * strings and times once in a table, and urls front-coded (the length shared with the previous
 * url, then the rest): a run's urls differ mostly in their last characters.
 */
interface SnapshotBody {
  fold: number;
  run: RunScalars;
  times: number[];
  /** Distinct attempt phases. */
  phases: string[];
  /** Distinct attempt errors. */
  errors: (string | null)[];
  attempts: {
    shard: number[];
    attempt: number[];
    taskAttemptId: (string | null)[];
    /** Characters shared with the previous attempt's url (-1: the url is null). */
    urlShared: number[];
    urlRest: string[];
    phase: number[];
    error: number[];
    reportedAt: number[];
    updatedAt: number[];
    /** [attempt index, tries, exhausted, lastError, nextRetryAt] of the attempts that have cleanup facts. */
    cleanup: [number, number, boolean, ErrorTuple, T][];
  };
  winners: {
    shard: number[];
    attempt: number[];
    taskAttemptId: (string | null)[];
    /** 0: the url of the winning attempt; else the url (or null). */
    url: (string | null | 0)[];
    selectedAt: number[];
  };
  cleanup: CleanupTuple[];
}

const errorTuple = (e: CleanupError | null): ErrorTuple =>
  e === null ? null : [e.code, e.message, e.transient];
const errorOf = (t: ErrorTuple): CleanupError | null =>
  t === null ? null : { code: t[0], message: t[1], transient: t[2] };

/** Hands out the index of each distinct value, in first-seen order. */
class Table<V> {
  readonly values: V[] = [];
  readonly #index = new Map<V, number>();
  of(v: V): number {
    let i = this.#index.get(v);
    if (i === undefined) {
      i = this.values.length;
      this.values.push(v);
      this.#index.set(v, i);
    }
    return i;
  }
}

/**
 * Serialises a run state to text for a snapshot: Maps become arrays of tuples, dates epoch
 * milliseconds, and what follows from other fields (an attempt's key, status and outcome, a
 * winner's key and its url when it is its attempt's) is left out. {@link restoreRunState} gives
 * back an equal state. ~100 bytes per attempt: the JSON is a fraction of the run's events.
 *
 * @example
 * ```ts
 * const text = serialiseRunState(foldRun(events))
 * ```
 */
export function serialiseRunState(state: RunState): string {
  const times = new Table<number>();
  const time = (d: Date | null): T => (d === null ? null : times.of(d.getTime()));
  const phases = new Table<string>();
  const errors = new Table<string | null>();
  const a: SnapshotBody["attempts"] = {
    shard: [],
    attempt: [],
    taskAttemptId: [],
    urlShared: [],
    urlRest: [],
    phase: [],
    error: [],
    reportedAt: [],
    updatedAt: [],
    cleanup: [],
  };
  let previous = "";
  for (const x of state.attempts.values()) {
    const i = a.shard.length;
    a.shard.push(x.shard);
    a.attempt.push(x.attempt);
    a.taskAttemptId.push(x.taskAttemptId);
    if (x.url === null) {
      a.urlShared.push(-1);
      a.urlRest.push("");
    } else {
      const url = x.url;
      const max = Math.min(url.length, previous.length);
      let n = 0;
      while (n < max && url.charCodeAt(n) === previous.charCodeAt(n)) n++;
      a.urlShared.push(n);
      a.urlRest.push(url.slice(n));
      previous = url;
    }
    a.phase.push(phases.of(x.phase));
    a.error.push(errors.of(x.error));
    a.reportedAt.push(times.of(x.reportedAt.getTime()));
    a.updatedAt.push(times.of(x.updatedAt.getTime()));
    const c = x.cleanup;
    if (c !== null) a.cleanup.push([i, c.tries, c.exhausted, errorTuple(c.lastError), time(c.nextRetryAt)]);
  }
  const w: SnapshotBody["winners"] = { shard: [], attempt: [], taskAttemptId: [], url: [], selectedAt: [] };
  for (const x of state.winners.values()) {
    w.shard.push(x.shard);
    w.attempt.push(x.attempt);
    w.taskAttemptId.push(x.taskAttemptId);
    const own = x.url !== null && state.attempts.get(x.attemptKey)?.url === x.url;
    w.url.push(own ? 0 : x.url);
    w.selectedAt.push(times.of(x.selectedAt.getTime()));
  }
  const cleanup: CleanupTuple[] = [];
  for (const c of state.cleanup.values()) {
    cleanup.push([
      c.url,
      c.reason,
      c.state,
      c.tries,
      c.exhausted,
      errorTuple(c.lastError),
      time(c.nextRetryAt),
      time(c.plannedAt),
      time(c.firstFailureAt),
      time(c.lastFailureAt),
      time(c.deletedAt),
      c.deletedObjects,
      time(c.updatedAt),
    ]);
  }
  const run: RunScalars = {
    status: state.status,
    phase: state.phase,
    runId: state.runId,
    datasetId: state.datasetId,
    numShards: state.numShards,
    startedAt: time(state.startedAt),
    updatedAt: time(state.updatedAt),
    lastHeartbeatAt: time(state.lastHeartbeatAt),
    lastReportAt: time(state.lastReportAt),
    failedAt: time(state.failedAt),
    succeededAt: time(state.succeededAt),
    failureCause: state.failureCause,
    failureReason: state.failureReason,
    reopenCount: state.reopenCount,
    reopenedAt: time(state.reopenedAt),
    missingShards: [...state.missingShards],
    manifestUrl: state.manifestUrl,
    manifestCreatedAt: time(state.manifestCreatedAt),
    publishProgress: state.publishProgress,
    prunedAt: time(state.prunedAt),
    pruneReason: state.pruneReason,
    archiveUrl: state.archiveUrl,
    version: state.version,
  };
  const body: SnapshotBody = {
    fold: RUN_FOLD_VERSION,
    run,
    times: times.values,
    phases: phases.values,
    errors: errors.values,
    attempts: a,
    winners: w,
    cleanup,
  };
  return JSON.stringify(body);
}

/**
 * The run state a {@link serialiseRunState} text holds, or `null` when the text is not a snapshot
 * of this fold version (another version wrote it, or it is damaged): the caller then folds the
 * run from its log. A snapshot is never needed for correctness, so nothing here throws. Equal
 * times share one Date object, as the fold's do (the fold never changes a Date, it replaces it).
 *
 * @example
 * ```ts
 * const state = restoreRunState(text) ?? foldRun(await log.readStream(stream))
 * ```
 */
export function restoreRunState(text: string): RunState | null {
  try {
    const body = JSON.parse(text) as SnapshotBody;
    if (body?.fold !== RUN_FOLD_VERSION) return null;
    const dates = body.times.map((m) => {
      if (typeof m !== "number") throw new TypeError("time");
      return new Date(m);
    });
    const date = (t: T): Date | null => {
      if (t === null) return null;
      const d = dates[t];
      if (d === undefined) throw new RangeError("time index");
      return d;
    };
    const required = (t: T): Date => {
      const d = date(t);
      if (d === null) throw new TypeError("missing time");
      return d;
    };
    const r = body.run;
    const state = initialRunState() as RunState & {
      attempts: Map<string, AttemptState>;
      winners: Map<number, Winner>;
      cleanup: Map<string, Cleanup>;
    };
    const fields: Partial<Record<keyof RunState, unknown>> = {
      status: r.status,
      phase: r.phase,
      runId: r.runId,
      datasetId: r.datasetId,
      numShards: r.numShards,
      startedAt: date(r.startedAt),
      updatedAt: date(r.updatedAt),
      lastHeartbeatAt: date(r.lastHeartbeatAt),
      lastReportAt: date(r.lastReportAt),
      failedAt: date(r.failedAt),
      succeededAt: date(r.succeededAt),
      failureCause: r.failureCause,
      failureReason: r.failureReason,
      reopenCount: r.reopenCount,
      reopenedAt: date(r.reopenedAt),
      missingShards: [...r.missingShards],
      manifestUrl: r.manifestUrl,
      manifestCreatedAt: date(r.manifestCreatedAt),
      publishProgress: r.publishProgress,
      prunedAt: date(r.prunedAt),
      pruneReason: r.pruneReason,
      archiveUrl: r.archiveUrl,
      version: r.version,
    };
    Object.assign(state, fields);
    if (!Number.isSafeInteger(state.version) || state.version < 1) return null;
    // Each phase's status and outcome once (an unknown phase throws: another fold's snapshot).
    const phases = body.phases;
    const infos = phases.map((p) => attemptPhaseInfo(p));
    const a = body.attempts;
    const n = a.shard.length;
    const columns = [
      a.attempt,
      a.taskAttemptId,
      a.urlShared,
      a.urlRest,
      a.phase,
      a.error,
      a.reportedAt,
      a.updatedAt,
    ];
    if (columns.some((c) => c.length !== n)) return null;
    const all: AttemptState[] = new Array(n);
    let previous = "";
    for (let i = 0; i < n; i++) {
      const shard = a.shard[i] as number;
      const attempt = a.attempt[i] as number;
      const taskAttemptId = a.taskAttemptId[i] as string | null;
      const shared = a.urlShared[i] as number;
      let url: string | null = null;
      if (shared >= 0) {
        url = shared === 0 ? (a.urlRest[i] as string) : previous.slice(0, shared) + (a.urlRest[i] as string);
        previous = url;
      }
      const phaseIndex = a.phase[i] as number;
      const info = infos[phaseIndex];
      if (!info) return null;
      const key = attemptKey(shard, attempt, taskAttemptId);
      const x: AttemptState = {
        key,
        shard,
        attempt,
        taskAttemptId,
        url,
        outcome: info.outcome,
        status: info.status,
        phase: phases[phaseIndex] as string,
        error: body.errors[a.error[i] as number] ?? null,
        reportedAt: required(a.reportedAt[i] as number),
        updatedAt: required(a.updatedAt[i] as number),
        cleanup: null,
      };
      all[i] = x;
      state.attempts.set(key, x);
    }
    for (const [i, tries, exhausted, lastError, nextRetryAt] of a.cleanup) {
      const x = all[i];
      if (!x) return null;
      (x as { cleanup: AttemptState["cleanup"] }).cleanup = {
        tries,
        exhausted,
        lastError: errorOf(lastError),
        nextRetryAt: date(nextRetryAt),
      };
    }
    const w = body.winners;
    for (let i = 0; i < w.shard.length; i++) {
      const shard = w.shard[i] as number;
      const taskAttemptId = w.taskAttemptId[i] as string | null;
      const key = attemptKey(shard, w.attempt[i] as number, taskAttemptId);
      let url = w.url[i];
      if (url === 0) {
        url = state.attempts.get(key)?.url ?? null;
        if (url === null) return null;
      }
      state.winners.set(shard, {
        shard,
        attempt: w.attempt[i] as number,
        taskAttemptId,
        url: url ?? null,
        attemptKey: key,
        selectedAt: required(w.selectedAt[i] as number),
      });
    }
    for (const t of body.cleanup) {
      state.cleanup.set(t[0], {
        url: t[0],
        reason: t[1],
        state: t[2],
        tries: t[3],
        exhausted: t[4],
        lastError: errorOf(t[5]),
        nextRetryAt: date(t[6]),
        plannedAt: date(t[7]),
        firstFailureAt: date(t[8]),
        lastFailureAt: date(t[9]),
        deletedAt: date(t[10]),
        deletedObjects: t[11],
        updatedAt: required(t[12]),
      });
    }
    return state;
  } catch {
    return null;
  }
}
