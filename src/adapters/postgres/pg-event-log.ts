import { randomUUID } from "node:crypto";
import { CompiledQuery, sql } from "kysely";
import {
  ConcurrencyError,
  LeaseLostError,
  OneAppendPerTransactionError,
  ValidationError,
} from "../../errors.js";
import { isBuilt } from "../../events/built-events.js";
import {
  type EventMetadata,
  eventMetadataInputSchema,
  type NewEvent,
  normaliseMetadata,
  type RecordedEvent,
} from "../../events/envelope.js";
import { defaultCatalogue, type EventCatalogue } from "../../events/event-catalogue.js";
import type {
  AppendChain,
  AppendFence,
  AppendOptions,
  AppendResult,
  EventLog,
  EventLogSession,
  ExpectedVersion,
  ReadAllOptions,
  ReadStreamOptions,
  TransactionOptions,
} from "../../events/event-log.js";
import { advisoryKey } from "./advisory-keys.js";
import { arrayLiteral } from "./array-literal.js";
import type { LedgerDb } from "./database.js";
import type { InlineProjection } from "./inline-projection.js";
import { type ConnectPipelined, PipelinedTransaction } from "./pipelined-transaction.js";
import { preparedStatement } from "./prepared-statements.js";
import { ReadHorizon } from "./read-horizon.js";

/**
 * Options of {@link createPgEventLog}.
 *
 * @example
 * ```ts
 * const options: PgEventLogOptions = { db: database.db, schema: database.schema, clock: () => new Date() }
 * const log = createPgEventLog(options)
 * ```
 */
export interface PgEventLogOptions {
  db: LedgerDb;
  schema: string;
  catalogue?: EventCatalogue;
  /** Handlers run inside every append's transaction, in order. */
  projections?: readonly InlineProjection[];
  /** The clock that stamps `recordedAt`; tests control it. */
  clock?: () => Date;
  /**
   * How long a `readAll` that has caught up waits for the appends in flight before it answers up
   * to the horizon settled before (default 2,000 ms; see docs/event-log.md).
   */
  readAllWaitMs?: number;
  /**
   * Whether two appends of one stream can be in flight at once: a pool of several connections to
   * a server, not PGlite's one connection. Only then does a chained append's `onWritten` fire (see
   * {@link AppendChain}); default false.
   */
  overlappingAppends?: boolean;
  /**
   * Checks a connection out of the ledger's own pg pool for a pipelined transaction: an append
   * with inline projections then sends its statement, the projections' reads, and later their
   * writes with COMMIT, without waiting for each answer (see PipelinedTransaction). Only for pg
   * (PGlite has no round trips to save) and only when every projection can send ahead.
   */
  connectPipelined?: ConnectPipelined;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_READ = 10_000;

interface PreparedEvent {
  eventId: string;
  /** The caller chose the id (an idempotency key that may already be stored). */
  callerId: boolean;
  type: string;
  schemaVersion: number;
  data: unknown;
  metadata: ReturnType<typeof normaliseMetadata>;
}

/** One append through `append_events`, as the paths that call it (kysely or pipelined) share it. */
interface AppendRequest {
  streamId: string;
  prepared: PreparedEvent[];
  expected: ExpectedVersion;
  fence?: AppendFence | undefined;
  chain?: AppendChain | undefined;
}

/** The row `append_events` answers (migration 0012). */
interface AppendRow {
  outcome: "ok" | "conflict" | "lease_lost";
  positions: (string | number | bigint)[] | null;
  next_version: string | number | bigint;
  known_ids: string[] | null;
  known_positions: (string | number | bigint)[] | null;
  lease_epoch: string | number | bigint | null;
  lease_holder: string | null;
}

interface EventRow {
  global_position: string | number;
  event_id: string;
  stream_id: string;
  stream_version: string | number;
  type: string;
  schema_version: number;
  data: unknown;
  metadata: unknown;
  recorded_at: Date | string;
}

const METADATA_KEYS = new Set(["correlationId", "causationId", "actor"]);

/**
 * The normalised metadata of `m` when it is plainly valid — absent, or an object holding only the
 * three known keys, each null, undefined or a string of at most 256 characters, which is exactly
 * what `eventMetadataInputSchema` accepts — else null, and the schema judges it and names what is
 * wrong. Every event of a group of reports carries metadata; this check costs a fraction of a parse.
 */
function plainMetadata(m: unknown): EventMetadata | null {
  if (m === undefined) return normaliseMetadata(undefined);
  if (m === null || typeof m !== "object" || Object.getPrototypeOf(m) !== Object.prototype) return null;
  for (const [key, value] of Object.entries(m)) {
    if (!METADATA_KEYS.has(key)) return null;
    if (value !== null && value !== undefined && (typeof value !== "string" || value.length > 256))
      return null;
  }
  return normaliseMetadata(m as Partial<EventMetadata>);
}

/** Metadata judged by its schema (what {@link plainMetadata} did not pass): normalised, or a ValidationError naming the field. */
function parsedMetadata(type: string, m: unknown): EventMetadata {
  const meta = eventMetadataInputSchema.safeParse(m ?? {});
  if (!meta.success) {
    const issue = meta.error.issues[0];
    throw new ValidationError(
      `${type}.metadata${issue?.path.length ? `.${issue.path.join(".")}` : ""}`,
      issue?.message ?? "invalid",
    );
  }
  return normaliseMetadata(meta.data);
}

/** A Postgres error surfaced by pg or PGlite. */
const pgCode = (e: unknown): string | undefined => (e as { code?: string } | null)?.code;
const pgConstraint = (e: unknown): string | undefined => (e as { constraint?: string } | null)?.constraint;
const isUniqueViolation = (e: unknown, constraintSuffix: string) =>
  pgCode(e) === "23505" &&
  (pgConstraint(e)?.endsWith(constraintSuffix) ?? String((e as Error).message).includes(constraintSuffix));

/**
 * The transactions a session has appended in, shared by every log and session so that two
 * sessions over one transaction are caught too. One append per transaction is the API's rule
 * (docs/event-log.md); since migration 0012 `readAll` no longer depends on it.
 */
const appendedIn = new WeakSet<LedgerDb>();

/** The database's refusal of a second append in one transaction (append_events). */
const isSecondReservation = (e: unknown) =>
  pgCode(e) === "P0001" && String((e as Error | null)?.message).includes("may append to the log once");

/**
 * The event log on PostgreSQL or PGlite (one implementation over kysely).
 *
 * @example
 * ```ts
 * const database = await openDatabase("pglite:memory")
 * await migrateToLatest(database.db, database.schema)
 * const log = createPgEventLog({ db: database.db, schema: database.schema })
 * await log.append("run-r1", [{ type: "RunHeartbeat", data: { runId: "r1" } }], { expectedVersion: "any" })
 * ```
 *
 * @internal the concrete log, for the ledger and the tests; the package exports
 * `createPgEventLog` typed as the `EventLog` port (src/index.ts), since this class is not public.
 */
export function createPgEventLog(options: PgEventLogOptions): PgEventLog {
  return new PgEventLog(options);
}

/** @internal use {@link createPgEventLog}. */
export class PgEventLog implements EventLog {
  readonly #db: LedgerDb;
  readonly schema: string;
  readonly #catalogue: EventCatalogue;
  readonly #projections: readonly InlineProjection[];
  readonly #clock: () => Date;
  readonly #appendSql: string;
  /** `append_events_chained` (migration 0013): the same call behind the stream's lock and head. */
  readonly #chainedSql: string;
  readonly #overlapping: boolean;
  /** The one-statement appends, by expected version and for one event or several (see {@link oneStatementAppend}). */
  readonly #statementSql: Record<`${"any" | "no_stream" | "exact"}/${"one" | "many"}`, string>;
  readonly #horizon: ReadHorizon;
  readonly #connectPipelined: ConnectPipelined | undefined;

