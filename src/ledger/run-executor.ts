import { isConcurrencyError } from "../errors.js";
import type { EventMetadata, RecordedEvent } from "../events/envelope.js";
import type { AppendFence, EventLog } from "../events/event-log.js";
import { runStream } from "../events/streams.js";
import { type DecideContext, decideRun, type RunCommand } from "../machines/run-commands.js";
import { evolveRun, initialRunState, type RunState } from "../machines/run-state.js";

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
        const decided = decideRun(state, prepared, {
          ...decideContext,
          now: this.#clock(),
          metadata: this.#metadata,
        });
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
          // Only a version conflict is worth deciding again; a lost lease (or anything else) is not.
          if (!isConcurrencyError(e) || attempt >= MAX_CONFLICT_RETRIES) throw e;
          await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(50, attempt * 5)));
        }
      }
    });
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
