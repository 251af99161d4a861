import { randomBytes } from "node:crypto";
import { sql } from "kysely";
import type { z } from "zod";
import { openObjectStore } from "../adapters/objectstore/open-object-store.js";
import type { S3ObjectStoreOptions } from "../adapters/objectstore/s3-object-store.js";
import { type HotLogArchive, pgHotLogArchive } from "../adapters/postgres/archive-queries.js";
import { type Database, type DatabaseInput, openDatabase } from "../adapters/postgres/database.js";
import { withDatasetLock } from "../adapters/postgres/dataset-lock.js";
import { migrateToLatest } from "../adapters/postgres/migrations.js";
import { createPgEventLog, type PgEventLog } from "../adapters/postgres/pg-event-log.js";
import { type ProjectionQueries, projectionQueries } from "../adapters/postgres/projection-queries.js";
import { ledgerProjection } from "../adapters/postgres/projection-store.js";
import { type AuditReport, auditProjections, rebuildProjections } from "../adapters/postgres/rebuild.js";
import { pgRunSnapshotStore } from "../adapters/postgres/run-snapshot-store.js";
import {
  type DatasetInput,
  type DatasetPolicyChanges,
  parseDatasetInput,
  parsePolicyChanges,
} from "../datasets/dataset-config.js";
import { durationSchema } from "../datasets/duration-schema.js";
import { assertRootIsolated } from "../datasets/root-overlap.js";
import type { SafetyWindowHold } from "../datasets/safety-window.js";
import {
  type ErrorBody,
  errorBody,
  IllegalTransitionError,
  NotFoundError,
  ValidationError,
} from "../errors.js";
import type { RecordedEvent } from "../events/envelope.js";
import type { AppendFence } from "../events/event-log.js";
import { idSchema } from "../events/identifiers.js";
import { datasetStream, streamCandidates } from "../events/streams.js";
import type { RunCommand } from "../machines/run-commands.js";
import type { RunStatus } from "../machines/run-machine.js";
import type { AttemptState, RunState } from "../machines/run-state.js";
import { attemptKey } from "../machines/run-state.js";
import { DEFAULT_ARCHIVE_AFTER_MS } from "../maintenance/archive-planner.js";
import {
  DEFAULT_MAINTENANCE_POLICIES,
  type MaintenancePolicies,
} from "../maintenance/maintenance-policies.js";
import type {
  ArchiveAuditReport,
  ArchiveReport,
  CleanupReport,
  GcReport,
  LogRecord,
  MetricRecord,
  RetryFailedReport,
} from "../maintenance/maintenance-reports.js";
import type {
  AttemptView,
  DatasetStatusFacts,
  DatasetView,
  PendingCleanupItem,
  RetentionFloor,
  Rollup,
  RunView,
  WinnerView,
} from "../projections/views.js";
import { type DatasetRoot, parseDatasetRoot } from "../storage/dataset-url.js";
import { attemptUrlOf } from "../storage/object-layout.js";
import type { ObjectStore } from "../storage/object-store.js";
import { parseWithSchema } from "../validation.js";
import { type ArchiveDeps, type ArchiveStep, archive, auditArchives, readArchivedRun } from "./archive.js";
import type { CleanupOptions } from "./cleanup.js";
import {
  acceptAttemptReport,
  attemptFailedInputSchema,
  attemptInputSchema,
  attemptReportSchema,
  failRunInputSchema,
  MAX_REPORTS_PER_CALL,
  parseInput,
  startRunInputSchema,
} from "./inputs.js";
import { MaintenanceService } from "./maintenance-service.js";
import { type PublishDeps, type PublishResult, publishRun } from "./publish.js";
import { type RollbackResult, rollbackRun } from "./rollback.js";
import {
  type ReportCommand,
  type ReportGroupLimits,
  RunExecutor,
  type SharedReportOptions,
} from "./run-executor.js";

/**
 * Options of {@link openLedger}.
 *
 * @example
 * ```ts
 * const options: LedgerOptions = { database: "pglite:./.shardledger/db", actor: "nightly-export" }
 * ```
 */
export interface LedgerOptions {
  /** `postgres://…`, `pglite:<dir>`, `pglite:memory`, a PGlite instance or a pg-compatible pool. */
  database: DatabaseInput;
  /** Postgres schema of the ledger's tables (default `shardledger`). */
  schema?: string;
  /** Create or upgrade the schema on open (default true). */
  migrate?: boolean;
  /** Recorded as `metadata.actor` on every event this ledger appends. */
  actor?: string;
  /** The clock that stamps events and drives policies; tests control it. */
  clock?: () => Date;
  /** Options for `s3://` dataset roots (endpoint, path-style, credentials, client). */
  s3?: S3ObjectStoreOptions;
  /** Replaces the object-store factory (for example to share one S3 client). */
  objectStore?: (rootUrl: string) => ObjectStore;
  /**
   * Connections in the pool for a server database (default 10). At least 3: a rollback holds two
   * advisory-lock sessions (publish and maintenance) while it queries on a third.
   */
  poolSize?: number;
  /** Retry policies of cleanup: within a pass, and between passes (see {@link MaintenancePolicies}). */
  maintenance?: Partial<MaintenancePolicies>;
  /**
   * Delete a run's losers in the background right after it publishes (default true). Publish
   * never waits for it and never fails because of it; what is not deleted goes to the pending set.
   */
  cleanupAfterPublish?: boolean;
  /** Structured logs of maintenance passes. */
  log?: (record: LogRecord) => void;
  /** Counters of maintenance passes (deleted, failed, pending, pruned). */
  metric?: (record: MetricRecord) => void;
  /**
   * How long a pruned run's events stay in the hot log before `archive` (and the `maintain` loop)
   * moves them to the dataset's `_archive/` (default `7d`): a duration (`12h`, `7d`; `0s` archives
   * as soon as a run is pruned) or milliseconds. Validated at open: a `ValidationError` names `archiveAfter`.
   */
  archiveAfter?: string | number;
  /** @internal test hook: a throw after an archive step stands for a crash there. */
  archiveHook?: (step: ArchiveStep, runId: string) => void | Promise<void>;
  /** @internal test hooks: how maintenance waits between retries and draws jitter. */
  sleep?: (ms: number) => Promise<void>;
  /** @internal */
  random?: () => number;
  /**
   * @internal test hook: smaller report groups (see RunExecutor's `reportGroups`), so that a few
   * dozen racing reports form many groups, decided ahead and appended behind one another.
   */
  reportGroups?: ReportGroupLimits;
}

