import { randomUUID } from "node:crypto";
import { sql } from "kysely";
import {
  ConcurrencyError,
  LeaseLostError,
  OneAppendPerTransactionError,
  ValidationError,
} from "../../errors.js";
import {
  type EventMetadata,
  eventMetadataInputSchema,
  type NewEvent,
  normaliseMetadata,
  type RecordedEvent,
} from "../../events/envelope.js";
import { defaultCatalogue, type EventCatalogue } from "../../events/event-catalogue.js";
import type {
  AppendFence,
  AppendOptions,
  AppendResult,
  EventLog,
  EventLogSession,
  ExpectedVersion,
  ReadAllOptions,
  ReadStreamOptions,
} from "../../events/event-log.js";
import type { LedgerDb } from "./database.js";
import type { InlineProjection } from "./inline-projection.js";

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

/** A Postgres error surfaced by pg or PGlite. */
const pgCode = (e: unknown): string | undefined => (e as { code?: string } | null)?.code;
const pgConstraint = (e: unknown): string | undefined => (e as { constraint?: string } | null)?.constraint;
const isUniqueViolation = (e: unknown, constraintSuffix: string) =>
  pgCode(e) === "23505" &&
  (pgConstraint(e)?.endsWith(constraintSuffix) ?? String((e as Error).message).includes(constraintSuffix));

/**
 * The transactions a session has appended in, shared by every log and session so that two
 * sessions over one transaction are caught too. One append per transaction: a second position
 * reservation breaks "position order equals transaction-id order" (see reserve_positions), which
 * `readAll` relies on to never skip an event.
 */
const appendedIn = new WeakSet<LedgerDb>();

