import { z } from "zod";
import {
  attemptNumberSchema,
  idSchema,
  numShardsSchema,
  shardSchema,
  taskAttemptIdSchema,
  urlSchema,
} from "./identifiers.js";

/*
 * The event catalogue: every event type shardledger records, with the zod schema of its `data` at
 * the current schema version. Names are part of the contract (SPEC "Events"). Old versions are
 * upcast on read (EVENT_UPCASTERS below, applied by event-catalogue.ts); stored events are never
 * rewritten.
 */

const attemptRef = {
  runId: idSchema,
  shard: shardSchema,
  attempt: attemptNumberSchema,
  taskAttemptId: taskAttemptIdSchema.nullable(),
  url: urlSchema.nullable(),
};

/** One selected winner inside a WinnerSelected event. */
const selectedWinner = z.strictObject({
  shard: shardSchema,
  attempt: attemptNumberSchema,
  taskAttemptId: taskAttemptIdSchema.nullable(),
  url: urlSchema.nullable(),
});

/**
 * How many winners one WinnerSelected event names at most. A publish records its selection as
 * ⌈numShards / 1000⌉ events appended together (one row per shard made a 100,000-shard publish spend
 * seconds inserting and projecting 100,000 rows); each event stays around 100–200 KB.
 */
export const WINNERS_PER_EVENT = 1000;

const policies = z.strictObject({
  keepRuns: z.number().int().min(1),
  retentionMs: z.number().int().positive(),
  failedRetentionMs: z.number().int().positive(),
  staleAfterMs: z.number().int().positive(),
  safetyWindowMs: z.number().int().min(0),
});

/** The fields of a `_CURRENT` move (CurrentPointerMoved v1; v2 adds its reason). */
const pointerMove = {
  datasetId: idSchema,
  runId: idSchema,
  manifestUrl: urlSchema,
  previousRunId: idSchema.nullable(),
};

/** The fields of an `Archived` event (v1; v2 adds the dataset, the checksum and the prune's counts). */
const archivedV1 = { runId: idSchema, archiveUrl: urlSchema, events: z.number().int().min(0) };

const pruneReason = z.enum(["keep_runs", "retention", "stale", "failed_retention"]);
const cleanupReason = z.enum(["loser", "stale", "orphan", "keep_runs", "retention", "failed_retention"]);

/** Data schemas of every event type, at their current schema version. */
export const eventDataSchemas = {
  DatasetRegistered: z.strictObject({ datasetId: idSchema, root: urlSchema, policies }),
  DatasetPoliciesChanged: z.strictObject({ datasetId: idSchema, policies }),
  RunStarted: z.strictObject({ runId: idSchema, datasetId: idSchema, numShards: numShardsSchema }),
  RunHeartbeat: z.strictObject({ runId: idSchema }),
  AttemptStarted: z.strictObject({ ...attemptRef }),
  AttemptSucceeded: z.strictObject({ ...attemptRef }),
  AttemptFailed: z.strictObject({ ...attemptRef, error: z.string().max(8192) }),
  WinnerSelected: z.strictObject({
    runId: idSchema,
    winners: z.array(selectedWinner).min(1).max(WINNERS_PER_EVENT),
  }),
  ShardCoverageFailed: z.strictObject({ runId: idSchema, missingShards: z.array(shardSchema).min(1) }),
  ManifestPublished: z.strictObject({ runId: idSchema, manifestUrl: urlSchema, createdAt: z.iso.datetime() }),
  CurrentPointerMoved: z.strictObject({
    ...pointerMove,
    // v2: why it moved — a publish (forward, to a run never current before) or a rollback.
    reason: z.enum(["publish", "rollback"]),
  }),
  RunSucceeded: z.strictObject({ runId: idSchema }),
  RunFailed: z.strictObject({
    runId: idSchema,
    cause: z.enum(["coverage", "writer_abort", "heartbeat_timeout"]),
    reason: z.string().max(8192),
  }),
  RunReopened: z.strictObject({ runId: idSchema, reason: z.string().max(8192) }),
  CleanupPlanned: z.strictObject({ runId: idSchema, url: urlSchema, reason: cleanupReason }),
  CleanupSucceeded: z.strictObject({
    runId: idSchema,
    url: urlSchema,
    deletedObjects: z.number().int().min(0),
  }),
  CleanupFailed: z.strictObject({
    runId: idSchema,
    url: urlSchema,
    errorCode: z.string().max(256),
    errorMessage: z.string().max(8192),
    transient: z.boolean(),
    tries: z.number().int().min(1),
    exhausted: z.boolean(),
    nextRetryAt: z.iso.datetime().nullable(),
  }),
  CleanupRequeued: z.strictObject({ runId: idSchema, url: urlSchema }),
  StaleAttemptCollected: z.strictObject({ runId: idSchema, url: urlSchema }),
  Pruned: z.strictObject({
    runId: idSchema,
    datasetId: idSchema,
    reason: pruneReason,
    attempts: z.number().int().min(0),
    failedItems: z.number().int().min(0),
  }),
  Archived: z.strictObject({
    ...archivedV1,
    // v2: written by `archive` to the DATASET stream once the run stream's events left the hot log.
    // `null` only for a v1 event read as v2 (nothing is known of it beyond v1's fields).
    datasetId: idSchema.nullable(),
    /** sha256 (hex) of the archive's content, as its `.complete` marker records it. */
    checksum: z
      .string()
      .regex(/^[0-9a-f]{64}$/)
      .nullable(),
    /**
     * The run's `Pruned` data, deleted from the hot log with the rest of the stream: the rollups
     * keep counting it through this event, so a replay of the hot log rebuilds them exactly.
     */
    pruned: z
      .strictObject({
        reason: pruneReason,
        attempts: z.number().int().min(0),
        failedItems: z.number().int().min(0),
        prunedAt: z.iso.datetime(),
      })
      .nullable(),
  }),
} as const;

