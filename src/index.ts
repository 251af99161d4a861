/**
 * shardledger: the control plane for sharded writes to object storage.
 *
 * Every export is listed by name; types go out as `export type`.
 */

export type { OpenObjectStoreOptions } from "./adapters/objectstore/open-object-store.js";
export { openObjectStore } from "./adapters/objectstore/open-object-store.js";
export type { S3ObjectStoreOptions } from "./adapters/objectstore/s3-object-store.js";
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
export type { DatasetInput, DatasetPolicyChanges } from "./datasets/dataset-config.js";
export { DEFAULT_POLICIES } from "./datasets/dataset-config.js";
export { formatDuration, parseDuration } from "./datasets/duration.js";
export type { SafetyWindowHold } from "./datasets/safety-window.js";
export { effectiveSafetyWindowMs } from "./datasets/safety-window.js";
export type { DemoOptions, DemoSummary } from "./demo/run-demo.js";
export { runDemo } from "./demo/run-demo.js";
export type { ErrorBody, ErrorCode } from "./errors.js";
export {
  ConcurrencyError,
  ContradictingReportError,
  errorBody,
  exitCodeFor,
  IllegalTransitionError,
  isConcurrencyError,
  isLeaseLostError,
  isSafetyRailError,
  isShardCoverageError,
  isShardledgerError,
  isValidationError,
  LeaseLostError,
  NotFoundError,
  OneAppendPerTransactionError,
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
  PointerMoveReason,
  PruneReason,
} from "./events/catalogue.js";
export { EVENT_TYPES, eventDataSchemas } from "./events/catalogue.js";
export type { EventMetadata, NewEvent, RecordedEvent } from "./events/envelope.js";
export { envelopeToJson } from "./events/envelope.js";
export type { EventDefinition, Upcaster } from "./events/event-catalogue.js";
export { defaultCatalogue, EventCatalogue } from "./events/event-catalogue.js";
export type {
  AppendFence,
  AppendOptions,
  AppendResult,
  EventLog,
  EventLogSession,
  ExpectedVersion,
  ReadAllOptions,
  ReadStreamOptions,
} from "./events/event-log.js";
export type { CleanupOptions } from "./ledger/cleanup.js";
export type { MaintainPass } from "./ledger/maintain-loop.js";
export { maintainLoop } from "./ledger/maintain-loop.js";
export type {
  AttemptInput,
  AttemptResult,
  DatasetStatus,
  Ledger,
  LedgerOptions,
  StartedRun,
} from "./ledger/open-ledger.js";
export { openLedger } from "./ledger/open-ledger.js";
export type { CurrentPointer, Manifest, PublishedWinner, PublishResult } from "./ledger/publish.js";
export type { RollbackResult } from "./ledger/rollback.js";
export type { MaintenancePolicies } from "./maintenance/maintenance-policies.js";
export { DEFAULT_MAINTENANCE_POLICIES } from "./maintenance/maintenance-policies.js";
export type {
  CleanupReport,
  GcReport,
  LogRecord,
  MetricRecord,
  PassThroughput,
  RetryFailedReport,
} from "./maintenance/maintenance-reports.js";
export type { RetryPolicy } from "./maintenance/retry-policy.js";
export type {
  AttemptStatus,
  AttemptView,
  AuditRecord,
  DatasetStatusFacts,
  DatasetView,
  MaintenancePassRecord,
  PendingCleanupItem,
  RetentionFloor,
  Rollup,
  RunStatus,
  RunView,
  WinnerView,
} from "./projections/queries.js";
export type { AuditDifference, AuditReport } from "./projections/rebuild.js";
export type {
  DeleteOutcome,
  ListPage,
  ObjectInfo,
  ObjectStore,
  ObjectStoreFailure,
} from "./storage/object-store.js";
export { ObjectStoreError } from "./storage/object-store.js";
