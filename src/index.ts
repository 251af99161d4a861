/**
 * shardledger: the control plane for sharded writes to object storage.
 *
 * Every export is listed by name; types go out as `export type`.
 */
export type { DatabaseInput, PostgresPoolLike } from "./adapters/postgres/database.js";
export { openDatabase } from "./adapters/postgres/database.js";
export type { InlineProjection } from "./adapters/postgres/inline-projection.js";
export { migrateToLatest } from "./adapters/postgres/migrations.js";
export type { PgEventLogOptions } from "./adapters/postgres/pg-event-log.js";
export { createPgEventLog } from "./adapters/postgres/pg-event-log.js";
export type { PGliteLike } from "./adapters/postgres/pglite-pool.js";
export type { SubscriptionOptions } from "./adapters/postgres/subscription.js";
export {
  processSubscriptionBatch,
  startSubscription,
  subscriptionCheckpoint,
} from "./adapters/postgres/subscription.js";
export { formatDuration, parseDuration } from "./datasets/duration.js";
export type { ErrorCode } from "./errors.js";
export {
  ConcurrencyError,
  ContradictingReportError,
  exitCodeFor,
  IllegalTransitionError,
  isConcurrencyError,
  isSafetyRailError,
  isShardCoverageError,
  isShardledgerError,
  isValidationError,
  NotFoundError,
  SafetyRailError,
  ShardCoverageError,
  ShardledgerError,
  ValidationError,
} from "./errors.js";
export type {
  CleanupReason,
  DatasetPolicies,
  DomainEvent,
  EventData,
  EventDataInput,
  EventType,
  PruneReason,
} from "./events/catalogue.js";
export { EVENT_TYPES, eventDataSchemas } from "./events/catalogue.js";
export type { EventMetadata, NewEvent, RecordedEvent } from "./events/envelope.js";
export { envelopeToJson } from "./events/envelope.js";
export type { EventDefinition, Upcaster } from "./events/event-catalogue.js";
export { defaultCatalogue, EventCatalogue } from "./events/event-catalogue.js";
export type {
  AppendResult,
  EventLog,
  EventLogSession,
  ExpectedVersion,
  ReadAllOptions,
  ReadStreamOptions,
} from "./events/event-log.js";