  constructor(options: PgEventLogOptions) {
    this.#db = options.db;
    this.schema = options.schema;
    this.#catalogue = options.catalogue ?? defaultCatalogue;
    this.#projections = options.projections ?? [];
    this.#clock = options.clock ?? (() => new Date());
    const fn = `"${this.schema.replaceAll('"', '""')}".append_events`;
    const call = (name: string, chained: boolean) =>
      preparedStatement(`SELECT outcome, positions, next_version, known_ids::text[] AS known_ids,
      known_positions, lease_epoch, lease_holder
      FROM ${name}(${chained ? "$12::bigint, $13::bigint, " : ""}$1::text, $2::bigint, $3::uuid[], $4::uuid[],
        $5::text[], $6::integer[], ${jsonElements("$7")}, ${jsonElements("$8")}, $9::timestamptz, $10::text, $11::bigint)`);
    this.#appendSql = call(fn, false);
    this.#chainedSql = call(`${fn}_chained`, true);
    this.#overlapping = options.overlappingAppends ?? false;
    this.#connectPipelined =
      this.#projections.length > 0 && this.#projections.every((p) => p.ahead !== undefined)
        ? options.connectPipelined
        : undefined;
    const statement = (kind: "any" | "no_stream" | "exact", count: "one" | "many") =>
      preparedStatement(oneStatementAppend(this.schema, kind, count));
    this.#statementSql = {
      "any/one": statement("any", "one"),
      "any/many": statement("any", "many"),
      "no_stream/one": statement("no_stream", "one"),
      "no_stream/many": statement("no_stream", "many"),
      "exact/one": statement("exact", "one"),
      "exact/many": statement("exact", "many"),
    };
    this.#horizon = new ReadHorizon(this.schema, options.readAllWaitMs);
  }

  /** The kysely instance (for queries of projection tables). @internal */
  get db(): LedgerDb {
    return this.#db;
  }

