import {
  IllegalTransitionError,
  isConcurrencyError,
  isNotFoundError,
  isValidationError,
  ValidationError,
} from "../errors.js";
import type { EventMetadata, RecordedEvent } from "../events/envelope.js";
import type {
  AppendFence,
  AppendResult,
  EventLog,
  EventLogSession,
  ExpectedVersion,
} from "../events/event-log.js";
import { runStream } from "../events/streams.js";
import { type DecideContext, decideRun, type RunCommand, type RunEvent } from "../machines/run-commands.js";
import { RUN_FOLD_VERSION, restoreRunState, serialiseRunState } from "../machines/run-snapshot.js";
import type { RunSnapshotStore } from "../machines/run-snapshot-store.js";
import { cloneRunState, evolveRun, initialRunState, type RunState } from "../machines/run-state.js";
import { rebaseReportScratch, reportScratch } from "./report-scratch.js";

const MAX_CACHED_RUNS = 256;
const MAX_CONFLICT_RETRIES = 50;
/**
 * After a report group of a run lost a version conflict, this process decides that run's groups
 * under the run stream's lock for this long (renewed by every further conflict): under sustained
 * contention from several processes every group queues on the lock rather than racing first.
 */
const CONTENDED_MS = 1000;
/**
 * At most this many reports are decided together and stored by one append. The bound keeps one
 * append one bounded statement and transaction (1,000 events of a few hundred bytes each, their
 * inline projection in the same transaction, the run stream's row locked for its duration), so a
 * group's latency, memory and the work re-done after a version conflict stay bounded however many
 * reports wait; more waiting reports simply form the next group. Beyond a few hundred events per
 * append the per-event cost dominates the per-append cost (see bench/append.ts), so a larger group
 * would buy little.
 */
const MAX_GROUP_SIZE = 1000;
/**
 * The next group is decided while the previous group's append is in flight only when at least
 * this many reports wait (batches, or a burst). Measured (bench/report-throughput, 64 concurrent
 * single reports over HTTP): deciding a few dozen ahead made groups smaller and appends more
 * frequent, 0.87-0.90x the throughput of letting them gather.
 */
const SPECULATE_AT_LEAST = 256;
/**
 * A run's state is snapshotted once its stream has grown by at least this many events since the
 * last snapshot (below it, folding the stream is cheaper than reading and restoring a snapshot)…
 */
const SNAPSHOT_MIN_EVENTS = 1000;
/**
 * …and by at least this share of its length. Writing a snapshot costs in proportion to the run's
 * size, so spacing them by a share of the stream keeps their cost per event constant (≤ 1/0.1 = 10
 * events' worth of state serialised per event appended), while a load never folds more than about
 * a tenth of the stream on top of the snapshot.
 */
const SNAPSHOT_GROWTH = 0.1;
/** A due snapshot is taken once this process has run no command of any run for this long… */
const SNAPSHOT_DELAY_MS = 250;
/** …or after this long even if the run never falls idle (reports arriving back to back). */
const SNAPSHOT_MAX_WAIT_MS = 10_000;

/**
 * An attempt report, the one kind of command that is group-committed.
 *
 * @internal
 */
export type ReportCommand = Extract<
  RunCommand,
  { type: "attemptStarted" | "attemptSucceeded" | "attemptFailed" }
>;

/**
 * How one report of a group is completed and answered. `prepare` completes the command from the
 * state it is decided on (as {@link RunExecutor.execute}'s); `view` reads the caller's answer off
 * the state right after the report was decided and folded (its own attempt, not what later reports
 * of the group made of the run).
 *
 * @internal
 */
export interface ReportOptions<T> {
  prepare?: (command: ReportCommand, state: RunState) => Promise<ReportCommand> | ReportCommand;
  view: (state: RunState) => T;
}

/**
 * How every report of {@link RunExecutor.reportAll} is completed and answered: as
 * {@link ReportOptions}, one object for the whole call, so `view` is also given the report's own
 * command (as the caller sent it, before `prepare`).
 *
 * @internal
 */
export interface SharedReportOptions<T> {
  prepare?: (command: ReportCommand, state: RunState) => Promise<ReportCommand> | ReportCommand;
  view: (state: RunState, command: ReportCommand) => T;
}

/**
 * How report groups are formed (defaults {@link MAX_GROUP_SIZE} and {@link SPECULATE_AT_LEAST});
 * tests make them small so that a few racing reports form many groups.
 *
 * @internal
 */
export interface ReportGroupLimits {
  maxSize?: number;
  decideAheadAt?: number;
}

/** What one report of {@link RunExecutor.reportAll} came to: its view, or why it was refused. */
export type ReportOutcome<T> = { ok: true; view: T } | { ok: false; error: unknown };

/** Where the answer of a waiting report goes: its own caller's promise, or its batch's slot. */
interface ReportSink {
  settle(index: number, outcome: Decided, events: RecordedEvent[]): void;
}

/** One waiting report of a group and how to answer its caller. */
interface GroupItem {
  command: ReportCommand;
  options: SharedReportOptions<unknown>;
  sink: ReportSink;
  /** The report's place in its sink (0 for a single report). */
  index: number;
}

/** What deciding one item of a group gave. */
type Decided = { ok: true; from: number; to: number; view: unknown } | { ok: false; error: unknown };