/**
 * Every event type name.
 *
 * @example
 * ```ts
 * const type: EventType = "RunStarted"
 * ```
 */
export type EventType = keyof typeof eventDataSchemas;
/**
 * The `data` of an event type, as stored (after zod's output transforms).
 *
 * @example
 * ```ts
 * const data: EventData<"RunStarted"> = { runId: "r1", datasetId: "events", numShards: 4 }
 * ```
 */
export type EventData<T extends EventType> = z.output<(typeof eventDataSchemas)[T]>;
/**
 * The `data` of an event type, as accepted on input (before transforms, e.g. bigint taskAttemptId).
 *
 * @example
 * ```ts
 * const data: EventDataInput<"RunHeartbeat"> = { runId: "r1" }
 * await log.append("run-r1", [{ type: "RunHeartbeat", data }], { expectedVersion: "any" })
 * ```
 */
export type EventDataInput<T extends EventType> = z.input<(typeof eventDataSchemas)[T]>;

/**
 * A domain event: its type and its data. Metadata and positions live in the envelope. Narrow it
 * by `type` to read its data.
 *
 * @example
 * ```ts
 * const event = { type: "RunFailed", data: { runId: "r1", reason: "writer aborted" } } as DomainEvent
 * if (event.type === "RunFailed") console.log(event.data.reason)
 * ```
 */
export type DomainEvent = { [T in EventType]: { type: T; data: EventData<T> } }[EventType];

/**
 * The list of event type names, in catalogue order.
 *
 * @example
 * ```ts
 * const known = (type: string): type is EventType => (EVENT_TYPES as readonly string[]).includes(type)
 * ```
 */
export const EVENT_TYPES = Object.freeze(Object.keys(eventDataSchemas) as EventType[]);

/** Current schema version of each event type; bump it and register an upcaster when a shape changes. */
export const CURRENT_SCHEMA_VERSIONS: Readonly<Record<EventType, number>> = Object.freeze({
  ...(Object.fromEntries(EVENT_TYPES.map((t) => [t, 1])) as Record<EventType, number>),
  WinnerSelected: 2,
  CurrentPointerMoved: 2,
  Archived: 2,
});

/**
 * Schemas of older versions still found in logs, by type and version (for tests and tools that
 * write an old shape on purpose; the log validates an append at the version it names).
 */
export const HISTORICAL_SCHEMAS: Readonly<Partial<Record<EventType, Readonly<Record<number, z.ZodType>>>>> = {
  // v1: one event per shard.
  WinnerSelected: { 1: z.strictObject({ ...attemptRef }) },
  // v1: every move was a publish's.
  CurrentPointerMoved: { 1: z.strictObject({ ...pointerMove }) },
  // v1: no dataset, checksum or prune counts (nothing wrote it before `archive` existed).
  Archived: { 1: z.strictObject({ ...archivedV1 }) },
};

/**
 * Upcasters by type and the version they upcast from. Pure functions of stored data: the log is
 * never rewritten, every reader sees the current shape.
 */
export const EVENT_UPCASTERS: Readonly<
  Partial<Record<EventType, Readonly<Record<number, (data: unknown) => unknown>>>>
> = {
  WinnerSelected: {
    1: (data) => {
      const { runId, ...winner } = data as { runId: string } & Record<string, unknown>;
      return { runId, winners: [winner] };
    },
  },
  CurrentPointerMoved: {
    // Before rollback existed only publish moved the pointer.
    1: (data) => ({ ...(data as Record<string, unknown>), reason: "publish" }),
  },
  Archived: {
    // A v1 event says nothing of its dataset, checksum or prune: unknown, not invented.
    1: (data) => ({ ...(data as Record<string, unknown>), datasetId: null, checksum: null, pruned: null }),
  },
};

/**
 * Why `_CURRENT` moved: a publish of a new run, or a rollback to a retained one.
 *
 * @example
 * ```ts
 * const reason: PointerMoveReason = "rollback"
 * ```
 */
export type PointerMoveReason = z.output<typeof eventDataSchemas.CurrentPointerMoved>["reason"];

/**
 * Reasons a run may be pruned (SPEC "Events": Pruned).
 *
 * @example
 * ```ts
 * const reason: PruneReason = "keep_runs"
 * ```
 */
export type PruneReason = z.output<typeof pruneReason>;
/**
 * Why a prefix is scheduled for deletion.
 *
 * @example
 * ```ts
 * const reason: CleanupReason = "loser"
 * ```
 */
export type CleanupReason = z.output<typeof cleanupReason>;
/**
 * A dataset's policies in milliseconds, as recorded in DatasetRegistered.
 *
 * @example
 * ```ts
 * const policies: DatasetPolicies = { keepRuns: 10, retentionMs: 30 * 86_400_000, failedRetentionMs: 7 * 86_400_000, staleAfterMs: 3_600_000, safetyWindowMs: 3_600_000 }
 * ```
 */
export type DatasetPolicies = z.output<typeof policies>;