  /** The catalogue used to validate and upcast. */
  get catalogue(): EventCatalogue {
    return this.#catalogue;
  }

  async append(streamId: string, events: readonly NewEvent[], options: AppendOptions): Promise<AppendResult> {
    // A log opened on a transaction appends in it: the one-append rule of that transaction holds.
    if (this.#db.isTransaction) return this.session(this.#db).append(streamId, events, options);
    const prepared = this.#prepare(streamId, events, options.expectedVersion, options.fence, options.chain);
    // Without inline projections the append is one statement in autocommit (one round trip): a
    // plain INSERT … SELECT when there is nothing to look up or fence, else append_events. With
    // projections, the function and the projections share one transaction.
    const chain = this.#chain(options.chain);
    const connect = this.#connectPipelined;
    const request: AppendRequest = {
      streamId,
      prepared,
      expected: options.expectedVersion,
      fence: options.fence,
      chain,
    };
    const once = () =>
      this.#projections.length === 0
        ? options.fence === undefined && chain === undefined && prepared.every((p) => !p.callerId)
          ? this.#appendInOneStatement(streamId, prepared, options.expectedVersion)
          : this.#append(this.#db, request)
        : connect
          ? this.#appendPipelined(connect, request)
          : this.#db.transaction().execute((trx) => this.#append(trx, request));
    // A concurrent writer may store the same eventId or create the same stream between our checks
    // and our insert; the retry then sees it and either returns the stored positions or reports a
    // real conflict. A lost lease is final and is never retried.
    for (let attempt = 1; ; attempt++) {
      try {
        return await once();
      } catch (e) {
        const retriable = e instanceof ConcurrencyError || isUniqueViolation(e, "event_id_key");
        if (!retriable || attempt >= 3)
          throw e instanceof ConcurrencyError || !retriable
            ? e
            : this.#conflict(streamId, options.expectedVersion, e);
      }
    }
  }

  async readStream(streamId: string, options: ReadStreamOptions = {}): Promise<RecordedEvent[]> {
    return this.#readStream(this.#db, streamId, options);
  }

  async streamVersion(streamId: string): Promise<number> {
    return this.#streamVersion(this.#db, streamId);
  }

  async readAll(options: ReadAllOptions = {}): Promise<RecordedEvent[]> {
    const after = options.after ?? 0;
    const limit = Math.min(Math.max(options.limit ?? 1000, 1), MAX_READ);
    if (!Number.isSafeInteger(after) || after < 0)
      throw new ValidationError("after", "must be a non-negative integer");
    // Up to a horizon below which no append is in flight (migration 0012). A page of a backlog
    // reads up to the horizon this log has settled already; a page that reaches it (positions have
    // holes, so "reaches" means "is not full") asks for a new one and reads on from there.
    const known = this.#horizon.known;
    const rows = after < known ? await this.#readRange(after, known, limit) : [];
    if (rows.length < limit) {
      const from = Math.max(after, known);
      const newer = await this.#horizon.settled(this.#db);
      if (newer > from) rows.push(...(await this.#readRange(from, newer, limit - rows.length)));
    }
    return rows.map((r) => this.#toRecorded(r));
  }

  /** The events at positions in (`after`, `upTo`], in position order, at most `limit`. */
  async #readRange(after: number, upTo: number, limit: number): Promise<EventRow[]> {
    const { rows } = await sql<EventRow>`
      SELECT global_position, event_id, stream_id, stream_version, type, schema_version, data, metadata, recorded_at
      FROM ${sql.id(this.schema, "events")}
      WHERE global_position > ${after} AND global_position <= ${upTo}
      ORDER BY global_position
      LIMIT ${limit}`.execute(this.#db);
    return rows;
  }

  /**
   * A position up to which every event that will ever exist is committed and visible to any
   * snapshot taken from now on: what a replay reads in one snapshot and then continues from under
   * a lock. Waits up to `maxWaitMs` for the appends in flight; 0 (or an older horizon) when they
   * do not end in time. @internal the replay's.
   */
  settledHorizon(options: { maxWaitMs?: number } = {}): Promise<number> {
    return this.#horizon.settled(this.#db, options);
  }

  /**
   * Reads every event visible to `db`'s snapshot after `after`, without a horizon. Only for a
   * caller that holds one snapshot for its whole read (a REPEATABLE READ transaction, or a lock that
   * excludes writers), such as audit and rebuild: there "visible" is exactly what the projections
   * in the same snapshot reflect. With `upTo` (a {@link settledHorizon} taken before the snapshot)
   * it stops there, so the last position read is a checkpoint that no in-flight event lies below.
   * @internal
   */
  async readVisible(
    db: LedgerDb,
    after: number,
    limit: number,
    options: { upTo?: number | undefined } = {},
  ): Promise<RecordedEvent[]> {
    const bound = upToBound(options.upTo);
    const { rows } = await sql<EventRow>`
      SELECT global_position, event_id, stream_id, stream_version, type, schema_version, data, metadata, recorded_at
      FROM ${sql.id(this.schema, "events")}
      WHERE global_position > ${after} ${bound}
      ORDER BY global_position
      LIMIT ${limit}`.execute(db);
    return rows.map((r) => this.#toRecorded(r));
  }

  /**
   * One page of the log for a replay, with only what the fold reads of each event (type, data
   * upcast to the current version, `recordedAt`) and its position: a replay reads millions of
   * events, and the columns it does not need (ids, stream, metadata) cost a third of the reading.
   * `recordedAt` comes as epoch milliseconds, the Date that parsing the timestamp would give.
   * Same rows as {@link readVisible}, except that an event naming a run of `skip.prunedAt` before
   * that position, of a type not in `skip.keepTypes`, is counted but sent without its data and not
   * returned. Answers the events kept, how many were read and the last position read.
   *
   * @internal the replay's (src/adapters/postgres/rebuild.ts).
   */
  async readFoldPage(
    db: LedgerDb,
    after: number,
    limit: number,
    options: {
      upTo?: number | undefined;
      skip?: { prunedAt: ReadonlyMap<string, number>; keepTypes: readonly string[] } | undefined;
    } = {},
  ): Promise<{
    events: Pick<RecordedEvent, "globalPosition" | "type" | "data" | "recordedAt">[];
    read: number;
    position: number;
  }> {
    const bound = upToBound(options.upTo);
    const page = sql`
      SELECT global_position, type, schema_version, data,
        floor(extract(epoch FROM recorded_at) * 1000)::float8 AS recorded_ms
      FROM ${sql.id(this.schema, "events")}
      WHERE global_position > ${after} ${bound}
      ORDER BY global_position
      LIMIT ${limit}`;
    // Only the prunes still ahead can skip anything in this page and after.
    const runs: string[] = [];
    const ats: number[] = [];
    for (const [runId, at] of options.skip?.prunedAt ?? []) {
      if (at <= after) continue;
      runs.push(runId);
      ats.push(at);
    }
    // The data as text, parsed here; none at all for an event skipped.
    const { rows } = await sql<{
      global_position: number | string;
      type: string;
      schema_version: number;
      data: string | null;
      recorded_ms: number | string;
    }>`${
      runs.length === 0
        ? sql`SELECT global_position, type, schema_version, data::text AS data, recorded_ms FROM (${page}) e`
        : sql`
      SELECT e.global_position, e.type, e.schema_version, e.recorded_ms,
        CASE WHEN e.global_position < s.at AND NOT (e.type = ANY(${options.skip?.keepTypes ?? []}::text[]))
          THEN NULL ELSE e.data::text END AS data
      FROM (${page}) e
      LEFT JOIN unnest(${runs}::text[], ${ats}::bigint[]) AS s(run_id, at) ON s.run_id = e.data->>'runId'
      ORDER BY e.global_position`
    }`.execute(db);
    const events: Pick<RecordedEvent, "globalPosition" | "type" | "data" | "recordedAt">[] = [];
    for (const r of rows) {
      if (r.data === null) continue;
      events.push({
        globalPosition: Number(r.global_position),
        type: r.type,
        data: this.#catalogue.upcast(r.type, r.schema_version, JSON.parse(r.data)).data,
        recordedAt: new Date(Number(r.recorded_ms)),
      });
    }
    const last = rows.at(-1);
    return { events, read: rows.length, position: last ? Number(last.global_position) : after };
  }

  /**
   * Where each run pruned after `after` was first pruned (the position of its first `Pruned`), in
   * the snapshot a replay reads: every event of the run before it can be skipped by a replay
   * whose fold lets go of the run at its prune anyway. Reads the `Pruned` events by their
   * partial index.
   *
   * @internal the replay's (src/adapters/postgres/rebuild.ts).
   */
  async prunePositions(
    db: LedgerDb,
    after: number,
    options: { upTo?: number | undefined } = {},
  ): Promise<Map<string, number>> {
    const bound = upToBound(options.upTo);
    const { rows } = await sql<{ run_id: string; at: number | string }>`
      SELECT data->>'runId' AS run_id, min(global_position) AS at
      FROM ${sql.id(this.schema, "events")}
      WHERE type = 'Pruned' AND data->>'runId' IS NOT NULL AND global_position > ${after} ${bound}
      GROUP BY 1`.execute(db);
    return new Map(rows.map((r) => [r.run_id, Number(r.at)]));
  }

  async transaction<T>(
    fn: (session: EventLogSession) => Promise<T>,
    options: TransactionOptions = {},
  ): Promise<T> {
    const { serialiseWith } = options;
    if (serialiseWith !== undefined && (typeof serialiseWith !== "string" || serialiseWith.length === 0)) {
      throw new ValidationError("serialiseWith", "must be a non-empty stream id");
    }
    return this.#db.transaction().execute(async (trx) => {
      if (serialiseWith !== undefined) {
        // A transaction-scoped advisory lock: it assigns no transaction id (the append must still
        // be the transaction's first write), is released by COMMIT or ROLLBACK whatever happens,
        // and its waiters are granted it in arrival order.
        await sql`SELECT pg_advisory_xact_lock(${this.#streamLock(serialiseWith)}::bigint)`.execute(trx);
      }
      return fn(this.session(trx));
    });
  }

  /**
   * A session bound to an open kysely transaction. Its `append` may be called once per
   * transaction (whatever became of the first call); a second call is refused before it touches
   * the database. @internal
   */
  session(trx: LedgerDb): EventLogSession {
    return {
      append: async (streamId, events, options) => {
        if (appendedIn.has(trx)) throw new OneAppendPerTransactionError(streamId);
        appendedIn.add(trx);
        return this.#append(trx, {
          streamId,
          prepared: this.#prepare(streamId, events, options.expectedVersion, options.fence, options.chain),
          expected: options.expectedVersion,
          fence: options.fence,
          chain: this.#chain(options.chain),
        });
      },
      readStream: (streamId, options) => this.#readStream(trx, streamId, options ?? {}),
      streamVersion: (streamId) => this.#streamVersion(trx, streamId),
    };
  }

  /**
   * Validates everything before any database access, so invalid input writes nothing. Event data
   * the library's event builder has just validated (src/events/built-events.ts) is not parsed a
   * second time.
   */
  #prepare(
    streamId: string,
    events: readonly NewEvent[],
    expected: ExpectedVersion,
    fence?: AppendFence,
    chain?: AppendChain,
  ): PreparedEvent[] {
    if (chain?.afterPosition !== undefined) {
      if (!Number.isSafeInteger(chain.afterPosition) || chain.afterPosition < 1)
        throw new ValidationError("chain.afterPosition", "must be a positive integer (a global position)");
      if (typeof expected !== "number" || expected < 1)
        throw new ValidationError(
          "expectedVersion",
          "must be the exact version of the event at chain.afterPosition",
        );
    }
    if (fence !== undefined) {
      if (typeof fence.datasetId !== "string" || fence.datasetId.length === 0)
        throw new ValidationError("fence.datasetId", "must be a non-empty string");
      if (!Number.isSafeInteger(fence.epoch) || fence.epoch < 1)
        throw new ValidationError("fence.epoch", "must be a positive integer");
    }
    if (typeof streamId !== "string" || streamId.length === 0 || streamId.length > 512) {
      throw new ValidationError("streamId", "must be a non-empty string of at most 512 characters");
    }
    if (
      !(expected === "any" || expected === "no_stream" || (Number.isSafeInteger(expected) && expected >= 0))
    ) {
      throw new ValidationError("expectedVersion", `must be a non-negative integer, "no_stream" or "any"`);
    }
    return events.map((e, i) => {
      const eventId = e.eventId ?? randomUUID();
      if (!UUID.test(eventId)) throw new ValidationError(`events[${i}].eventId`, "must be a UUID");
      // Built by the library's own event builder from data it validated against this catalogue:
      // not parsed again. Every other event (any other writer of the port) is validated here.
      const { schemaVersion, data } = isBuilt(e, this.#catalogue)
        ? { schemaVersion: this.#catalogue.currentVersion(e.type), data: e.data }
        : this.#catalogue.validate(e.type, e.data, e.schemaVersion);
      return {
        eventId: eventId.toLowerCase(),
        callerId: e.eventId !== undefined,
        type: e.type,
        schemaVersion,
        data,
        metadata: plainMetadata(e.metadata) ?? parsedMetadata(e.type, e.metadata),
      };
    });
  }

  /**
   * One call of `append_events` (migration 0008) on `db`, which is either the pool (autocommit:
   * the call is the whole transaction) or an open transaction; then the inline projections, in the
   * same transaction. The function does the lookup of stored ids, the reservation, the fence and
   * the version check and insert; see `append-function.ts`.
   */
  async #append(db: LedgerDb, request: AppendRequest): Promise<AppendResult> {
    const call = this.#appendCall(request);
    const { rows } = await db.executeQuery<AppendRow>(call.query).catch((e: unknown) => {
      throw isSecondReservation(e) ? new OneAppendPerTransactionError(request.streamId, { cause: e }) : e;
    });
    const stored = this.#stored(rows[0], request, call);
    if (stored.written.length > 0) {
      for (const projection of this.#projections) await projection.apply(db, stored.written, this.schema);
    }
    return stored;
  }

  /**
   * {@link #append} in a pipelined transaction of its own: BEGIN, the append's call and every
   * projection's reads go out together (the reads depend only on what the events name, so they
   * are sent for all of them, whether or not the log holds some already); once they answer, the
   * projections fold what was written and their writes go out with COMMIT. The same statements in
   * the same order as {@link #append} in a kysely transaction, in two round trips instead of one
   * per statement.
   */
  async #appendPipelined(connect: ConnectPipelined, request: AppendRequest): Promise<AppendResult> {
    const tx = await PipelinedTransaction.begin(connect);
    try {
      const call = this.#appendCall(request);
      const answer = tx.send(call.query);
      const named = call.distinct.map((p) => ({
        type: p.type,
        data: this.#catalogue.upcast(p.type, p.schemaVersion, p.data).data,
        recordedAt: call.recordedAt,
      }));
      const folds = this.#projections.map((p) =>
        (p.ahead as NonNullable<InlineProjection["ahead"]>)(tx.send, this.#db, this.schema, named),
      );
      const stored = this.#stored((await answer)[0], request, call);
      if (stored.written.length > 0) for (const fold of folds) await fold(stored.written);
      // Every statement sent — the reads, the writes — is answered before COMMIT's answer, and
      // COMMIT only commits if all of them succeeded (see PipelinedTransaction.commit).
      await tx.commit();
      return stored;
    } catch (e) {
      await tx.rollback();
      throw e;
    }
  }

  /**
   * The call of `append_events` (migration 0008), or `append_events_chained` with a chain, for
   * the request's events: an id given twice in one batch is stored once (later copies share the first one's
   * position). The function does the lookup of stored ids, the reservation, the fence and the
   * version check and insert; see `append-function.ts`.
   */
  #appendCall({ streamId, prepared, expected, fence, chain }: AppendRequest): {
    query: CompiledQuery;
    distinct: PreparedEvent[];
    recordedAt: Date;
  } {
    const seen = new Set<string>();
    const distinct = prepared.filter((event) => !seen.has(event.eventId) && seen.add(event.eventId));
    const recordedAt = this.#clock();
    // The text is built once per log (#appendSql); only the parameters change per append.
    const chained = chain === undefined ? [] : [this.#streamLock(streamId), chain.afterPosition ?? null];
    const query = CompiledQuery.raw(chain === undefined ? this.#appendSql : this.#chainedSql, [
      streamId,
      expected === "any" ? -1 : expected === "no_stream" ? 0 : expected,
      arrayLiteral(distinct.map((p) => p.eventId)),
      arrayLiteral(distinct.filter((p) => p.callerId).map((p) => p.eventId)),
      arrayLiteral(distinct.map((p) => p.type)),
      arrayLiteral(distinct.map((p) => p.schemaVersion)),
      JSON.stringify(distinct.map((p) => p.data)),
      JSON.stringify(distinct.map((p) => p.metadata)),
      recordedAt,
      fence?.datasetId ?? null,
      fence?.epoch ?? null,
      ...chained,
    ]);
    return { query, distinct, recordedAt };
  }