/**
 * Input of the attempt reports: which shard, which attempt of it, and (on success) where it wrote.
 *
 * @example
 * ```ts
 * const input: AttemptInput = { runId, shard: 3, attempt: 1, taskAttemptId: 9_007_199_254_740_993n, url: `s3://lake/events/data/${runId}/shard=00003/attempt=01` }
 * await ledger.attemptSucceeded(input)
 * ```
 */
export interface AttemptInput {
  runId: string;
  shard: number;
  attempt: number;
  taskAttemptId?: string | bigint | number | null;
  url?: string | null;
}

/**
 * An attempt as the CLI prints it after a report.
 *
 * @example
 * ```ts
 * const result: AttemptResult = await ledger.attemptFailed({ runId, shard: 3, attempt: 0, error: "executor lost" })
 * console.log(result.status) // "FAILED"
 * ```
 */
export interface AttemptResult {
  runId: string;
  shard: number;
  attempt: number;
  taskAttemptId: string | null;
  url: string | null;
  status: AttemptState["status"];
}

/**
 * One report of {@link Ledger.reportAttempts}: the outcome (`kind`) and the fields of the single
 * call it stands for (`error` only with `kind: "failed"`).
 *
 * @example
 * ```ts
 * const report: AttemptReport = { kind: "succeeded", runId, shard: 3, attempt: 1, taskAttemptId: "9007199254740993", url: `s3://lake/events/data/${runId}/shard=00003/attempt=01` }
 * ```
 */
export type AttemptReport =
  | ({ kind: "started" | "succeeded" } & AttemptInput)
  | ({ kind: "failed"; error?: string } & AttemptInput);

/**
 * The result of one report of {@link Ledger.reportAttempts}, at its `index` in the input.
 *
 * @example
 * ```ts
 * const [first]: AttemptReportResult[] = await ledger.reportAttempts([{ kind: "started", runId, shard: 0, attempt: 0 }])
 * if (first?.ok) console.log(first.attempt.status)
 * else console.error(first?.error.code, first?.error.field)
 * ```
 */
export type AttemptReportResult =
  | { index: number; ok: true; attempt: AttemptResult }
  | { index: number; ok: false; error: ErrorBody["error"] };

/**
 * The result of `startRun`, as `run start --json` prints it.
 *
 * @example
 * ```ts
 * const started: StartedRun = await ledger.startRun({ datasetId: "events", numShards: 16, runId: "2026-11-30" })
 * ```
 */
export interface StartedRun {
  runId: string;
  datasetId: string;
  numShards: number;
  /** The run's status as recorded (STARTED: a start is refused for a run in any other status). */
  status: RunStatus;
}

/**
 * One dataset at a glance, as `status --json` prints it (durations in milliseconds; the CLI adds
 * them as text too). `current.since` is when `_CURRENT` last moved; `pending.dueNow` counts what
 * the next cleanup pass tries, `waiting` what waits for its retry time (the earliest is
 * `nextRetryAt`), `exhausted` what waits for `retry-failed`; `floor.items` are the first 100 to
 * leave the failed-retention floor (`total` counts all); `lastMaintenance` is the last cleanup or
 * gc pass that did work (dry runs are not recorded), `lastAudit` the last `audit` of the whole log;
 * each is null until there is one.
 *
 * @example
 * ```ts
 * const s: DatasetStatus = await ledger.status("events")
 * if (s.pending.exhausted > 0) console.warn(`${s.pending.exhausted} cleanup items need retry-failed`)
 * ```
 */
export interface DatasetStatus extends DatasetStatusFacts {
  datasetId: string;
  root: string;
  policies: DatasetView["policies"];
  /** The longer safety window still in force after a policy change shortened it, or null. */
  safetyWindowHold: SafetyWindowHold | null;
  current: { runId: string; manifestUrl: string | null; since: Date | null } | null;
}

/**
 * The ledger: every operation of shardledger over one database.
 *
 * @example
 * ```ts
 * const ledger = await openLedger({ database: "pglite:memory" })
 * await ledger.createDataset({ datasetId: "events", root: "file:///data/events" })
 * const { runId } = await ledger.startRun({ datasetId: "events", numShards: 2 })
 * await ledger.attemptSucceeded({ runId, shard: 0, attempt: 0, url: `file:///data/events/data/${runId}/shard=00000/attempt=00` })
 * await ledger.attemptSucceeded({ runId, shard: 1, attempt: 0, url: `file:///data/events/data/${runId}/shard=00001/attempt=00` })
 * const { manifestUrl } = await ledger.publish(runId)
 * await ledger.close()
 * ```
 */