/**
 * A group of reports decided while the previous group's append was in flight, on the state that
 * append would leave: used as it is when the run is at `baseVersion` once that append has
 * committed, else decided again.
 */
interface Speculation {
  /** The run's version the group was decided on (the version after the previous group). */
  baseVersion: number;
  /** The report scratch after the group (the base on which the group after it is decided). */
  scratch: RunState;
  decided: RunEvent[];
  outcomes: Decided[];
  /**
   * The group's append, when it was sent chained behind the previous group's before that one had
   * committed (see {@link SentAppend}). Its own head check judges it: it commits only on exactly
   * what the previous append stored, so once sent it is awaited, never decided again meanwhile.
   */
  sent?: SentAppend;
}

/** An append of a report group on its way: its result, and when its events are written. */
interface SentAppend {
  result: Promise<AppendResult>;
  /**
   * The positions of the events it wrote, once they are written in its still-open transaction;
   * never settles on a log whose appends cannot overlap (one connection).
   */
  written: Promise<readonly number[]>;
}

/**
 * Executes run commands: restore the run from its stream, let the machine decide, append with the
 * expected version, and on a concurrency conflict decide again on fresh state. Commands for one
 * run are queued within the process (fewer conflicts, and the cached state is never folded by two
 * callers at once); other processes are kept honest by the expected version.
 *
 * @internal
 */
export class RunExecutor {
  readonly #log: EventLog;
  readonly #clock: () => Date;
  readonly #metadata: Partial<EventMetadata>;
  readonly #cache = new Map<string, RunState>();
  readonly #queues = new Map<string, Promise<unknown>>();
  /** Reports waiting for their run's next group commit, by run. */
  readonly #groups = new Map<string, GroupItem[]>();
  /** Runs whose report groups are decided under the stream lock, until the time given (ms). */
  readonly #contendedUntil = new Map<string, number>();
  /** Commands other than report groups queued for each run's turn and not started yet. */
  readonly #commandsQueued = new Map<string, number>();
  readonly #maxConflictRetries: number;
  readonly #snapshots: RunSnapshotStore | null;
  /** The stream version of each cached state's latest snapshot (read or written); 0 for none. */
  readonly #snapshotAt = new WeakMap<RunState, number>();
  /** Snapshot writes under way (awaited by {@link RunExecutor.settle}). */
  readonly #writes = new Set<Promise<void>>();
  readonly #writeChains = new Map<string, Promise<void>>();
  /** Runs due for a snapshot: their cached state and since when. */
  readonly #due = new Map<string, { state: RunState; since: number }>();
  #timer: ReturnType<typeof setTimeout> | null = null;
  /** Callers inside {@link RunExecutor.withoutSnapshots}. */
  #holds = 0;
  /** When a command last started or ended (ms). */
  #lastActive = 0;
  readonly #maxGroupSize: number;
  readonly #decideAheadAt: number;

  /**
   * `options.maxConflictRetries` bounds how often {@link RunExecutor.execute} and
   * {@link RunExecutor.executeMany} decide again after a version conflict before they throw it
   * (default {@link MAX_CONFLICT_RETRIES}); tests lower it. Attempt reports
   * ({@link RunExecutor.report}) are not bounded by it: after a lost race they queue on the run
   * stream's lock, and a report is never refused for contention.
   *
   * With `options.snapshots`, a run not in the cache is restored from its snapshot (when one of
   * this fold version exists) plus the tail of its stream, and a run whose stream has grown enough
   * (see {@link SNAPSHOT_GROWTH}) is snapshotted in the background after the command that grew it.
   */
  constructor(
    log: EventLog,
    clock: () => Date,
    metadata: Partial<EventMetadata>,
    options: {
      maxConflictRetries?: number;
      snapshots?: RunSnapshotStore;
      reportGroups?: ReportGroupLimits;
    } = {},
  ) {
    this.#maxGroupSize = Math.max(1, options.reportGroups?.maxSize ?? MAX_GROUP_SIZE);
    this.#decideAheadAt = Math.max(1, options.reportGroups?.decideAheadAt ?? SPECULATE_AT_LEAST);
    this.#log = log;
    this.#clock = clock;
    this.#metadata = metadata;
    this.#maxConflictRetries = options.maxConflictRetries ?? MAX_CONFLICT_RETRIES;
    this.#snapshots = options.snapshots ?? null;
  }

