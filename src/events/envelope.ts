import { z } from "zod";

/**
 * Who caused an event and why: carried with every event, never interpreted by the fold.
 *
 * @example
 * ```ts
 * const metadata: EventMetadata = { correlationId: "job-42", causationId: null, actor: "spark-driver" }
 * ```
 */
export interface EventMetadata {
  correlationId: string | null;
  causationId: string | null;
  actor: string | null;
}

/** zod schema of caller-supplied metadata; every key optional, unknown keys refused. */
export const eventMetadataInputSchema = z.strictObject({
  correlationId: z.string().max(256).nullable().optional(),
  causationId: z.string().max(256).nullable().optional(),
  actor: z.string().max(256).nullable().optional(),
});

/**
 * An event to append. `eventId` is the idempotency key: appending an id that is already stored is
 * a no-op returning the stored position. When omitted a random UUID is used.
 *
 * @example
 * ```ts
 * const e: NewEvent = { type: "RunHeartbeat", data: { runId: "r1" } }
 * ```
 */
export interface NewEvent<TType extends string = string, TData = unknown> {
  eventId?: string;
  type: TType;
  data: TData;
  metadata?: Partial<EventMetadata>;
  /** Only for writing historical shapes in tests and migrations; normally the current version. */
  schemaVersion?: number;
}

/**
 * An event as stored in the log, upcast to the current schema version of its type.
 *
 * @example
 * ```ts
 * for (const e of await log.readStream("run-r1")) console.log(e.streamVersion, e.type)
 * ```
 */
export interface RecordedEvent<TType extends string = string, TData = unknown> {
  eventId: string;
  streamId: string;
  /** Dense from 1 within a stream. */
  streamVersion: number;
  /** Position in the global log; strictly increasing in the order `readAll` delivers. */
  globalPosition: number;
  type: TType;
  schemaVersion: number;
  data: TData;
  metadata: EventMetadata;
  recordedAt: Date;
}

/** Normalises partial metadata to the full shape with `null` for what was not given. */
export function normaliseMetadata(
  m: { [K in keyof EventMetadata]?: EventMetadata[K] | undefined } | undefined,
): EventMetadata {
  return {
    correlationId: m?.correlationId ?? null,
    causationId: m?.causationId ?? null,
    actor: m?.actor ?? null,
  };
}

/**
 * The JSON shape of an event (what `events --json` prints): `recordedAt` as an ISO string.
 *
 * @example
 * ```ts
 * JSON.stringify(events.map(envelopeToJson))
 * ```
 */
export function envelopeToJson(e: RecordedEvent): Record<string, unknown> {
  return {
    eventId: e.eventId,
    streamId: e.streamId,
    streamVersion: e.streamVersion,
    globalPosition: e.globalPosition,
    type: e.type,
    schemaVersion: e.schemaVersion,
    data: e.data,
    metadata: e.metadata,
    recordedAt: e.recordedAt.toISOString(),
  };
}