export interface Ledger {
  readonly schema: string;
  /** Creates or upgrades the schema; returns the latest migration name. */
  migrate(): Promise<{ version: string }>;
  /**
   * Registers a dataset (idempotent when the definition is identical). A root equal to, inside or
   * containing another dataset's root is refused with a `SafetyRailError` naming that dataset.
   */
  createDataset(input: DatasetInput): Promise<DatasetView>;
  /**
   * Changes a dataset's policies: appends DatasetPoliciesChanged with the whole new policy set,
   * validated exactly as at create (a `ValidationError` names the field; nothing is written), at
   * the dataset stream's expected version and serialised with publish and rollback. Values equal
   * to the current ones write nothing. A shrink never takes back protection already promised:
   * items in the failed-retention floor keep their `protectedUntil`, and a shorter safety window
   * is held at the old length until the promises made under it have ended (`safetyWindowHold`).
   * keepRuns may shrink freely: the next gc prunes by it, never the current run or a run newer
   * than it that was never current.
   *
   * @example
   * ```ts
   * await ledger.updateDataset("events", { keepRuns: 3, failedRetention: "14d" })
   * ```
   */
  updateDataset(datasetId: string, changes: DatasetPolicyChanges): Promise<DatasetView>;
  /**
   * Moves `_CURRENT` back (or forward again) to a retained SUCCEEDED run of the dataset, after
   * checking its manifest and every winner's data in the object store; `_CURRENT` is written last
   * and the move recorded as CurrentPointerMoved with reason `rollback`. Refused, changing nothing,
   * for an unknown dataset or run (`NotFoundError`), a run of another dataset (`SafetyRailError`),
   * a run that is not SUCCEEDED, is already current, or whose manifest or data is missing
   * (`IllegalTransitionError`).
   *
   * @example
   * ```ts
   * const { previousRunId } = await ledger.rollback("events", "2026-11-22")
   * ```
   */
  rollback(datasetId: string, toRunId: string): Promise<RollbackResult>;
  /**
   * One dataset's state at a glance: the current run and since when, runs by status, the
   * pending-cleanup set (due now, waiting, next retry), the failed-retention floor and when its
   * items leave it, the last maintenance pass and its outcome, the last audit.
   *
   * @example
   * ```ts
   * const { current, pending } = await ledger.status("events")
   * ```
   */
  status(datasetId: string): Promise<DatasetStatus>;
  /** {@link Ledger.status} of every dataset, by id. */
  status(): Promise<DatasetStatus[]>;
  dataset(datasetId: string): Promise<DatasetView>;
  datasets(): Promise<DatasetView[]>;
  startRun(input: { datasetId: string; numShards: number; runId?: string }): Promise<StartedRun>;
  heartbeat(runId: string): Promise<RunView>;
  attemptStarted(input: AttemptInput): Promise<AttemptResult>;
  attemptSucceeded(input: AttemptInput): Promise<AttemptResult>;
  attemptFailed(input: AttemptInput & { error?: string }): Promise<AttemptResult>;
  /**
   * Reports many attempts in one call (the HTTP batch endpoint's operation). Each report is
   * validated on its own (a bad one never blocks the rest) and goes through the same group commit
   * as the single calls: the reports of one run are decided together and stored by one append per
   * up to 1,000 of them. Returns one result per report, in input order: `{ index, ok: true, attempt }`
   * with what the single call would have returned, or `{ index, ok: false, error }` with the body
   * the single call's error gives (`errorBody(e).error`: code, message, field…). Idempotent like
   * the single calls: sending the same batch again writes nothing and answers the same. At most
   * 10,000 reports per call (`ValidationError` on `reports` otherwise, nothing written).
   *
   * @example
   * ```ts
   * const results = await ledger.reportAttempts([
   *   { kind: "started", runId, shard: 0, attempt: 0 },
   *   { kind: "succeeded", runId, shard: 0, attempt: 0, url: `s3://lake/events/data/${runId}/shard=00000/attempt=00` },
   *   { kind: "failed", runId, shard: 1, attempt: 0, error: "executor lost" },
   * ])
   * for (const r of results) if (!r.ok) console.error(r.index, r.error.code, r.error.field)
   * ```
   */
  reportAttempts(reports: readonly AttemptReport[]): Promise<AttemptReportResult[]>;
  /** Selects winners, writes the manifest, marks the run SUCCEEDED, then moves `_CURRENT`. */
  publish(runId: string): Promise<PublishResult>;
  failRun(runId: string, reason: string): Promise<RunView>;
  /** The run registry of a dataset, newest first. An unknown dataset is a `NotFoundError`. */
  runs(datasetId: string): Promise<RunView[]>;
  /** One run with its attempts and winners. */
  run(runId: string): Promise<{ run: RunView; attempts: AttemptView[]; winners: WinnerView[] }>;
  /** The pending-cleanup set; a `datasetId` that names no dataset is a `NotFoundError`. */
  pendingCleanup(filter?: { datasetId?: string; dueBefore?: Date }): Promise<PendingCleanupItem[]>;
  /** What the failed-retention floor protects; an unknown dataset is a `NotFoundError`. */
  retentionFloors(datasetId: string): Promise<RetentionFloor[]>;
  /** Pruned counts per reason; an unknown dataset is a `NotFoundError`. */
  rollups(datasetId: string): Promise<Rollup[]>;
  /**
   * Reads the log: one stream from a version, or the global log after a position. `stream` is a
   * stream id (`run-<runId>`, `dataset-<datasetId>`), a run id, `run:<runId>` or
   * `dataset:<datasetId>`; a stream with no events is a `NotFoundError` (kind `stream`).
   */
  events(options?: { stream?: string; from?: number; limit?: number }): Promise<RecordedEvent[]>;
  /**
   * Replays the log into scratch projections and compares them with the live ones. With `deep`,
   * also checks every archive against its `Archived` event (marker, content, checksum, count) and
   * reports each problem in `archives.problems`; a problem makes `match` false.
   *
   * @example
   * ```ts
   * const report = await ledger.audit({ deep: true })
   * if (!report.match) console.error(report.differences, report.archives?.problems)
   * ```
   */
  audit(options?: { onProgress?: (events: number) => void; deep?: boolean }): Promise<AuditReport>;
  /** Rebuilds the projections from the log and swaps them in. */
  rebuild(options?: { onProgress?: (events: number) => void }): Promise<{ events: number; version: number }>;
  /**
   * Deletes the losers of published runs and drains the due part of the pending-cleanup set, each
   * deletion planned as an event first. `dryRun` lists what would be deleted and changes nothing;
   * `retryNow` tries every pending item that is not exhausted, due or not. The report's `pending`
   * counts what is left in the pending set afterwards, and `nextDueAt` says when the next waits end.
   */
  cleanup(options?: CleanupOptions): Promise<CleanupReport>;
  /**
   * Stale runs, keep-runs, retention, the failed floor and orphans for one dataset, in one locked
   * pass. `concurrency` is how many orphan deletions are in flight (validated: an integer 1…256).
   */
  gc(
    datasetId: string,
    options?: { dryRun?: boolean; signal?: AbortSignal; concurrency?: number },
  ): Promise<GcReport>;
  /** Reopens failed runs and re-queues exhausted cleanup items inside the failed-retention floor. */
  retryFailed(input: { datasetId: string; runId?: string }): Promise<RetryFailedReport>;
  /**
   * Moves the events of runs pruned at least `after` ago (default: the ledger's `archiveAfter`,
   * 7d) from the hot log to `<root>/_archive/run-<runId>.*` (content, then the `.complete` marker with
   * its sha256 and count), then, in one transaction, deletes them from the hot log and records
   * `Archived` on the dataset stream. Under each dataset's maintenance lease (a dataset another
   * pass holds is `skipped`); `dryRun` lists what is due and changes nothing. Archived streams stay
   * readable through {@link Ledger.events}.
   *
   * @example
   * ```ts
   * const { archived, failed } = await ledger.archive({ datasetId: "events", after: "7d" })
   * ```
   */
  archive(options?: {
    datasetId?: string;
    dryRun?: boolean;
    after?: string | number;
    signal?: AbortSignal;
  }): Promise<ArchiveReport>;
  /**
   * Releases the database and object-store connections. Loser cleanup that `publish` started in
   * the background is waited for by default (`backgroundCleanup: "wait"`): on a run with thousands
   * of losers that can take minutes. `"abandon"` stops it at its next safe point instead (between
   * two delete batches; a request in flight completes) and closes as soon as it has recorded where
   * it stopped: what it did not delete stays in the log as pending work — losers not yet planned
   * stay losers, and a prefix cut short is recorded as a transient `Aborted` failure — so the next
   * `cleanup` (or `maintain`) deletes the rest exactly as it would after a crash.
   *
   * @example
   * ```ts
   * await ledger.publish(runId)
   * // A short-lived job: leave the losers to the scheduled `shardledger cleanup`.
   * await ledger.close({ backgroundCleanup: "abandon" })
   * ```
   */
  close(options?: CloseOptions): Promise<void>;
}