  /**
   * What `append_events` answered for `call`, as the append's result: a lost lease, a version
   * conflict or a refused head are thrown (nothing was written); otherwise the events written,
   * after telling the chain they are.
   */
  #stored(
    row: unknown,
    { streamId, prepared, expected, fence, chain }: AppendRequest,
    call: { distinct: PreparedEvent[]; recordedAt: Date },
  ): AppendResult {
    const answer = row as AppendRow | undefined;
    if (!answer) throw new Error("append_events returned no row");
    if (answer.outcome === "lease_lost" && fence) {
      const current = answer.lease_epoch === null ? null : Number(answer.lease_epoch);
      throw new LeaseLostError(
        fence.datasetId,
        fence.epoch,
        current,
        current === null ? "no lease is recorded for the dataset" : "another pass acquired the lease",
        { holder: answer.lease_holder },
      );
    }
    if (answer.outcome === "conflict")
      throw new ConcurrencyError(streamId, expected, Number(answer.next_version));
    if (answer.outcome !== "ok") throw new Error(`append_events answered ${String(answer.outcome)}`);

    const known = new Map<string, number>();
    (answer.known_ids ?? []).forEach((id, i) => {
      known.set(id, Number(answer.known_positions?.[i]));
    });
    const fresh = call.distinct.filter((p) => !known.has(p.eventId));
    if (fresh.length > 0) chain?.onWritten?.((answer.positions ?? []).map(Number));
    return this.#result(
      streamId,
      prepared,
      fresh,
      known,
      answer.positions ?? [],
      Number(answer.next_version),
      call.recordedAt,
    );
  }

  /**
   * The append as one `INSERT … SELECT` in autocommit, for events with no caller-chosen id and no
   * fence, so nothing to look up and nothing to lock: the stream row moves and the events go in in
   * one statement, sent as a prepared statement. Writing the stream row first gives the
   * transaction its id before any position is taken (migration 0012's rule).
   */
  async #appendInOneStatement(
    streamId: string,
    prepared: PreparedEvent[],
    expected: ExpectedVersion,
  ): Promise<AppendResult> {
    const recordedAt = this.#clock();
    const kind =
      expected === "any" ? "any" : expected === "no_stream" || expected === 0 ? "no_stream" : "exact";
    // One event goes as plain parameters: no arrays to escape here and to unnest there.
    const one = prepared.length === 1 ? prepared[0] : undefined;
    const parameters: unknown[] = one
      ? [
          streamId,
          1,
          recordedAt,
          one.eventId,
          one.type,
          one.schemaVersion,
          JSON.stringify(one.data),
          JSON.stringify(one.metadata),
        ]
      : [
          streamId,
          prepared.length,
          recordedAt,
          arrayLiteral(prepared.map((p) => p.eventId)),
          arrayLiteral(prepared.map((p) => p.type)),
          arrayLiteral(prepared.map((p) => p.schemaVersion)),
          JSON.stringify(prepared.map((p) => p.data)),
          JSON.stringify(prepared.map((p) => p.metadata)),
        ];
    if (kind === "exact") parameters.push(expected);
    const { rows } = await this.#db.executeQuery<{
      global_position: string | number;
      stream_version: string | number;
    }>(CompiledQuery.raw(this.#statementSql[`${kind}/${one ? "one" : "many"}`], parameters));
    if (rows.length === 0) {
      throw new ConcurrencyError(streamId, expected, await this.#streamVersion(this.#db, streamId));
    }
    // In event order, as inserted (they come back in that order; sorted so as to rely on nothing).
    const stored =
      rows.length > 1 ? [...rows].sort((a, b) => Number(a.stream_version) - Number(b.stream_version)) : rows;
    const positions = stored.map((r) => r.global_position);
    const next = Number(stored.at(-1)?.stream_version);
    // Only taken without projections (see append): nothing else to run on what was written.
    return this.#result(streamId, prepared, prepared, new Map(), positions, next, recordedAt);
  }

  /**
   * What an append answers once stored: the events written (`fresh`, at `positions`, the stream
   * now at `next`), the positions of every event asked for (`known` ones were stored before).
   */
  #result(
    streamId: string,
    prepared: PreparedEvent[],
    fresh: PreparedEvent[],
    known: ReadonlyMap<string, number>,
    positions: readonly (string | number | bigint)[],
    next: number,
    recordedAt: Date,
  ): AppendResult {
    const current = next - fresh.length;
    const freshPosition = new Map<string, number>();
    const written: RecordedEvent[] = fresh.map((event, i) => {
      const position = Number(positions[i]);
      freshPosition.set(event.eventId, position);
      return {
        eventId: event.eventId,
        streamId,
        streamVersion: current + i + 1,
        globalPosition: position,
        type: event.type,
        // An event appended at an older schema version (a tool writing an old shape on purpose)
        // reaches projections and the caller upcast, exactly as a reader will see it.
        ...this.#catalogue.upcast(event.type, event.schemaVersion, event.data),
        metadata: event.metadata,
        recordedAt,
      };
    });
    const all = prepared.map((p) => (known.get(p.eventId) ?? freshPosition.get(p.eventId)) as number);
    return {
      streamId,
      nextExpectedVersion: next,
      positions: all,
      written,
      duplicates: prepared.length - fresh.length,
    };
  }

  /**
   * The chain as this log honours it: `onWritten` only where appends can overlap (see
   * {@link PgEventLogOptions.overlappingAppends}), at most once (an append retried after a
   * conflict writes again), and never throwing into the append.
   */
  #chain(chain: AppendChain | undefined): AppendChain | undefined {
    if (chain === undefined) return undefined;
    const { afterPosition, onWritten } = chain;
    const bounded: AppendChain = afterPosition === undefined ? {} : { afterPosition };
    if (onWritten && this.#overlapping) {
      let called = false;
      bounded.onWritten = (positions) => {
        if (called) return;
        called = true;
        try {
          onWritten(positions);
        } catch {
          // The caller's: the append goes on whatever it does.
        }
      };
    }
    return bounded;
  }

  /** The stream's transaction-scoped lock, as `transaction(fn, { serialiseWith })` takes it. */
  #streamLock(streamId: string): string {
    return advisoryKey(this.schema, `stream:${streamId}`);
  }

  async #readStream(db: LedgerDb, streamId: string, options: ReadStreamOptions): Promise<RecordedEvent[]> {
    const from = options.fromVersion ?? 1;
    if (!Number.isSafeInteger(from) || from < 1)
      throw new ValidationError("fromVersion", "must be an integer ≥ 1");
    const limit = options.limit === undefined ? null : Math.max(1, options.limit);
    const { rows } = await sql<EventRow>`
      SELECT global_position, event_id, stream_id, stream_version, type, schema_version, data, metadata, recorded_at
      FROM ${sql.id(this.schema, "events")}
      WHERE stream_id = ${streamId} AND stream_version >= ${from}
      ORDER BY stream_version
      ${limit === null ? sql`` : sql`LIMIT ${limit}`}`.execute(db);
    return rows.map((r) => this.#toRecorded(r));
  }

  async #streamVersion(db: LedgerDb, streamId: string): Promise<number> {
    const { rows } = await sql<{ version: string | number }>`
      SELECT version FROM ${sql.id(this.schema, "streams")} WHERE stream_id = ${streamId}`.execute(db);
    return rows[0] ? Number(rows[0].version) : 0;
  }

  #toRecorded(r: EventRow): RecordedEvent {
    const { schemaVersion, data } = this.#catalogue.upcast(r.type, r.schema_version, r.data);
    return {
      eventId: r.event_id,
      streamId: r.stream_id,
      streamVersion: Number(r.stream_version),
      globalPosition: Number(r.global_position),
      type: r.type,
      schemaVersion,
      data,
      metadata: normaliseMetadata(r.metadata as Partial<EventMetadata>),
      recordedAt: r.recorded_at instanceof Date ? r.recorded_at : new Date(r.recorded_at),
    };
  }

  #conflict(streamId: string, expected: ExpectedVersion, cause: unknown): ConcurrencyError {
    const e = new ConcurrencyError(streamId, expected, null);
    (e as { cause?: unknown }).cause = cause;
    return e;
  }
}

