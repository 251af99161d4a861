import type { NewEvent, RecordedEvent } from "./envelope.js";

/**
 * What an append expects of its stream: an exact version (the number of events already in it),
 * `"no_stream"` (the stream must not exist yet) or `"any"` (no check).
 *
 * @example
 * ```ts
 * const expectedVersion: ExpectedVersion = await log.streamVersion("run-r1")
 * await log.append("run-r1", [{ type: "RunHeartbeat", data: { runId: "r1" } }], { expectedVersion })
 * ```
 */
export type ExpectedVersion = number | "no_stream" | "any";

/**
 * A fencing token: the maintenance lease a write is made under. An append that carries one
 * commits only while `epoch` is still the dataset's stored lease epoch; otherwise it throws a
 * `LeaseLostError` and writes nothing. A pass gets it from its lease (`lease.fence`).
 *
 * @example
 * ```ts
 * await log.append("run-r1", events, { expectedVersion: 3, fence: { datasetId: "sales", epoch: 7 } })
 * ```
 */
export interface AppendFence {
  readonly datasetId: string;
  readonly epoch: number;
}

/**
 * Options of an append: the stream version it expects and, for a write made by a maintenance
 * pass, the fence it is made under.
 *
 * @example
 * ```ts
 * const options: AppendOptions = { expectedVersion: "no_stream", fence: { datasetId: "sales", epoch: 7 } }
 * ```
 */
export interface AppendOptions {
  expectedVersion: ExpectedVersion;
  fence?: AppendFence;
  /** Chains the append behind an earlier append of the stream that may not have committed yet. */
  chain?: AppendChain;
}

/**
 * An append sent behind an earlier append of the same stream before that one has committed: how a
 * writer keeps the database busy with one append while it sends the next, instead of waiting for
 * each commit (the report groups of a run, src/ledger/run-executor.ts).
 *
 * Every append sent with `chain` waits, on the database, for the chained appends of its stream
 * that were sent before it to end, and holds the stream until it ends itself. With `afterPosition`
 * it also commits only if the stream's event at its (exact) `expectedVersion` is the event stored
 * at that global position: the last event of the append it was chained behind, so it commits only
 * on exactly what that append stored — an expected version alone would also be met by another
 * writer's events of the same count, had that append rolled back. Otherwise it throws a
 * `ConcurrencyError` and writes nothing, as for any version conflict.
 *
 * `onWritten` is called at most once, with the positions of the events this append wrote, once
 * they are written in its still-open transaction, and only by a log that can take a second append
 * of the stream meanwhile (never by one with a single connection, where a chained append would
 * only wait for this one in the process): an append sent then with `afterPosition` set to the last
 * of those positions queues on the database behind this one.
 *
 * @example
 * ```ts
 * const heartbeat = { type: "RunHeartbeat", data: { runId: "r1" } }
 * await log.append("run-r1", [heartbeat], {
 *   expectedVersion: 3,
 *   // Sent while the first append commits: it waits on the server, then stores version 5.
 *   chain: { onWritten: (positions) => void log.append("run-r1", [heartbeat], {
 *     expectedVersion: 4, chain: { afterPosition: positions[0] } }) },
 * })
 * ```
 */
export interface AppendChain {
  afterPosition?: number;
  onWritten?: (positions: readonly number[]) => void;
}

/**
 * The result of an append. `positions[i]` is the global position of the i-th event given, whether
 * it was written now or already stored (idempotent retry); `written` holds the events this call
 * stored, `duplicates` how many were already there.
 *
 * @example
 * ```ts
 * const { nextExpectedVersion } = await log.append("run-r1", [{ type: "RunHeartbeat", data: { runId: "r1" } }], { expectedVersion: 0 })
 * ```
 */
export interface AppendResult {
  streamId: string;
  nextExpectedVersion: number;
  positions: number[];
  written: RecordedEvent[];
  duplicates: number;
}

/**
 * Options of {@link EventLog.readAll}. `after` is the checkpoint: the global position of the last
 * event the reader has seen (0 to start at the beginning).
 *
 * @example
 * ```ts
 * let after = 0
 * for (let page = await log.readAll({ after, limit: 500 }); page.length > 0; page = await log.readAll({ after, limit: 500 })) {
 *   after = page.at(-1)!.globalPosition
 * }
 * ```
 */
export interface ReadAllOptions {
  after?: number;
  limit?: number;
}

/**
 * Options of {@link EventLog.readStream}: events with `streamVersion >= fromVersion` (default 1).
 *
 * @example
 * ```ts
 * const options: ReadStreamOptions = { fromVersion: 3, limit: 100 }
 * const later = await log.readStream("run-r1", options)
 * ```
 */
export interface ReadStreamOptions {
  fromVersion?: number;
  limit?: number;
}

/**
 * Options of {@link EventLog.transaction}. With `serialiseWith` (a stream id) the transaction
 * first takes a lock keyed by that stream, held until it ends: transactions serialised with one
 * stream run one after another, queued by the database in arrival order, while appends that do not
 * ask for it are unaffected (they still meet the expected-version check). A writer that lost a
 * version conflict uses it so that deciding again cannot lose to the same writers forever.
 *
 * @example
 * ```ts
 * await log.transaction(async (session) => {
 *   const version = await session.streamVersion("run-r1")
 *   await session.append("run-r1", [{ type: "RunHeartbeat", data: { runId: "r1" } }], { expectedVersion: version })
 * }, { serialiseWith: "run-r1" })
 * ```
 */
export interface TransactionOptions {
  serialiseWith?: string;
}

/**
 * Operations available inside one log transaction. Everything done through it commits or rolls
 * back together, including the inline projections of its append. `append` may be called once per
 * transaction (see {@link EventLog.transaction}).
 *
 * @example
 * ```ts
 * await log.transaction(async (session: EventLogSession) => {
 *   const version = await session.streamVersion("run-r1")
 *   await session.append("run-r1", [{ type: "RunHeartbeat", data: { runId: "r1" } }], { expectedVersion: version })
 * })
 * ```
 */
export interface EventLogSession {
  /**
   * Appends `events` to `streamId` if the stream is at `expectedVersion` (and, with a `fence`,
   * if the fence's lease epoch is still current); otherwise throws and writes nothing.
   */
  append(streamId: string, events: readonly NewEvent[], options: AppendOptions): Promise<AppendResult>;
  readStream(streamId: string, options?: ReadStreamOptions): Promise<RecordedEvent[]>;
  /** The current version of a stream (0 when it does not exist). */
  streamVersion(streamId: string): Promise<number>;
}

/**
 * The append-only event log the domain writes to. Implementations: PostgreSQL and PGlite
 * (`src/adapters/postgres`).
 *
 * @example
 * ```ts
 * await log.append("run-r1", [{ type: "RunStarted", data: { runId: "r1", datasetId: "d", numShards: 2 } }], {
 *   expectedVersion: "no_stream",
 * })
 * const all = await log.readAll({ after: 0, limit: 100 })
 * ```
 */
export interface EventLog extends EventLogSession {
  /**
   * Events in global order after the checkpoint. Never skips: once a reader has seen position P it
   * will never later find a committed event below P.
   */
  readAll(options?: ReadAllOptions): Promise<RecordedEvent[]>;
  /**
   * Runs `fn` in one transaction; its append, the append's inline projections and everything else
   * done through the session commit together. The session may append once: a second append
   * throws `OneAppendPerTransactionError`, so put all of the events in one append.
   */
  transaction<T>(fn: (session: EventLogSession) => Promise<T>, options?: TransactionOptions): Promise<T>;
}