/** The database's refusal of a second reservation (reserve_positions, migration 0004). */
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

  constructor(options: PgEventLogOptions) {
    this.#db = options.db;
    this.schema = options.schema;
    this.#catalogue = options.catalogue ?? defaultCatalogue;
    this.#projections = options.projections ?? [];
    this.#clock = options.clock ?? (() => new Date());
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
    const prepared = this.#prepare(streamId, events, options.expectedVersion, options.fence);
    // A concurrent writer may store the same eventId or create the same stream between our checks
    // and our insert; the retry then sees it and either returns the stored positions or reports a
    // real conflict. A lost lease is final and is never retried.
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#db
          .transaction()
          .execute((trx) => this.#append(trx, streamId, prepared, options.expectedVersion, options.fence));
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
    // pg_current_snapshot() is the statement's own snapshot, so "visible" and "below xmin" refer to
    // the same instant: every transaction below xmin has finished, and any transaction still in
    // flight holds positions above every row returned here (see reserve_positions).
    const { rows } = await sql<EventRow>`
      SELECT global_position, event_id, stream_id, stream_version, type, schema_version, data, metadata, recorded_at
      FROM ${sql.id(this.schema, "events")}
      WHERE global_position > ${after}
        AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
      ORDER BY global_position
      LIMIT ${limit}`.execute(this.#db);
    return rows.map((r) => this.#toRecorded(r));
  }

  /**
   * Reads every event visible to `db`'s snapshot after `after`, without the xmin bound. Only for a
   * caller that holds one snapshot for its whole read (a REPEATABLE READ transaction, or a lock that
   * excludes writers), such as audit and rebuild: there "visible" is exactly what the projections
   * in the same snapshot reflect. With `boundedByXmin` it stops where `readAll` would, so the last
   * position read is a checkpoint that no in-flight event lies below. @internal
   */
  async readVisible(
    db: LedgerDb,
    after: number,
    limit: number,
    options: { boundedByXmin?: boolean } = {},
  ): Promise<RecordedEvent[]> {
    const bound = options.boundedByXmin
      ? sql`AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())`
      : sql``;
    const { rows } = await sql<EventRow>`
      SELECT global_position, event_id, stream_id, stream_version, type, schema_version, data, metadata, recorded_at
      FROM ${sql.id(this.schema, "events")}
      WHERE global_position > ${after} ${bound}
      ORDER BY global_position
      LIMIT ${limit}`.execute(db);
    return rows.map((r) => this.#toRecorded(r));
  }

  async transaction<T>(fn: (session: EventLogSession) => Promise<T>): Promise<T> {
    return this.#db.transaction().execute((trx) => fn(this.session(trx)));
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
        return this.#append(
          trx,
          streamId,
          this.#prepare(streamId, events, options.expectedVersion, options.fence),
          options.expectedVersion,
          options.fence,
        );
      },
      readStream: (streamId, options) => this.#readStream(trx, streamId, options ?? {}),
      streamVersion: (streamId) => this.#streamVersion(trx, streamId),
    };
  }

  /** Validates everything before any database access, so invalid input writes nothing. */
  #prepare(
    streamId: string,
    events: readonly NewEvent[],
    expected: ExpectedVersion,
    fence?: AppendFence,
  ): PreparedEvent[] {
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
      const { schemaVersion, data } = this.#catalogue.validate(e.type, e.data, e.schemaVersion);
      const meta = eventMetadataInputSchema.safeParse(e.metadata ?? {});
      if (!meta.success) {
        const issue = meta.error.issues[0];
        throw new ValidationError(
          `${e.type}.metadata${issue?.path.length ? `.${issue.path.join(".")}` : ""}`,
          issue?.message ?? "invalid",
        );
      }
      return {
        eventId: eventId.toLowerCase(),
        callerId: e.eventId !== undefined,
        type: e.type,
        schemaVersion,
        data,
        metadata: normaliseMetadata(meta.data),
      };
    });
  }

  async #append(
    trx: LedgerDb,
    streamId: string,
    prepared: PreparedEvent[],
    expected: ExpectedVersion,
    fence?: AppendFence,
  ): Promise<AppendResult> {
    const events = sql.id(this.schema, "events");
    const streams = sql.id(this.schema, "streams");
    const positions = new Array<number>(prepared.length);
    const known = new Map<string, number>();
    // Ids this log generated itself cannot be stored yet: only caller-chosen ids need the lookup.
    if (prepared.some((p) => p.callerId)) {
      const { rows } = await sql<{ event_id: string; global_position: string | number }>`
        SELECT event_id, global_position FROM ${events}
        WHERE event_id = ANY(${prepared.map((p) => p.eventId)}::uuid[])`.execute(trx);
      for (const r of rows) known.set(r.event_id, Number(r.global_position));
    }
    const fresh: { index: number; event: PreparedEvent }[] = [];
    const firstInBatch = new Map<string, number>();
    prepared.forEach((event, index) => {
      const stored = known.get(event.eventId);
      if (stored !== undefined) positions[index] = stored;
      else if (firstInBatch.has(event.eventId))
        positions[index] = -1 - (firstInBatch.get(event.eventId) as number);
      else {
        firstInBatch.set(event.eventId, index);
        fresh.push({ index, event });
      }
    });
    if (fresh.length === 0) {
      // Nothing will be written, so a plain read is enough; a lost lease still stops the pass. No
      // row lock here: it would give the transaction an xid before any reservation and make a
      // later append in the same transaction fail (see reserve_positions).
      if (fence) await this.#checkFence(trx, fence, false);
      const version = await this.#streamVersion(trx, streamId);
      return { streamId, nextExpectedVersion: version, positions, written: [], duplicates: prepared.length };
    }

    // The reservation must be this transaction's first write and its only one (see
    // reserve_positions); the database refuses a second one even past the session's own check.
    const { rows: reserved } = await sql<{ tx: string; first_position: string | number }>`
      SELECT tx::text AS tx, first_position FROM ${sql.id(this.schema, "reserve_positions")}(${fresh.length}::integer)`
      .execute(trx)
      .catch((e: unknown) => {
        throw isSecondReservation(e) ? new OneAppendPerTransactionError(streamId, { cause: e }) : e;
      });
    const reservation = reserved[0];
    if (!reservation) throw new Error("reserve_positions returned no row");
    const first = Number(reservation.first_position);
    // The fence is checked after the reservation (which must stay the first write) and before any
    // row is written. FOR SHARE holds the lease row until commit: a pass acquiring the lease in
    // between waits for us to finish, so no event commits under an epoch already superseded.
    if (fence) await this.#checkFence(trx, fence, true);

    // One statement checks and moves the stream's version (row-locked until commit) and inserts
    // the events numbered from it; no row back means the expected version did not hold.
    const n = fresh.length;
    const recordedAt = this.#clock();
    const moveStream =
      expected === "any"
        ? sql`INSERT INTO ${streams} AS st (stream_id, version, updated_at) VALUES (${streamId}, ${n}, ${recordedAt})
              ON CONFLICT (stream_id) DO UPDATE SET version = st.version + EXCLUDED.version, updated_at = EXCLUDED.updated_at
              RETURNING version`
        : expected === "no_stream" || expected === 0
          ? sql`INSERT INTO ${streams} (stream_id, version, updated_at) VALUES (${streamId}, ${n}, ${recordedAt})
                ON CONFLICT (stream_id) DO NOTHING RETURNING version`
          : sql`UPDATE ${streams} SET version = version + ${n}, updated_at = ${recordedAt}
                WHERE stream_id = ${streamId} AND version = ${expected} RETURNING version`;
    const { rows: moved } = await sql<{ version: string | number | null }>`
      WITH s AS (${moveStream}),
      ins AS (
        INSERT INTO ${events}
          (global_position, transaction_id, event_id, stream_id, stream_version, type, schema_version, data, metadata, recorded_at)
        SELECT ${first}::bigint + u.ord - 1, ${reservation.tx}::xid8, u.e, ${streamId}, s.version - ${n} + u.ord,
               u.t, u.sv, u.d::jsonb, u.m::jsonb, ${recordedAt}::timestamptz
        FROM s CROSS JOIN unnest(
          ${fresh.map((f) => f.event.eventId)}::uuid[],
          ${fresh.map((f) => f.event.type)}::text[],
          ${fresh.map((f) => f.event.schemaVersion)}::integer[],
          ${fresh.map((f) => JSON.stringify(f.event.data))}::text[],
          ${fresh.map((f) => JSON.stringify(f.event.metadata))}::text[]
        ) WITH ORDINALITY AS u(e, t, sv, d, m, ord)
        RETURNING 1
      )
      SELECT (SELECT version FROM s) AS version, (SELECT count(*) FROM ins) AS inserted`.execute(trx);
    if (moved[0]?.version === null || moved[0]?.version === undefined) {
      throw new ConcurrencyError(streamId, expected, await this.#streamVersion(trx, streamId));
    }
    const next = Number(moved[0].version);
    const current = next - n;
    const written: RecordedEvent[] = fresh.map(({ event }, i) => ({
      eventId: event.eventId,
      streamId,
      streamVersion: current + i + 1,
      globalPosition: first + i,
      type: event.type,
      // An event appended at an older schema version (a tool writing an old shape on purpose)
      // reaches projections and the caller upcast, exactly as a reader will see it.
      ...this.#catalogue.upcast(event.type, event.schemaVersion, event.data),
      metadata: event.metadata,
      recordedAt,
    }));

    fresh.forEach(({ index }, i) => {
      positions[index] = first + i;
    });
    for (let i = 0; i < positions.length; i++) {
      const p = positions[i] as number;
      if (p < 0) positions[i] = positions[-1 - p] as number;
    }
    for (const projection of this.#projections) await projection.apply(trx, written, this.schema);
    return {
      streamId,
      nextExpectedVersion: next,
      positions,
      written,
      duplicates: prepared.length - fresh.length,
    };
  }

  /** Throws `LeaseLostError` unless `fence.epoch` is the dataset's stored lease epoch. */
  async #checkFence(trx: LedgerDb, fence: AppendFence, lock: boolean): Promise<void> {
    const { rows } = await sql<{ epoch: string | number; holder: string }>`
      SELECT epoch, holder FROM ${sql.id(this.schema, "maintenance_leases")}
      WHERE dataset_id = ${fence.datasetId} ${lock ? sql`FOR SHARE` : sql``}`.execute(trx);
    const row = rows[0];
    const current = row ? Number(row.epoch) : null;
    if (current !== fence.epoch) {
      throw new LeaseLostError(
        fence.datasetId,
        fence.epoch,
        current,
        current === null ? "no lease is recorded for the dataset" : "another pass acquired the lease",
        { holder: row?.holder ?? null },
      );
    }
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