/**
 * SQL for a `text[]` of the JSON texts of the elements of a JSON array parameter, in order. Event
 * data and metadata go to the server as one JSON document each rather than as `text[]`: pg escapes
 * every `"` and `\` of every element into an array literal and then copies the result again to
 * count its bytes, which cost a 100,000-shard publish ~0.25 s of its 14 MB of WinnerSelected data
 * (JSON.stringify of the whole array: ~20 ms). `json` (not `jsonb`) hands each element back as
 * its text, unparsed.
 */
function jsonElements(parameter: string): string {
  return `ARRAY(SELECT j.d::text FROM json_array_elements(${parameter}::json) WITH ORDINALITY AS j(d, o) ORDER BY j.o)`;
}

/** The bound of a replay's read: positions up to a settled horizon, or everything visible. */
function upToBound(upTo: number | undefined) {
  if (upTo === undefined) return sql``;
  if (!Number.isSafeInteger(upTo) || upTo < 0)
    throw new ValidationError("upTo", "must be a non-negative integer");
  return sql`AND global_position <= ${upTo}`;
}

/**
 * The one-statement append (see `#appendInOneStatement`) for one kind of expected version: the
 * stream row is moved (and row-locked until commit) in the first CTE, which answers the
 * transaction id it has just been given; the events are inserted numbered from its version, each
 * taking its position after that write, in event order. Answers one row per event (position,
 * stream version), none when the expected version did not hold and nothing was written.
 * Parameters: $1 stream, $2 number of events, $3 recorded at, $4–$8 the events' ids, types, schema
 * versions, data and metadata (for "many": arrays, but data and metadata as one JSON array each —
 * see {@link jsonElements}; for "one": the one event's values), $9 the expected version ("exact"
 * only).
 */
