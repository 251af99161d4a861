/**
 * shardledger: the control plane for sharded writes to object storage.
 *
 * Every export is listed by name; types go out as `export type`. Internals (the demo, the CLI's
 * exit codes, subscriptions, the event data schemas) stay out: `scripts/check-consumer.sh`
 * compiles a program against the packed types, and `scripts/check-doc-examples.ts` type-checks
 * the example every export carries.
 */

import {
  createPgEventLog as createConcretePgEventLog,
  type PgEventLogOptions,
} from "./adapters/postgres/pg-event-log.js";
import type { EventLog } from "./events/event-log.js";

export type { OpenObjectStoreOptions } from "./adapters/objectstore/open-object-store.js";
export { openObjectStore } from "./adapters/objectstore/open-object-store.js";
export type { S3ObjectStoreOptions } from "./adapters/objectstore/s3-object-store.js";
export type { DatabaseInput, OpenDatabaseOptions, PostgresPoolLike } from "./adapters/postgres/database.js";
export { openDatabase } from "./adapters/postgres/database.js";
export type { InlineProjection } from "./adapters/postgres/inline-projection.js";
export { migrateToLatest } from "./adapters/postgres/migrations.js";
export type { PgEventLogOptions } from "./adapters/postgres/pg-event-log.js";
export type { PGliteLike } from "./adapters/postgres/pglite-pool.js";
export type {
  ConnectPipelined,
  PipelineClient,
  SendStatement,
} from "./adapters/postgres/pipelined-transaction.js";
export type { AuditDifference, AuditReport } from "./adapters/postgres/rebuild.js";
export type { DatasetInput, DatasetPolicyChanges } from "./datasets/dataset-config.js";
export { DEFAULT_POLICIES } from "./datasets/dataset-config.js";
export { formatDuration, parseDuration } from "./datasets/duration.js";
export type { SafetyWindowHold } from "./datasets/safety-window.js";
export { effectiveSafetyWindowMs } from "./datasets/safety-window.js";
export type { ErrorBody, ErrorCode } from "./errors.js";
export {
  ArchiveError,
  ConcurrencyError,
  ContradictingReportError,
  errorBody,
  IllegalTransitionError,
  InternalError,
  isArchiveError,
  isConcurrencyError,
  isContradictingReportError,
  isIllegalTransitionError,
  isInternalError,
  isLeaseLostError,
  isLockedError,
  isNotFoundError,
  isSafetyRailError,
  isShardCoverageError,
  isShardledgerError,
  isUsageError,
  isValidationError,
  LeaseLostError,
  LockedError,
  NotFoundError,
  OneAppendPerTransactionError,
  SafetyRailError,
  ShardCoverageError,
  ShardledgerError,
  UsageError,
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
export { EVENT_TYPES } from "./events/catalogue.js";
export type { EventMetadata, NewEvent, RecordedEvent } from "./events/envelope.js";
export { envelopeToJson } from "./events/envelope.js";
export type { EventDefinition, Upcaster } from "./events/event-catalogue.js";
export { defaultCatalogue, EventCatalogue } from "./events/event-catalogue.js";
export type {
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
} from "./events/event-log.js";
export type { CleanupOptions } from "./ledger/cleanup.js";
export type { MaintainPass } from "./ledger/maintain-loop.js";
export { maintainLoop } from "./ledger/maintain-loop.js";
export type {
  AttemptInput,
  AttemptReport,
  AttemptReportResult,
  AttemptResult,
  CloseOptions,
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
  ArchiveAuditReport,
  ArchiveProblem,
  ArchiveReport,
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
} from "./projections/views.js";
export type {
  DeleteOutcome,
  ListPage,
  ObjectInfo,
  ObjectStore,
  ObjectStoreFailure,
} from "./storage/object-store.js";
export { isObjectStoreError, ObjectStoreError } from "./storage/object-store.js";

/**
 * The event log on PostgreSQL or PGlite, for a program that appends and reads events itself
 * (the ledger opens its own). Typed as the {@link EventLog} port: what the log does, not how.
 *
 * @example
 * ```ts
 * const database = await openDatabase("pglite:memory")
 * await migrateToLatest(database.db, database.schema)
 * const log = createPgEventLog({ db: database.db, schema: database.schema })
 * await log.append("run-r1", [{ type: "RunHeartbeat", data: { runId: "r1" } }], { expectedVersion: "any" })
 * const events = await log.readStream("run-r1")
 * ```
 */
export const createPgEventLog = (options: PgEventLogOptions): EventLog => createConcretePgEventLog(options);