/**
 * Options of {@link Ledger.close}.
 *
 * @example
 * ```ts
 * const options: CloseOptions = { backgroundCleanup: "abandon" }
 * await ledger.close(options)
 * ```
 */
export interface CloseOptions {
  /**
   * What happens to loser cleanup still running in the background after a `publish`:
   * `"wait"` (default) lets it finish; `"abandon"` stops it at its next safe point and leaves the
   * rest to the next cleanup pass.
   *
   * Waiting is the default because a process that publishes and exits may be the only thing that
   * ever cleans its losers (when no `maintain` worker or scheduled `cleanup` runs), and closing
   * should not silently leave data behind; a caller that has a cleanup schedule chooses to abandon.
   */
  backgroundCleanup?: "wait" | "abandon";
}

/**
 * Opens a ledger on a database (migrating it unless `migrate: false`).
 *
 * @example
 * ```ts
 * const ledger = await openLedger({ database: process.env.SHARDLEDGER_DATABASE_URL ?? "pglite:./.shardledger/db" })
 * ```
 */
export async function openLedger(options: LedgerOptions): Promise<Ledger> {
  // Settings are checked before anything is opened: bad input opens nothing.
  archiveAfterMsOf(options);
  const database = await openDatabase(options.database, {
    ...(options.schema !== undefined ? { schema: options.schema } : {}),
    ...(options.poolSize !== undefined ? { poolSize: options.poolSize } : {}),
  });
  return openLedgerOn(database, options);
}

/**
 * Opens a ledger on a database already opened by {@link openDatabase}, which the ledger then owns
 * (its `close()` closes it, also when migrating fails). For the CLI, which opens the database with
 * its own connection settings and checks the schema before the ledger exists.
 *
 * @internal
 * @example
 * ```ts
 * const ledger = await openLedgerOn(await openDatabase("pglite:memory", { poolSize: 4 }), { migrate: true })
 * ```
 */
export async function openLedgerOn(database: Database, options: LedgerSettings): Promise<Ledger> {
  try {
    archiveAfterMsOf(options);
    if (options.migrate !== false) await migrateToLatest(database.db, database.schema);
  } catch (e) {
    await database.close();
    throw e;
  }
  return new LedgerImpl(database, options);
}

/** The ledger's `archiveAfter` in milliseconds; a `ValidationError` names the field. */
function archiveAfterMsOf(options: Pick<LedgerSettings, "archiveAfter">): number {
  return options.archiveAfter === undefined
    ? DEFAULT_ARCHIVE_AFTER_MS
    : parseWithSchema(durationSchema({ allowZero: true }), options.archiveAfter, "archiveAfter");
}

/** What the ledger needs beyond its open database. */
type LedgerSettings = Omit<LedgerOptions, "database" | "schema" | "poolSize">;

class LedgerImpl implements Ledger {
  readonly #database: Database;
  readonly #log: PgEventLog;
  readonly #queries: ProjectionQueries;
  readonly #executor: RunExecutor;
  readonly #clock: () => Date;
  readonly #options: LedgerSettings;
  readonly #stores = new Map<string, ObjectStore>();
  /** Dataset roots by id, parsed (a root never changes once registered). */
  readonly #roots = new Map<string, DatasetRoot>();
  readonly #maintenance: MaintenanceService;
  readonly #background = new Set<Promise<unknown>>();
  /** Aborted by `close({ backgroundCleanup: "abandon" })`: background cleanup stops at its next safe point. */
  readonly #abandon = new AbortController();
  readonly #hot: HotLogArchive;
  readonly #archiveAfterMs: number;
  #closed: Promise<void> | undefined;

