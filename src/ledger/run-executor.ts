import { IllegalTransitionError, isConcurrencyError, isNotFoundError, ValidationError } from "../errors.js";
import type { EventMetadata, RecordedEvent } from "../events/envelope.js";
import type { AppendFence, EventLog } from "../events/event-log.js";
import { runStream } from "../events/streams.js";
import { type DecideContext, decideRun, type RunCommand, type RunEvent } from "../machines/run-commands.js";
import { cloneRunState, evolveRun, initialRunState, type RunState } from "../machines/run-state.js";

const MAX_CACHED_RUNS = 256;
const MAX_CONFLICT_RETRIES = 50;

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

  constructor(log: EventLog, clock: () => Date, metadata: Partial<EventMetadata>) {
    this.#log = log;
    this.#clock = clock;
    this.#metadata = metadata;
  }

  /** The run's current state (empty state when the run does not exist). */
  load(runId: string): Promise<RunState> {
    return this.#serial(runId, () => this.#load(runId));
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
    return this.#serial(command.runId, async () => {
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
          return { state, events: result.written };
        } catch (e) {
          this.#cache.delete(command.runId);
          if (state.version === 0 && isConcurrencyError(e))
            await this.#refuseIfArchived(command.runId, command.type);
          // Only a version conflict is worth deciding again; a lost lease (or anything else) is not.
          if (!isConcurrencyError(e) || attempt >= MAX_CONFLICT_RETRIES) throw e;
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
    return this.#serial(runId, async () => {
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
          return { state, events: result.written };
        } catch (e) {
          this.#cache.delete(runId);
          if (state.version === 0 && isConcurrencyError(e)) await this.#refuseIfArchived(runId, "batch");
          if (!isConcurrencyError(e) || attempt >= MAX_CONFLICT_RETRIES) throw e;
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
    const stream = runStream(runId);
    if ((await this.#log.streamVersion(stream)) === 0) return;
    if ((await this.#log.readStream(stream, { limit: 1 })).length > 0) return;
    throw new IllegalTransitionError(
      command,
      "ARCHIVED",
      `run ${runId} was pruned and its events archived; it accepts nothing, and its id cannot start a new run (read it with \`shardledger events --stream ${runId}\`)`,
      { runId },
    );
  }

  /** Forgets a cached run (after a prune, or when another component appended to it). */
  forget(runId: string): void {
    this.#cache.delete(runId);
  }

  async #load(runId: string): Promise<RunState> {
    let state = this.#cache.get(runId);
    if (!state) state = initialRunState();
    const fresh = await this.#log.readStream(runStream(runId), { fromVersion: state.version + 1 });
    for (const e of fresh) if (e.streamVersion > state.version) evolveRun(state, e);
    this.#cache.delete(runId);
    if (state.version > 0) this.#cache.set(runId, state);
    if (this.#cache.size > MAX_CACHED_RUNS) {
      const oldest = this.#cache.keys().next().value;
      if (oldest !== undefined) this.#cache.delete(oldest);
    }
    return state;
  }

  async #serial<T>(runId: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#queues.get(runId) ?? Promise.resolve();
    const next = previous.then(fn, fn);
    const settled = next.catch(() => {});
    this.#queues.set(runId, settled);
    try {
      return await next;
    } finally {
      if (this.#queues.get(runId) === settled) this.#queues.delete(runId);
    }
  }
}