  /**
   * Takes every due snapshot now (unless `takeDue: false`: a hurried close drops them) and resolves
   * once every snapshot write has finished (they never fail: errors are dropped). The ledger calls
   * it when it closes.
   */
  async settle(options: { takeDue?: boolean } = {}): Promise<void> {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    if (options.takeDue === false) this.#due.clear();
    else this.#takeDue(true);
    while (this.#writes.size > 0) await Promise.all([...this.#writes]);
  }

  /** The run's current state (empty state when the run does not exist). */
  load(runId: string): Promise<RunState> {
    return this.#serialCommand(runId, () => this.#load(runId));
  }

  /**
   * Decides and appends `command`. Returns the state after it and the events this call stored
   * (empty when the command was already so, e.g. a repeated report). With `context.fence` (a
   * maintenance pass's `lease.fence`) the append commits only while that lease is current;
   * otherwise it throws `LeaseLostError`, which is final: deciding again cannot bring a lease back.
   */
  execute(
    command: RunCommand,
    context: Omit<DecideContext, "now" | "metadata"> & {
      fence?: AppendFence;
      /**
       * Completes the command from the state just restored (attempt reports canonicalise their
       * url against the run's dataset), so the run is read once per decision, not once to
       * prepare and again to decide.
       */
      prepare?: (command: RunCommand, state: RunState) => Promise<RunCommand>;
    } = {},
  ): Promise<{ state: RunState; events: RecordedEvent[] }> {
    const { fence, prepare, ...decideContext } = context;
    return this.#serialCommand(command.runId, async () => {
      for (let attempt = 1; ; attempt++) {
        const state = await this.#load(command.runId);
        const prepared = prepare ? await prepare(command, state) : command;
        let decided: RunEvent[];
        try {
          decided = decideRun(state, prepared, {
            ...decideContext,
            now: this.#clock(),
            metadata: this.#metadata,
          });
        } catch (e) {
          if (state.version === 0 && isNotFoundError(e))
            await this.#refuseIfArchived(command.runId, command.type);
          throw e;
        }
        if (decided.length === 0) return { state, events: [] };
        try {
          const result = await this.#log.append(runStream(command.runId), decided, {
            expectedVersion: state.version === 0 ? "no_stream" : state.version,
            ...(fence ? { fence } : {}),
          });
          if (result.written.length !== decided.length) {
            // Some were already stored (a writer's retry raced us): re-read rather than guess.
            this.#cache.delete(command.runId);
            return { state: await this.#load(command.runId), events: result.written };
          }
          for (const e of result.written) evolveRun(state, e);
          this.#maybeSnapshot(command.runId, state);
          return { state, events: result.written };
        } catch (e) {
          this.#cache.delete(command.runId);
          if (state.version === 0 && isConcurrencyError(e))
            await this.#refuseIfArchived(command.runId, command.type);
          // Only a version conflict is worth deciding again; a lost lease (or anything else) is not.
          if (!isConcurrencyError(e) || attempt >= this.#maxConflictRetries) throw e;
          await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(50, attempt * 5)));
        }
      }
    });
  }

  /**
   * Decides several commands for ONE run in order (each on the state the previous ones leave) and
   * appends all their events in one append: the event log takes one append per transaction, and a
   * maintenance pass plans or records a batch of prefixes per append this way. All or nothing: a
   * refused command refuses the batch, and nothing is written.
   */
  executeMany(
    runId: string,
    commands: readonly RunCommand[],
    context: Omit<DecideContext, "now" | "metadata"> & { fence?: AppendFence } = {},
  ): Promise<{ state: RunState; events: RecordedEvent[] }> {
    const { fence, ...decideContext } = context;
    for (const c of commands) {
      if (c.runId !== runId) {
        throw new ValidationError("runId", `a batch for run ${runId} holds a command for run ${c.runId}`);
      }
    }
    return this.#serialCommand(runId, async () => {
      for (let attempt = 1; ; attempt++) {
        const state = await this.#load(runId);
        const scratch = cloneRunState(state);
        const now = this.#clock();
        const decided: RunEvent[] = [];
        for (const command of commands) {
          const events = decideRun(scratch, command, { ...decideContext, now, metadata: this.#metadata });
          for (const e of events) evolveRun(scratch, { type: e.type, data: e.data, recordedAt: now });
          decided.push(...events);
        }
        if (decided.length === 0) return { state, events: [] };
        try {
          const result = await this.#log.append(runStream(runId), decided, {
            expectedVersion: state.version === 0 ? "no_stream" : state.version,
            ...(fence ? { fence } : {}),
          });
          if (result.written.length !== decided.length) {
            this.#cache.delete(runId);
            return { state: await this.#load(runId), events: result.written };
          }
          for (const e of result.written) evolveRun(state, e);
          this.#maybeSnapshot(runId, state);
          return { state, events: result.written };
        } catch (e) {
          this.#cache.delete(runId);
          if (state.version === 0 && isConcurrencyError(e)) await this.#refuseIfArchived(runId, "batch");
          if (!isConcurrencyError(e) || attempt >= this.#maxConflictRetries) throw e;
          await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(50, attempt * 5)));
        }
      }
    });
  }

  /**
   * Throws when the run's stream exists but none of its events is in the hot log: the run was
   * pruned and archived, and its id is never reused (the stream keeps its version, so a start
   * would only ever conflict). Asked only on the paths where a run looked absent.
   */
  async #refuseIfArchived(runId: string, command: string): Promise<void> {
    const refusal = await this.archivedRefusal(runId, command);
    if (refusal) throw refusal;
  }

  /**
   * The refusal {@link RunExecutor.#refuseIfArchived} throws, or null when the run is not archived
   * (a run that looks absent may have been: its events are out of the hot log, its stream is not).
   */
  async archivedRefusal(runId: string, command: string): Promise<IllegalTransitionError | null> {
    const stream = runStream(runId);
    if ((await this.#log.streamVersion(stream)) === 0) return null;
    if ((await this.#log.readStream(stream, { limit: 1 })).length > 0) return null;
    return new IllegalTransitionError(
      command,
      "ARCHIVED",
      `run ${runId} was pruned and its events archived; it accepts nothing, and its id cannot start a new run (read it with \`shardledger events --stream ${runId}\`)`,
      { runId },
    );
  }

  /**
   * Decides and appends one attempt report by GROUP COMMIT: while a decision and append for the
   * run is in flight (or queued) in this process, further reports of that run wait in one group;
   * when the run's turn comes, the whole group (up to {@link MAX_GROUP_SIZE}) is decided in arrival
   * order on one scratch state, each report on the state the previous ones leave, and appended in
   * ONE append at the run's expected version. Reports are independent: one refused (a validation
   * error from `prepare`, a contradiction, a run that takes no reports) fails only its own caller.
   * On a version conflict (another process appended) the whole group is decided again on fresh
   * state. Other commands of the run (publish's steps, heartbeats, maintenance) take their turns in
   * the same per-run queue, so a group is decided either wholly before or wholly after each of
   * them.
   *
   * Resolves with the caller's view and the events stored for this report (empty when it was
   * already so, e.g. a repeated report).
   */
  report<T>(
    command: ReportCommand,
    options: ReportOptions<T>,
  ): Promise<{ view: T; events: RecordedEvent[] }> {
    return new Promise((resolve, reject) => {
      const sink: ReportSink = {
        settle: (_, outcome, events) =>
          outcome.ok ? resolve({ view: outcome.view as T, events }) : reject(outcome.error),
      };
      const shared: SharedReportOptions<T> = {
        ...(options.prepare ? { prepare: options.prepare } : {}),
        view: (state) => options.view(state),
      };
      this.#enqueue({ command, options: shared, sink, index: 0 });
    });
  }

  /**
   * Many reports at once, each exactly as {@link RunExecutor.report} would take it on its own
   * (they join their runs' groups in order, and one refused fails only its own slot), answered
   * together: one promise and one options object for the whole call instead of a promise, two
   * closures and two suspended callers per report. A batch of a thousand reports keeps every one
   * of them alive while it waits for its group, so what each costs in memory is paid again by
   * every scavenge that copies it (bench/RESULTS.md, report-throughput). Never rejects: a
   * refusal is its report's outcome.
   */
  reportAll<T>(
    commands: readonly ReportCommand[],
    options: SharedReportOptions<T>,
  ): Promise<ReportOutcome<T>[]> {
    return new Promise((resolve) => {
      const outcomes: ReportOutcome<T>[] = new Array(commands.length);
      let pending = commands.length;
      if (pending === 0) return resolve(outcomes);
      const sink: ReportSink = {
        settle: (index, outcome) => {
          // A slot is answered once; a second answer (a bug) must not end the batch early.
          if (outcomes[index] !== undefined) return;
          outcomes[index] = outcome.ok
            ? { ok: true, view: outcome.view as T }
            : { ok: false, error: outcome.error };
          if (--pending === 0) resolve(outcomes);
        },
      };
      const shared = options as SharedReportOptions<unknown>;
      for (const [index, command] of commands.entries())
        this.#enqueue({ command, options: shared, sink, index });
    });
  }

  /** Puts a report in its run's waiting group, and gives the run a turn if none is queued. */
  #enqueue(item: GroupItem): void {
    const runId = item.command.runId;
    const waiting = this.#groups.get(runId);
    if (waiting) {
      waiting.push(item);
      return;
    }
    this.#groups.set(runId, [item]);
    void this.#serial(runId, () => this.#commitGroup(runId));
  }

  /**
   * The run's turn for reports: commits its waiting reports a group (up to the bound) at a time,
   * and goes on with the reports that are waiting by then, until none are left or another command
   * of the run (publish's steps, a heartbeat, maintenance) waits for its turn. While one group's
   * append is in flight, the next group is decided on the state that append will leave (see
   * {@link Speculation}), so deciding (JavaScript) and storing (the database) overlap instead of
   * taking turns; the next append is sent only once the previous one has committed. Never throws.
   */
  async #commitGroup(runId: string): Promise<void> {
    let group = this.#take(runId);
    let speculation: Speculation | undefined;
    while (group.length > 0) {
      let next: GroupItem[] | undefined;
      const takeNext = () => {
        next = this.#commandsWaiting(runId) ? [] : this.#take(runId);
        return next;
      };
      // Taken while the append is in flight only when enough reports wait to be worth deciding
      // ahead; fewer (single reports trickling in) are left to gather, and the group taken once
      // the append has answered is larger: fewer appends, which is what single reports need.
      const takeAhead = () =>
        (this.#groups.get(runId)?.length ?? 0) >= this.#decideAheadAt ? takeNext() : [];
      // A group that lost a race gives the next group's reports back: its retry absorbs them.
      const untake = (items: readonly GroupItem[]) => {
        if (items.length > 0) this.#groups.set(runId, [...items, ...(this.#groups.get(runId) ?? [])]);
        next = undefined;
      };
      try {
        speculation = await this.#decideAndAppend(runId, group, { speculation, takeNext: takeAhead, untake });
      } catch (e) {
        // Unreachable unless a bug: no caller may be left waiting forever.
        for (const item of group) settle(item, { ok: false, error: e }, []);
        speculation = undefined;
      }
      group = next ?? takeNext();
    }
    // Reports left waiting (the turn ended for another command) get a turn of their own.
    if (this.#groups.has(runId)) void this.#serial(runId, () => this.#commitGroup(runId));
  }

  /** Takes up to {@link MAX_GROUP_SIZE} of the run's waiting reports, in arrival order. */
  #take(runId: string): GroupItem[] {
    const waiting = this.#groups.get(runId);
    if (!waiting) return [];
    const taken = waiting.splice(0, this.#maxGroupSize);
    if (waiting.length === 0) this.#groups.delete(runId);
    return taken;
  }

  /** Whether a command other than a report group waits for the run's turn. */
  #commandsWaiting(runId: string): boolean {
    return (this.#commandsQueued.get(runId) ?? 0) > 0;
  }

  /**
   * Decides `group` in arrival order on a report scratch of `base`, each report on the state the
   * previous ones leave. With `yieldEvery`, gives the event loop a turn every so many reports: a
   * speculative decision runs while an append's transaction is in flight, which needs the loop to
   * send its statements.
   */
  async #decideGroup(
    base: RunState,
    group: readonly GroupItem[],
    yieldEvery?: number,
  ): Promise<{ scratch: RunState; decided: RunEvent[]; outcomes: Decided[] }> {
    const scratch = reportScratch(base);
    const now = this.#clock();
    const decided: RunEvent[] = [];
    const outcomes: Decided[] = [];
    for (const [i, item] of group.entries()) {
      if (yieldEvery !== undefined && i > 0 && i % yieldEvery === 0) {
        await new Promise((resolve) => setImmediate(resolve));
      }
      try {
        // A `prepare` that has what it needs answers at once: awaited only when it had to wait.
        let prepared = item.options.prepare ? item.options.prepare(item.command, scratch) : item.command;
        if (prepared instanceof Promise) prepared = await prepared;
        const events = decideRun(scratch, prepared, { now, metadata: this.#metadata });
        for (const e of events) evolveRun(scratch, { type: e.type, data: e.data, recordedAt: now });
        const from = decided.length;
        decided.push(...events);
        outcomes.push({ ok: true, from, to: decided.length, view: item.options.view(scratch, item.command) });
      } catch (error) {
        outcomes.push({ ok: false, error });
      }
    }
    return { scratch, decided, outcomes };
  }

  /**
   * Decides and appends one group (see {@link RunExecutor.report}). With `options.speculation` (the
   * group decided while the previous group's append was in flight) the group is not decided again
   * when the run is still at the version it was decided on. With `options.takeNext`, the reports
   * waiting by the time this group's append is sent are taken as the next group and decided while
   * the append is in flight; that decision is returned as a speculation when this append stored
   * exactly what was decided (otherwise undefined: the next group is decided afresh).
   */
  async #decideAndAppend(
    runId: string,
    initial: readonly GroupItem[],
    options: {
      speculation?: Speculation | undefined;
      takeNext?: () => readonly GroupItem[];
      untake?: (items: readonly GroupItem[]) => void;
    } = {},
  ): Promise<Speculation | undefined> {
    const group = [...initial];
    const stream = runStream(runId);
    // A run that lost a race lately is decided under its stream's lock straight away.
    let serialised = (this.#contendedUntil.get(runId) ?? 0) > Date.now();
    let known: RunState | undefined;
    let speculation = options.speculation;
    /** Whether the group was decided again after the log held some of its events already. */
    let redecided = false;
    let ahead: Speculation | undefined;
    /** The next group's reports, taken while this group's append was in flight. */
    let next: readonly GroupItem[] = [];
    for (;;) {
      // A speculation is only ever judged against the try that made it: after a lost race the
      // group is decided again, and the next group is then decided afresh too.
      ahead = undefined;
      let state = initialRunState();
      let scratch: RunState | undefined;
      let decided: RunEvent[] = [];
      let outcomes: Decided[] = [];
      /** Reads the run through `source` and decides the group on it, in arrival order. */
      const decide = async (source: Pick<EventLogSession, "readStream">) => {
        state = await this.#loadFrom(source, runId);
        known = state;
        ({ scratch, decided, outcomes } = await this.#decideGroup(state, group));
      };
      const expectedVersion = () => (state.version === 0 ? ("no_stream" as const) : state.version);
      let written: RecordedEvent[] | null;
      try {
        if (serialised) {
          // Reports that arrived meanwhile (during the lost race) join the group. Then every
          // report's `prepare` runs once on the state at hand, outside the transaction, for what
          // it reads through the ledger's own pool (a dataset's root, cached after the first
          // read): the transaction holds a connection (on PGlite, the only one) while it waits
          // for the lock and decides, and a `prepare` reading through the pool there could wait
          // for itself. Inside, `prepare` runs again on the fresh state, served from its cache.
          this.#absorb(runId, group);
          await this.#warm(group, known ?? this.#cache.get(runId) ?? (await this.#load(runId)));
          written = await this.#log.transaction(
            async (session) => {
              await decide(session);
              if (decided.length === 0) return null;
              return (await session.append(stream, decided, { expectedVersion: expectedVersion() })).written;
            },
            { serialiseWith: stream },
          );
        } else {
          const cached = this.#cache.get(runId);
          let sent: SentAppend | undefined;
          if (speculation && cached && cached.version === speculation.baseVersion) {
            // Decided while the previous group was being stored, on exactly the state it left. If
            // another process appended since, the expected version refuses this append and the
            // group is decided again on fresh state, as any group would be.
            state = cached;
            ({ decided, outcomes, sent } = speculation);
            scratch = rebaseReportScratch(speculation.scratch, cached);
          } else if (speculation?.sent) {
            // Sent behind the previous group's append, which did not end as decided (it failed, or
            // the run was forgotten meanwhile): this one stands or falls by its own head check.
            const chained = speculation;
            const appended = speculation.sent.result;
            speculation = undefined;
            const result = await appended.catch(nothing);
            if (result && result.written.length === chained.decided.length) {
              // It committed, so the previous append had stored exactly what was decided: its
              // answers hold. No cached state is at the version it was decided on: none is folded.
              this.#cache.delete(runId);
              settleStored(group, chained.outcomes, result.written);
              return undefined;
            }
            // Nothing of it was stored (or not as decided): decide it again on the log.
            this.#cache.delete(runId);
            serialised = true;
            continue;
          } else {
            await decide(this.#log);
          }
          speculation = undefined;
          if (decided.length === 0) {
            written = null;
          } else {
            sent ??= this.#send(stream, decided, expectedVersion());
            next = options.takeNext?.() ?? [];
            if (next.length > 0 && scratch !== undefined) {
              const base = scratch;
              ahead = {
                baseVersion: state.version + decided.length,
                ...(await this.#decideGroup(base, next, 64)),
              };
              // Once this append's events are written (it holds the stream until it commits), the
              // next group's append is sent behind it: it waits on the database, not here, and
              // commits only on exactly what this one stores. A log that cannot overlap appends
              // never says "written": there the next append waits for this one to commit.
              const positions = await Promise.race([sent.written, sent.result.then(nothing, nothing)]);
              const last = positions?.at(-1);
              if (positions?.length === decided.length && last !== undefined && ahead.decided.length > 0)
                ahead.sent = this.#send(stream, ahead.decided, ahead.baseVersion, last);
            }
            written = (await sent.result).written;
          }
        }
      } catch (e) {
        if (ahead?.sent && !isConcurrencyError(e)) {
          // The next group was sent behind this append, which then failed after writing (a lost
          // connection, a failed commit): the next turn judges that append alone (see above).
          this.#cache.delete(runId);
          settleFailed(group, outcomes, e);
          return ahead;
        }
        // Nothing is chained behind a conflict (it writes nothing); were it, it must end first.
        await ahead?.sent?.result.catch(nothing);
        if (isConcurrencyError(e)) {
          options.untake?.(next);
          next = [];
          // Another writer appended to the run since we read it. The cached state is still a
          // true prefix of the stream (it is only folded after an append succeeded), so the next
          // read fetches just what is new. Decide again at once, this time (and for this run's
          // groups for a while) under the run stream's lock: the writers that beat us queue on the
          // same lock once they lose a race too, so we wait for our turn instead of spinning. A
          // serialised attempt can lose only to a writer that has not lost a race lately, and
          // every loss is such a writer's progress; so a report is never refused for contention.
          this.#contendedUntil.set(runId, Date.now() + CONTENDED_MS);
          if (this.#contendedUntil.size > MAX_CACHED_RUNS) {
            const oldest = this.#contendedUntil.keys().next().value;
            if (oldest !== undefined) this.#contendedUntil.delete(oldest);
          }
          serialised = true;
          continue;
        }
        this.#cache.delete(runId);
        if (isValidationError(e) && group.length > 1) {
          // The log refused one event of the batch (nothing was written): find whose by committing
          // each report on its own, so that only its caller fails.
          for (const item of group) await this.#decideAndAppend(runId, [item]);
          return;
        }
        // Nothing was written: every report that was to be stored fails with the append's error.
        settleFailed(group, outcomes, e);
        return;
      }
      if (written === null) {
        // A run that looks absent may have been archived: say so rather than "not found".
        if (state.version === 0 && outcomes.some((o) => !o.ok && isNotFoundError(o.error))) {
          const refusal = await this.archivedRefusal(runId, group[0]?.command.type ?? "report");
          if (refusal)
            for (const [i, o] of outcomes.entries())
              if (!o.ok && isNotFoundError(o.error)) outcomes[i] = { ok: false, error: refusal };
        }
        for (const [i, item] of group.entries()) settle(item, outcomes[i] as Decided, []);
        return;
      }
      if (written.length === decided.length) {
        for (const e of written) evolveRun(state, e);
        this.#maybeSnapshot(runId, state);
        settleStored(group, outcomes, written);
        // A group already sent is handed on whatever happened here: only its own turn may judge it.
        return ahead !== undefined &&
          (ahead.sent !== undefined ||
            (this.#cache.get(runId) === state && state.version === ahead.baseVersion))
          ? ahead
          : undefined;
      }
      // Some events were stored already (a retry raced us in another process, and the log kept
      // the stored copy, perhaps in another form: the same outcome with a url this group's report
      // lacked). The group was decided on a state the log never held, and a report of it may have
      // been refused only because of an event that was not stored. Decide the whole group again,
      // in order, on the log, under the stream's lock: its stored events are repeats now, and
      // whatever it still needs is appended. Once: a second such answer is settled as below.
      if (!redecided) {
        redecided = true;
        // Unreachable with a chained group (one is sent only when this append wrote every event).
        await ahead?.sent?.result.catch(nothing);
        options.untake?.(next);
        next = [];
        this.#cache.delete(runId);
        known = undefined;
        serialised = true;
        continue;
      }
      this.#cache.delete(runId);
      const fresh = await this.#load(runId);
      const byId = new Map(written.map((e) => [e.eventId, e]));
      for (const [i, item] of group.entries()) {
        const o = outcomes[i] as Decided;
        if (!o.ok) {
          settle(item, o, []);
          continue;
        }
        const mine = decided
          .slice(o.from, o.to)
          .flatMap((e) => byId.get(e.eventId?.toLowerCase() ?? "") ?? []);
        // Decided again on what the log holds: a report whose event another process stored first
        // in another form (the same outcome without this report's url) is refused, exactly as it
        // would have been had it arrived second; the stored copy stands. decideRun is pure.
        try {
          const prepared = item.options.prepare
            ? await item.options.prepare(item.command, fresh)
            : item.command;
          decideRun(fresh, prepared, { now: this.#clock(), metadata: this.#metadata });
        } catch (error) {
          settle(item, { ok: false, error }, []);
          continue;
        }
        settle(item, { ...o, view: item.options.view(fresh, item.command) }, mine);
      }
      return;
    }
  }

  /**
   * Sends a group's append: chained (see AppendChain), so that the next group's append can be sent
   * behind it before it commits; with `afterPosition`, itself behind the append whose last event
   * is at that position. Its result is judged when awaited; until then it must not reject unseen.
   */
  #send(
    stream: string,
    events: RunEvent[],
    expectedVersion: ExpectedVersion,
    afterPosition?: number,
  ): SentAppend {
    let onWritten: (positions: readonly number[]) => void = nothing;
    const written = new Promise<readonly number[]>((resolve) => {
      onWritten = resolve;
    });
    const result = this.#log.append(stream, events, {
      expectedVersion,
      chain: afterPosition === undefined ? { onWritten } : { afterPosition, onWritten },
    });
    result.catch(nothing);
    return { result, written };
  }

  /** Moves reports waiting for the run's next group into `group`, up to the group bound. */
  #absorb(runId: string, group: GroupItem[]): void {
    const waiting = this.#groups.get(runId);
    if (!waiting || group.length >= this.#maxGroupSize) return;
    const taken = waiting.splice(0, this.#maxGroupSize - group.length);
    group.push(...taken);
    // The turn already queued for them finds nothing left and returns.
    if (waiting.length === 0) this.#groups.delete(runId);
  }

  /** Runs every report's `prepare` on a known state, for what it caches; errors are its own. */
  async #warm(group: readonly GroupItem[], state: RunState): Promise<void> {
    for (const item of group) {
      try {
        await item.options.prepare?.(item.command, state);
      } catch {
        // Judged again, and answered, in the decision itself.
      }
    }
  }

  /** Forgets a cached run (after a prune, or when another component appended to it). */
  forget(runId: string): void {
    this.#cache.delete(runId);
  }

  #load(runId: string): Promise<RunState> {
    return this.#loadFrom(this.#log, runId);
  }

  /**
   * The run's state, caught up from the cache through `source` (the log, or a transaction). A run
   * not in the cache starts from its snapshot when read outside a transaction (a transaction holds
   * its connection, on PGlite the only one, so it reads only through itself and folds from the log).
   */
  async #loadFrom(source: Pick<EventLogSession, "readStream">, runId: string): Promise<RunState> {
    let state = this.#cache.get(runId);
    let complete = false;
    if (!state && source === this.#log && this.#snapshots) {
      // The snapshot and the stream's first events are read side by side, so a run without one
      // (every run under SNAPSHOT_MIN_EVENTS events) still costs one round trip. A snapshot longer
      // than a stream that ended in that head is not the stream's: the log wins.
      const [restored, head] = await Promise.all([
        this.#restore(runId),
        source.readStream(runStream(runId), { limit: SNAPSHOT_MIN_EVENTS }),
      ]);
      const ended = head.length < SNAPSHOT_MIN_EVENTS;
      if (restored && !(ended && restored.version > head.length)) state = restored;
      else {
        state = initialRunState();
        for (const e of head) evolveRun(state, e);
        complete = ended;
      }
    }
    state ??= initialRunState();
    if (!complete) {
      const fresh = await source.readStream(runStream(runId), { fromVersion: state.version + 1 });
      for (const e of fresh) if (e.streamVersion > state.version) evolveRun(state, e);
    }
    this.#cache.delete(runId);
    if (state.version > 0) this.#cache.set(runId, state);
    if (this.#cache.size > MAX_CACHED_RUNS) {
      const oldest = this.#cache.keys().next().value;
      if (oldest !== undefined) this.#cache.delete(oldest);
    }
    this.#maybeSnapshot(runId, state);
    return state;
  }

  /** The run's snapshot, if one of this fold version can be read and restored; else null. */
  async #restore(runId: string): Promise<RunState | null> {
    if (!this.#snapshots) return null;
    try {
      const found = await this.#snapshots.read(runId);
      if (!found || found.foldVersion !== RUN_FOLD_VERSION) return null;
      const state = restoreRunState(found.state);
      if (!state || state.version !== found.version) return null;
      this.#snapshotAt.set(state, found.version);
      return state;
    } catch {
      // A snapshot is never needed: unreadable (or a schema without the table) means the log.
      return null;
    }
  }

  /**
   * Marks `state` for a snapshot when its stream grew enough since its last snapshot. The snapshot
   * is taken later, once this process has had no command in flight for a moment (or at the latest after
   * {@link SNAPSHOT_MAX_WAIT_MS}, or at {@link RunExecutor.settle}), so that serialising and
   * writing it is never part of a command's own time (a publish, a report group); its failure is
   * dropped (the next load folds a little more). A pruned run gets none, and its old one is
   * removed (its state is not read for decisions again).
   */
  #maybeSnapshot(runId: string, state: RunState): void {
    const store = this.#snapshots;
    if (!store || state.version === 0) return;
    const last = this.#snapshotAt.get(state) ?? 0;
    if (state.status === "PRUNED") {
      if (last === -1) return;
      this.#snapshotAt.set(state, -1);
      this.#due.delete(runId);
      this.#track(runId, () => store.remove(runId));
      return;
    }
    const grown = state.version - last;
    if (grown < SNAPSHOT_MIN_EVENTS || grown < state.version * SNAPSHOT_GROWTH) return;
    if (!this.#due.has(runId)) this.#due.set(runId, { state, since: Date.now() });
    this.#arm();
  }

  #arm(): void {
    if (this.#timer !== null) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#takeDue(false);
    }, SNAPSHOT_DELAY_MS);
    this.#timer.unref?.();
  }

  /** Takes the due snapshots when the executor is idle (or they waited long enough; all when `all`). */
  #takeDue(all: boolean): void {
    const store = this.#snapshots;
    if (!store) return;
    for (const [runId, { state, since }] of this.#due) {
      if (!all && !this.#idle() && (this.#holds > 0 || Date.now() - since < SNAPSHOT_MAX_WAIT_MS)) continue;
      this.#due.delete(runId);
      // Only the cached state is known to be a prefix of the stream (it is folded after appends).
      if (this.#cache.get(runId) !== state || state.status === "PRUNED") continue;
      this.#snapshotAt.set(state, state.version);
      // The text is taken now, synchronously: the cached state changes in place later.
      const snapshot = {
        runId,
        version: state.version,
        foldVersion: RUN_FOLD_VERSION,
        state: serialiseRunState(state),
      };
      this.#track(runId, () => store.write(snapshot));
    }
    if (this.#due.size > 0) this.#arm();
  }

  /**
   * No command in flight, and none for {@link SNAPSHOT_DELAY_MS}: a publish is a series of
   * commands with object-store writes between them, and its snapshot waits until it is over.
   */
  #idle(): boolean {
    return this.#holds === 0 && this.#queues.size === 0 && Date.now() - this.#lastActive >= SNAPSHOT_DELAY_MS;
  }

  /**
   * Runs `fn` (a publish: several commands with object-store writes between them) with no
   * snapshot taken meanwhile, so that none of its time goes to serialising one; those that fell
   * due are taken once it is over and the executor is idle.
   */
  async withoutSnapshots<T>(fn: () => Promise<T>): Promise<T> {
    this.#holds++;
    try {
      return await fn();
    } finally {
      this.#holds--;
      this.#lastActive = Date.now();
    }
  }

  /** Runs a snapshot write after the run's previous one (so a removal is never overtaken). */
  #track(runId: string, write: () => Promise<void>): void {
    const previous = this.#writeChains.get(runId) ?? Promise.resolve();
    const tracked = previous.then(write).catch(() => {});
    this.#writeChains.set(runId, tracked);
    this.#writes.add(tracked);
    void tracked.finally(() => {
      this.#writes.delete(tracked);
      if (this.#writeChains.get(runId) === tracked) this.#writeChains.delete(runId);
    });
  }

  /**
   * {@link RunExecutor.#serial} for a command other than a report group: counted while it waits,
   * so that a run's stream of report groups gives it its turn (see {@link RunExecutor.#commitGroup}).
   */
  #serialCommand<T>(runId: string, fn: () => Promise<T>): Promise<T> {
    this.#commandsQueued.set(runId, (this.#commandsQueued.get(runId) ?? 0) + 1);
    return this.#serial(runId, () => {
      const left = (this.#commandsQueued.get(runId) ?? 1) - 1;
      if (left > 0) this.#commandsQueued.set(runId, left);
      else this.#commandsQueued.delete(runId);
      return fn();
    });
  }

  async #serial<T>(runId: string, fn: () => Promise<T>): Promise<T> {
    this.#lastActive = Date.now();
    const previous = this.#queues.get(runId) ?? Promise.resolve();
    const next = previous.then(fn, fn);
    const settled = next.catch(() => {});
    this.#queues.set(runId, settled);
    try {
      return await next;
    } finally {
      this.#lastActive = Date.now();
      if (this.#queues.get(runId) === settled) this.#queues.delete(runId);
    }
  }
}

function nothing(): null {
  return null;
}

function settle(item: GroupItem, outcome: Decided, events: RecordedEvent[]): void {
  item.sink.settle(item.index, outcome, events);
}

/** Answers a group whose append stored exactly what was decided: each report with its events. */
function settleStored(
  group: readonly GroupItem[],
  outcomes: readonly Decided[],
  written: RecordedEvent[],
): void {
  for (const [i, item] of group.entries()) {
    const o = outcomes[i] as Decided;
    settle(item, o, o.ok ? written.slice(o.from, o.to) : []);
  }
}

/** Answers a group of which nothing was stored: refusals stand, every other report fails with `error`. */
function settleFailed(group: readonly GroupItem[], outcomes: readonly Decided[], error: unknown): void {
  for (const [i, item] of group.entries()) {
    const o = outcomes[i] as Decided | undefined;
    settle(item, o?.ok === false ? o : { ok: false, error }, []);
  }
}