function oneStatementAppend(
  schema: string,
  kind: "any" | "no_stream" | "exact",
  count: "one" | "many",
): string {
  const t = (name: string) => `"${schema.replaceAll('"', '""')}".${name}`;
  const move = {
    any: `INSERT INTO ${t("streams")} AS st (stream_id, version, updated_at) VALUES ($1::text, $2::bigint, $3::timestamptz)
      ON CONFLICT (stream_id) DO UPDATE SET version = st.version + EXCLUDED.version, updated_at = EXCLUDED.updated_at`,
    no_stream: `INSERT INTO ${t("streams")} AS st (stream_id, version, updated_at) VALUES ($1::text, $2::bigint, $3::timestamptz)
      ON CONFLICT (stream_id) DO NOTHING`,
    exact: `UPDATE ${t("streams")} st SET version = st.version + $2::bigint, updated_at = $3::timestamptz
      WHERE st.stream_id = $1::text AND st.version = $9::bigint`,
  }[kind];
  return `WITH s AS (
      ${move}
      RETURNING st.version, pg_current_xact_id() AS tx
    )
    INSERT INTO ${t("events")}
      (global_position, transaction_id, event_id, stream_id, stream_version, type, schema_version, data, metadata, recorded_at)
    ${
      count === "one"
        ? `SELECT nextval('${t("global_position_seq")}'::regclass), s.tx, $4::uuid, $1::text, s.version,
      $5::text, $6::integer, $7::jsonb, $8::jsonb, $3::timestamptz
    FROM s`
        : `SELECT nextval('${t("global_position_seq")}'::regclass), s.tx, u.e, $1::text, s.version - $2::bigint + u.o,
      u.ty, u.sv, u.d::jsonb, u.m::jsonb, $3::timestamptz
    FROM s CROSS JOIN ROWS FROM (unnest($4::uuid[]), unnest($5::text[]), unnest($6::integer[]),
      json_array_elements($7::json), json_array_elements($8::json)) WITH ORDINALITY AS u(e, ty, sv, d, m, o)
    ORDER BY u.o`
    }
    RETURNING global_position, stream_version`;
}