  constructor(database: Database, options: LedgerSettings) {
    this.#database = database;
    this.#options = options;
    this.#archiveAfterMs = archiveAfterMsOf(options);
    this.#clock = options.clock ?? (() => new Date());
    this.#log = createPgEventLog({
      db: database.db,
      schema: database.schema,
      projections: [ledgerProjection],
      clock: this.#clock,
      // A server's pool lets a run's next report group be sent behind the one committing.
      overlappingAppends: database.kind === "postgres",
      // A server's round trips: an append's statements go out together (see PipelinedTransaction).
      ...(database.connectPipelined ? { connectPipelined: database.connectPipelined } : {}),
    });
    this.#queries = projectionQueries(database.db, database.schema);
    this.#hot = pgHotLogArchive(this.#log);
    this.#executor = new RunExecutor(this.#log, this.#clock, options.actor ? { actor: options.actor } : {}, {
      snapshots: pgRunSnapshotStore(database.db, database.schema),
      ...(options.reportGroups ? { reportGroups: options.reportGroups } : {}),
    });
    this.#maintenance = new MaintenanceService({
      database,
      queries: this.#queries,
      execute: (command, context) => this.#executor.execute(command, context ?? {}),
      executeMany: (runId, commands, context) => this.#executor.executeMany(runId, commands, context ?? {}),
      load: (runId) => this.#executor.load(runId),
      storeFor: (dataset) => this.#store(dataset.root),
      clock: this.#clock,
      policies: {
        deletion: options.maintenance?.deletion ?? DEFAULT_MAINTENANCE_POLICIES.deletion,
        pending: options.maintenance?.pending ?? DEFAULT_MAINTENANCE_POLICIES.pending,
      },
      ...(options.sleep ? { sleep: options.sleep } : {}),
      ...(options.random ? { random: options.random } : {}),
      ...(options.log ? { log: options.log } : {}),
      ...(options.metric ? { metric: options.metric } : {}),
    });
  }

  get schema(): string {
    return this.#database.schema;
  }

  async migrate(): Promise<{ version: string }> {
    const { version } = await migrateToLatest(this.#database.db, this.#database.schema);
    return { version };
  }

  async createDataset(input: DatasetInput): Promise<DatasetView> {
    const parsed = parseDatasetInput(input);
    // One registration at a time across processes: the overlap check reads every root, and two
    // nesting roots registered side by side would each pass it against the other's absence.
    await withDatasetLock(this.#database, "registry", "roots", async () => {
      const existing = await this.#queries.dataset(parsed.datasetId);
      if (existing) {
        if (
          existing.root === parsed.root &&
          JSON.stringify(existing.policies) === JSON.stringify(parsed.policies)
        )
          return;
        throw new IllegalTransitionError(
          "createDataset",
          "registered",
          `dataset ${parsed.datasetId} is already registered with a different root or policies; change its policies with \`shardledger dataset update ${parsed.datasetId}\` (its root cannot change)`,
          { datasetId: parsed.datasetId },
        );
      }
      assertRootIsolated(parsed.datasetId, parsed.root, await this.#queries.datasets());
      await this.#log.append(
        datasetStream(parsed.datasetId),
        [{ type: "DatasetRegistered", data: parsed, metadata: this.#metadata() }],
        {
          expectedVersion: "no_stream",
        },
      );
    });
    return this.dataset(parsed.datasetId);
  }

  async updateDataset(datasetId: string, changes: DatasetPolicyChanges): Promise<DatasetView> {
    // Everything is validated before the database is touched: bad input writes nothing.
    const id = parseWithSchema(idSchema, datasetId, "datasetId");
    const policies = parsePolicyChanges(changes);
    await this.dataset(id);
    // The publish lock serialises the dataset stream's writers (publish and rollback move the
    // pointer under it), so the expected version below only fails for a writer outside the ledger.
    await withDatasetLock(this.#database, "publish", id, async () => {
      const stream = datasetStream(id);
      // The version first, then the row: an event committed in between makes the append conflict
      // instead of being overwritten with stale policies.
      const version = await this.#log.streamVersion(stream);
      const existing = await this.dataset(id);
      const next = { ...existing.policies, ...policies };
      if (JSON.stringify(next) === JSON.stringify(existing.policies)) return;
      await this.#log.append(
        stream,
        [
          {
            type: "DatasetPoliciesChanged",
            data: { datasetId: id, policies: next },
            metadata: this.#metadata(),
          },
        ],
        { expectedVersion: version },
      );
    });
    return this.dataset(id);
  }

  async rollback(datasetId: string, toRunId: string): Promise<RollbackResult> {
    const id = parseWithSchema(idSchema, datasetId, "datasetId");
    const runId = parseWithSchema(idSchema, toRunId, "toRunId");
    return rollbackRun({ ...this.#publishDeps(), metadata: this.#metadata() }, id, runId);
  }

  status(datasetId: string): Promise<DatasetStatus>;
  status(): Promise<DatasetStatus[]>;
  async status(datasetId?: string): Promise<DatasetStatus | DatasetStatus[]> {
    if (datasetId !== undefined) {
      const dataset = await this.dataset(parseWithSchema(idSchema, datasetId, "datasetId"));
      return this.#statusOf(dataset);
    }
    const all: DatasetStatus[] = [];
    for (const dataset of await this.datasets()) all.push(await this.#statusOf(dataset));
    return all;
  }

  async #statusOf(dataset: DatasetView): Promise<DatasetStatus> {
    const facts = await this.#queries.statusFacts(dataset.datasetId, this.#clock());
    return {
      datasetId: dataset.datasetId,
      root: dataset.root,
      policies: dataset.policies,
      safetyWindowHold: dataset.safetyWindowHold ?? null,
      current:
        dataset.currentRunId === null
          ? null
          : {
              runId: dataset.currentRunId,
              manifestUrl: dataset.currentManifestUrl,
              since: dataset.currentMovedAt,
            },
      ...facts,
    };
  }

  async dataset(datasetId: string): Promise<DatasetView> {
    const found = await this.#queries.dataset(datasetId);
    if (!found) throw new NotFoundError("dataset", datasetId);
    return this.#present(found);
  }

  async datasets(): Promise<DatasetView[]> {
    return (await this.#queries.datasets()).map((d) => this.#present(d));
  }

  /** A dataset as callers see it: a safety-window hold only while it lasts. */
  #present(view: DatasetView): DatasetView {
    const hold = view.safetyWindowHold ?? null;
    const active = hold !== null && this.#clock().getTime() < hold.until.getTime();
    return { ...view, safetyWindowHold: active ? hold : null };
  }

  async startRun(input: { datasetId: string; numShards: number; runId?: string }): Promise<StartedRun> {
    const parsed = parseInput(startRunInputSchema, input);
    await this.dataset(parsed.datasetId);
    const runId = parsed.runId ?? generateRunId(this.#clock());
    const { state } = await this.#executor.execute({
      type: "start",
      runId,
      datasetId: parsed.datasetId,
      numShards: parsed.numShards,
    });
    return { runId, datasetId: state.datasetId as string, numShards: state.numShards, status: state.status };
  }

  async heartbeat(runId: string): Promise<RunView> {
    await this.#executor.execute({
      type: "heartbeat",
      runId: parseInput(attemptInputSchema.shape.runId, runId),
    });
    return (await this.run(runId)).run;
  }

  attemptStarted(input: AttemptInput): Promise<AttemptResult> {
    return this.#report("attemptStarted", input);
  }

  attemptSucceeded(input: AttemptInput): Promise<AttemptResult> {
    return this.#report("attemptSucceeded", input);
  }

  attemptFailed(input: AttemptInput & { error?: string }): Promise<AttemptResult> {
    return this.#report("attemptFailed", input);
  }

  async #report(
    type: "attemptStarted" | "attemptSucceeded" | "attemptFailed",
    input: AttemptInput & { error?: string },
  ): Promise<AttemptResult> {
    const parsed =
      type === "attemptFailed"
        ? parseInput(attemptFailedInputSchema, input)
        : parseInput(attemptInputSchema, input);
    return this.#submitReport(type, parsed);
  }

  /** A validated report, through the run's group commit. */
  async #submitReport(
    type: "attemptStarted" | "attemptSucceeded" | "attemptFailed",
    parsed: z.output<typeof attemptInputSchema> & { error?: string },
  ): Promise<AttemptResult> {
    // Group commit: concurrent reports of one run are decided together and stored by one append
    // (RunExecutor.reportAll, as a batch of one); this caller's answer is read off the state right
    // after its own report.
    const [outcome] = await this.#executor.reportAll([reportCommand(type, parsed)], this.#reportOptions);
    if (!outcome?.ok) throw outcome?.error;
    return outcome.view;
  }

  /**
   * How every attempt report is completed and answered, one object for all of them (a batch of a
   * thousand reports shares it: RunExecutor.reportAll).
   */
  readonly #reportOptions = {
    // Safety rail at the door: the url is reduced to its one canonical spelling here, once, and
    // refused unless it lies inside this run's own data area — so nothing downstream can ever be
    // asked to delete a manifest, _CURRENT, another run's data or anything outside the root.
    // Done on the state the executor restores for the decision (the run is read once); the
    // dataset's root is read once per ledger, and answered at once when known.
    prepare: (c: ReportCommand, state: RunState): ReportCommand | Promise<ReportCommand> => {
      const reported = c.url;
      if (reported === undefined || reported === null || state.datasetId === null) return c;
      const root = this.#roots.get(state.datasetId);
      if (root !== undefined) return { ...c, url: attemptUrlOf(root, c.runId, reported) };
      return this.#rootOf(state.datasetId).then((r) => ({ ...c, url: attemptUrlOf(r, c.runId, reported) }));
    },
    // `c` is the report as sent (its url not yet canonical): the answer falls back to it only for
    // an attempt the state does not hold.
    view: (state: RunState, c: ReportCommand): AttemptResult => {
      // The ledger's commands carry the parsed id, a decimal string (reportCommand).
      const taskAttemptId =
        c.taskAttemptId === undefined || c.taskAttemptId === null ? null : String(c.taskAttemptId);
      const attempt = state.attempts.get(attemptKey(c.shard, c.attempt, taskAttemptId));
      return {
        runId: c.runId,
        shard: c.shard,
        attempt: c.attempt,
        taskAttemptId,
        url: attempt?.url ?? c.url ?? null,
        status: attempt?.status ?? "STARTED",
      };
    },
  } satisfies SharedReportOptions<AttemptResult>;

  /**
   * A dataset's root, read once per ledger: a root never changes after registration (there is no
   * event that could change it), and a group of a thousand reports must not query it a thousand
   * times.
   */
  async #rootOf(datasetId: string): Promise<DatasetRoot> {
    let root = this.#roots.get(datasetId);
    if (root === undefined) {
      root = parseDatasetRoot((await this.dataset(datasetId)).root);
      this.#roots.set(datasetId, root);
    }
    return root;
  }

  async reportAttempts(reports: readonly AttemptReport[]): Promise<AttemptReportResult[]> {
    if (!Array.isArray(reports)) throw new ValidationError("reports", "must be an array of attempt reports");
    if (reports.length > MAX_REPORTS_PER_CALL) {
      throw new ValidationError(
        "reports",
        `at most ${MAX_REPORTS_PER_CALL} reports per call, got ${reports.length}; split the batch`,
      );
    }
    // Every item is enqueued before any is decided, so the batch joins its run's group commit as a
    // whole (a thousand reports of one run: one append), and is answered as a whole.
    const results: AttemptReportResult[] = new Array(reports.length);
    const commands: ReportCommand[] = [];
    const at: number[] = [];
    for (let index = 0; index < reports.length; index++) {
      try {
        commands.push(reportCommandOf(reports[index]));
        at.push(index);
      } catch (e) {
        results[index] = { index, ok: false, error: errorBody(e).error };
      }
    }
    const outcomes = await this.#executor.reportAll(commands, this.#reportOptions);
    for (const [k, outcome] of outcomes.entries()) {
      const index = at[k] as number;
      results[index] = outcome.ok
        ? { index, ok: true, attempt: outcome.view }
        : { index, ok: false, error: errorBody(outcome.error).error };
    }
    return results;
  }

  async publish(runId: string): Promise<PublishResult> {
    const id = parseInput(attemptInputSchema.shape.runId, runId);
    const result = await publishRun(this.#publishDeps(), id);
    if (this.#options.cleanupAfterPublish !== false) this.#cleanupInBackground(id);
    return result;
  }

  #publishDeps(): PublishDeps {
    return {
      database: this.#database,
      log: this.#log,
      executor: this.#executor,
      queries: this.#queries,
      storeFor: (dataset) => this.#store(dataset.root),
      clock: this.#clock,
    };
  }

  /** Loser cleanup after a publish: best effort, never awaited by publish, errors only logged. */
  #cleanupInBackground(runId: string): void {
    const task = (async () => {
      const state = await this.#executor.load(runId);
      if (state.datasetId && !this.#abandon.signal.aborted) {
        await this.#maintenance.cleanup({ datasetId: state.datasetId, signal: this.#abandon.signal });
      }
    })().catch((e: unknown) => {
      this.#options.log?.({
        level: "warn",
        msg: "cleanup after publish did not finish",
        runId,
        error: String(e),
      });
    });
    this.#background.add(task);
    void task.finally(() => this.#background.delete(task));
  }

  cleanup(options: CleanupOptions = {}): Promise<CleanupReport> {
    return this.#maintenance.cleanup(options);
  }

  gc(
    datasetId: string,
    options: { dryRun?: boolean; signal?: AbortSignal; concurrency?: number } = {},
  ): Promise<GcReport> {
    return this.#maintenance.gc(datasetId, options);
  }

  retryFailed(input: { datasetId: string; runId?: string }): Promise<RetryFailedReport> {
    return this.#maintenance.retryFailed(input);
  }

  async archive(
    options: { datasetId?: string; dryRun?: boolean; after?: string | number; signal?: AbortSignal } = {},
  ): Promise<ArchiveReport> {
    const datasetId =
      options.datasetId === undefined ? undefined : parseWithSchema(idSchema, options.datasetId, "datasetId");
    const afterMs =
      options.after === undefined
        ? undefined
        : parseWithSchema(durationSchema({ allowZero: true }), options.after, "after");
    if (datasetId !== undefined) await this.dataset(datasetId);
    return archive(this.#archiveDeps(), {
      ...(datasetId !== undefined ? { datasetId } : {}),
      ...(afterMs !== undefined ? { afterMs } : {}),
      ...(options.dryRun ? { dryRun: true } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
  }

  #archiveDeps(): ArchiveDeps {
    return {
      database: this.#database,
      hot: this.#hot,
      queries: this.#queries,
      storeFor: (dataset) => this.#store(dataset.root),
      clock: this.#clock,
      afterMs: this.#archiveAfterMs,
      metadata: this.#metadata(),
      upcast: (e) => ({ ...e, ...this.#log.catalogue.upcast(e.type, e.schemaVersion, e.data) }),
      ...(this.#options.log ? { log: this.#options.log } : {}),
      ...(this.#options.archiveHook ? { hook: this.#options.archiveHook } : {}),
    };
  }

  async failRun(runId: string, reason: string): Promise<RunView> {
    const parsed = parseInput(failRunInputSchema, { runId, reason });
    await this.#executor.execute({
      type: "fail",
      runId: parsed.runId,
      cause: "writer_abort",
      reason: parsed.reason,
    });
    return (await this.run(parsed.runId)).run;
  }

  async runs(datasetId: string): Promise<RunView[]> {
    // A filter naming nothing is a wrong id, not an empty answer ("no runs" would be a lie).
    await this.dataset(datasetId);
    return this.#queries.runs(datasetId);
  }

  async run(runId: string): Promise<{ run: RunView; attempts: AttemptView[]; winners: WinnerView[] }> {
    const found = await this.#queries.run(runId);
    if (!found) throw await this.#runNotFound(runId);
    return found;
  }

  /**
   * A run with no rows: never started, or pruned (its rows went with it; its events remain, in the
   * log or archived). The error says which, and where the run's history is.
   */
  async #runNotFound(runId: string): Promise<NotFoundError> {
    const events = `\`shardledger events --stream ${runId}\``;
    const state = await this.#executor.load(runId);
    if (state.status === "PRUNED") {
      const when = state.prunedAt ? ` at ${state.prunedAt.toISOString()}` : "";
      return new NotFoundError("run", runId, {
        message: `run ${runId} was pruned (${state.pruneReason ?? "pruned"})${when}; its rows went with it, its events remain: ${events}`,
        details: { state: "PRUNED", pruneReason: state.pruneReason },
      });
    }
    if (state.status === "NONE" && (await this.#executor.archivedRefusal(runId, "run")) !== null) {
      return new NotFoundError("run", runId, {
        message: `run ${runId} was pruned and its events archived; read them with ${events}`,
        details: { state: "ARCHIVED" },
      });
    }
    return new NotFoundError("run", runId);
  }

  async pendingCleanup(filter: { datasetId?: string; dueBefore?: Date } = {}): Promise<PendingCleanupItem[]> {
    if (filter.datasetId !== undefined) await this.dataset(filter.datasetId);
    return this.#queries.pendingCleanup(filter);
  }

  async retentionFloors(datasetId: string): Promise<RetentionFloor[]> {
    await this.dataset(datasetId);
    return this.#queries.retentionFloors(datasetId);
  }

  async rollups(datasetId: string): Promise<Rollup[]> {
    await this.dataset(datasetId);
    return this.#queries.rollups(datasetId);
  }

  async events(options: { stream?: string; from?: number; limit?: number } = {}): Promise<RecordedEvent[]> {
    const limit = options.limit ?? 100;
    if (!Number.isSafeInteger(limit) || limit < 1)
      throw new ValidationError("limit", "must be a positive integer");
    if (options.stream !== undefined) {
      const stream = await this.#resolveStream(options.stream);
      const from = options.from ?? 1;
      const hot = await this.#log.readStream(stream, { fromVersion: from, limit });
      // A stream that exists but whose events left the hot log is an archived run: read it through
      // its archive (verified against the Archived event; a missing or corrupt one throws).
      if (hot.length === 0 && stream.startsWith("run-")) {
        const archived = await readArchivedRun(this.#archiveDeps(), stream.slice("run-".length));
        if (archived !== null) return archived.filter((e) => e.streamVersion >= from).slice(0, limit);
      }
      return hot;
    }
    return this.#log.readAll({ after: options.from ?? 0, limit });
  }

  /** The stream a name means (see {@link streamCandidates}); one with no events is not found. */
  async #resolveStream(name: string): Promise<string> {
    const candidates = streamCandidates(name);
    for (const candidate of candidates) {
      if ((await this.#log.streamVersion(candidate)) > 0) return candidate;
    }
    throw new NotFoundError("stream", name, {
      message: `stream ${name} does not exist (looked for ${candidates.join(", ")}); give a run id, run-<runId>, or dataset:<datasetId>`,
    });
  }

  async audit(options: { onProgress?: (events: number) => void; deep?: boolean } = {}): Promise<AuditReport> {
    const projections = await auditProjections(this.#log, {
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    let report: AuditReport = projections;
    if (options.deep) {
      const archives: ArchiveAuditReport = await auditArchives(this.#archiveDeps());
      report = { ...projections, match: projections.match && archives.problems.length === 0, archives };
    }
    // Recorded where `status` finds it: one row beside the projection version, not an event (an
    // audit changes nothing the log describes).
    await sql`UPDATE ${sql.id(this.#database.schema, "projection_state")}
      SET last_audit_at = ${this.#clock().toISOString()}::timestamptz, last_audit_events = ${report.events},
        last_audit_match = ${report.match}, last_audit_differences = ${report.differences.length},
        last_audit_deep = ${options.deep === true},
        last_audit_archive_problems = ${report.archives ? report.archives.problems.length : null}::integer
      WHERE name = 'ledger'`.execute(this.#database.db);
    return report;
  }

  rebuild(
    options: { onProgress?: (events: number) => void } = {},
  ): Promise<{ events: number; version: number }> {
    return rebuildProjections(this.#log, options);
  }

  async close(options: CloseOptions = {}): Promise<void> {
    const mode = options.backgroundCleanup ?? "wait";
    if (mode !== "wait" && mode !== "abandon") {
      throw new ValidationError(
        "backgroundCleanup",
        `must be "wait" or "abandon" (got ${JSON.stringify(mode)})`,
      );
    }
    // A second close (say, "abandon" from a signal handler while a "wait" close is under way) may
    // still cut the cleanup short; the connections are released once.
    if (mode === "abandon") this.#abandon.abort();
    this.#closed ??= (async () => {
      // Even when abandoned, the pass is awaited: it stops at its next safe point and records where.
      while (this.#background.size > 0) await Promise.allSettled([...this.#background]);
      // Due run snapshots are taken and written before the connections go; an abandoning close
      // (a signal) only lets the writes under way finish.
      await this.#executor.settle({ takeDue: mode !== "abandon" });
      for (const store of this.#stores.values()) await store.close?.();
      this.#stores.clear();
      await this.#database.close();
    })();
    return this.#closed;
  }

  /** @internal the run state as the machine folds it (tests and maintenance). */
  loadRunState(runId: string): Promise<RunState> {
    return this.#executor.load(runId);
  }

  /** @internal executes any run command (maintenance and tests). */
  executeRunCommand(
    command: RunCommand,
    context: { failedRetentionMs?: number; fence?: AppendFence } = {},
  ): Promise<{ state: RunState; events: RecordedEvent[] }> {
    return this.#executor.execute(command, context);
  }

  #store(root: string): ObjectStore {
    let store = this.#stores.get(root);
    if (!store) {
      store = this.#options.objectStore
        ? this.#options.objectStore(root)
        : openObjectStore(root, this.#options.s3 ? { s3: this.#options.s3 } : {});
      this.#stores.set(root, store);
    }
    return store;
  }

  #metadata() {
    return this.#options.actor ? { actor: this.#options.actor } : {};
  }
}

/** A run id when the caller gives none: sortable by start time, unique by its random tail. */
function generateRunId(now: Date): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z");
  return `run-${stamp}-${randomBytes(3).toString("hex")}`;
}

/** The group-committed command of a validated report. */
function reportCommand(
  type: "attemptStarted" | "attemptSucceeded" | "attemptFailed",
  parsed: z.output<typeof attemptInputSchema> & { error?: string },
): ReportCommand {
  const base = {
    runId: parsed.runId,
    shard: parsed.shard,
    attempt: parsed.attempt,
    taskAttemptId: parsed.taskAttemptId ?? null,
    url: parsed.url ?? null,
  };
  return type === "attemptFailed" ? { type, ...base, error: parsed.error ?? "" } : { type, ...base };
}

/** One item of {@link Ledger.reportAttempts}, validated (throws naming the field) and made a command. */
function reportCommandOf(report: unknown): ReportCommand {
  const { kind, ...input } =
    acceptAttemptReport(report) ?? parseWithSchema(attemptReportSchema, report, "report");
  const type =
    kind === "started" ? "attemptStarted" : kind === "succeeded" ? "attemptSucceeded" : "attemptFailed";
  return reportCommand(type, input);
}
