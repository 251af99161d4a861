import type { SafetyWindowHold } from "../datasets/safety-window.js";
import type { AttemptStatus } from "../machines/attempt-machine.js";
import type { RunStatus as MachineRunStatus } from "../machines/run-machine.js";

/**
 * What the projection tables show, as typed views: the shapes the queries
 * (src/adapters/postgres/projection-queries.ts) return and the domain (planners, status) reads.
 */

/**
 * Run status as the registry shows it: the run machine's statuses (src/machines/run-machine.ts)
 * that a registry row can have (a run with no events has no row, a pruned run leaves none).
 *
 * @example
 * ```ts
 * const done = (status: RunStatus) => status === "SUCCEEDED" || status === "FAILED"
 * ```
 */
export type RunStatus = Exclude<MachineRunStatus, "NONE" | "PRUNED">;
/** Attempt status (the attempt machine's): what it reported, how publish classified it, what cleanup did. */
export type { AttemptStatus };

/**
 * A dataset and its policies (durations in milliseconds).
 *
 * @example
 * ```ts
 * const dataset: DatasetView = await ledger.dataset("events")
 * console.log(dataset.root, dataset.policies.keepRuns)
 * ```
 */
export interface DatasetView {
  datasetId: string;
  root: string;
  policies: {
    keepRuns: number;
    retentionMs: number;
    failedRetentionMs: number;
    staleAfterMs: number;
    safetyWindowMs: number;
  };
  currentRunId: string | null;
  currentManifestUrl: string | null;
  currentMovedAt: Date | null;
  registeredAt: Date;
  updatedAt: Date;
  /**
   * Set after a policy change shortened the safety window: the longer window still in force until
   * `until` (see `effectiveSafetyWindowMs`). The ledger's `dataset()` shows it only while it lasts.
   * Optional so that hand-made views (tests, tools) may leave it out: absent means none.
   */
  safetyWindowHold?: SafetyWindowHold | null;
}

/**
 * One row of the run registry.
 *
 * @example
 * ```ts
 * const runs: RunView[] = await ledger.runs("events")
 * const current = runs.find((r) => r.current)
 * ```
 */
export interface RunView {
  runId: string;
  datasetId: string;
  status: RunStatus;
  numShards: number;
  current: boolean;
  publishProgress: "none" | "winners_selected" | "manifest_published" | "succeeded";
  manifestUrl: string | null;
  startedAt: Date;
  updatedAt: Date;
  heartbeatAt: Date;
  succeededAt: Date | null;
  failedAt: Date | null;
  replacedAt: Date | null;
  failureCause: string | null;
  failureReason: string | null;
  missingShards: number[] | null;
  reopenedCount: number;
  attempts: Record<
    "total" | "started" | "succeeded" | "failed" | "winner" | "loser" | "cleanupPending" | "deleted",
    number
  >;
}

/**
 * One attempt of a run.
 *
 * @example
 * ```ts
 * const { attempts } = await ledger.run(runId)
 * const failed = attempts.filter((a: AttemptView) => a.status === "FAILED")
 * ```
 */
export interface AttemptView {
  shard: number;
  attempt: number;
  taskAttemptId: string | null;
  url: string | null;
  status: AttemptStatus;
  outcome: "STARTED" | "SUCCEEDED" | "FAILED";
  error: string | null;
  reportedAt: Date;
  updatedAt: Date;
}

/**
 * The winner of one shard.
 *
 * @example
 * ```ts
 * const { winners } = await ledger.run(runId)
 * const urls = winners.map((w: WinnerView) => w.url)
 * ```
 */
export interface WinnerView {
  shard: number;
  attempt: number;
  taskAttemptId: string | null;
  url: string | null;
}

/**
 * One item of the pending-cleanup set.
 *
 * @example
 * ```ts
 * const items: PendingCleanupItem[] = await ledger.pendingCleanup({ datasetId: "events" })
 * const stuck = items.filter((i) => i.state === "exhausted").map((i) => `${i.url}: ${i.lastErrorCode}`)
 * ```
 */
export interface PendingCleanupItem {
  runId: string;
  datasetId: string;
  url: string;
  reason: string;
  state: "planned" | "failed" | "exhausted";
  tries: number;
  lastErrorCode: string | null;
  lastErrorMessage: string | null;
  transient: boolean | null;
  plannedAt: Date;
  firstFailureAt: Date | null;
  lastFailureAt: Date | null;
  nextRetryAt: Date | null;
}

/**
 * What the failed-retention floor protects, and until when.
 *
 * @example
 * ```ts
 * const floors: RetentionFloor[] = await ledger.retentionFloors("events")
 * const soonest = floors[0]?.protectedUntil
 * ```
 */
export interface RetentionFloor {
  datasetId: string;
  kind: "failed_run" | "failed_cleanup";
  runId: string;
  url: string | null;
  failedAt: Date;
  protectedUntil: Date;
}

/**
 * Counts of what was pruned, per dataset and reason.
 *
 * @example
 * ```ts
 * const rollups: Rollup[] = await ledger.rollups("events")
 * const prunedRuns = rollups.reduce((n, r) => n + r.prunedRuns, 0)
 * ```
 */
export interface Rollup {
  datasetId: string;
  reason: string;
  prunedRuns: number;
  prunedAttempts: number;
  prunedFailedItems: number;
  lastPrunedAt: Date;
}

/**
 * What the projections (and the maintenance and audit records beside them) say about one dataset
 * at one moment, for `ledger.status`. Counts are aggregated in SQL; the floor lists the first
 * {@link STATUS_FLOOR_ITEMS} items to leave it.
 *
 * @example
 * ```ts
 * const facts: DatasetStatusFacts = await ledger.status("events")
 * ```
 */
export interface DatasetStatusFacts {
  runs: {
    total: number;
    started: number;
    publishing: number;
    succeeded: number;
    failed: number;
    pruned: number;
  };
  pending: { total: number; dueNow: number; waiting: number; exhausted: number; nextRetryAt: Date | null };
  floor: { total: number; nextLeavesAt: Date | null; items: RetentionFloor[] };
  lastMaintenance: MaintenancePassRecord | null;
  lastAudit: AuditRecord | null;
}

/**
 * The last maintenance pass over a dataset that did work (not a dry run), as the pass recorded it
 * beside its lease: what it was, when, and how it ended. `failures`: some deletions failed and
 * stay pending; `error`: the pass stopped on an unexpected error (`error` says which);
 * `interrupted`: it was stopped by a signal after its current batch.
 *
 * @example
 * ```ts
 * const last: MaintenancePassRecord = { kind: "gc", holder: "host/pid-1/ab12cd34", startedAt, finishedAt, outcome: "ok", deleted: 3, failed: 0, pruned: 1, error: null }
 * ```
 */
export interface MaintenancePassRecord {
  kind: "cleanup" | "gc";
  holder: string;
  startedAt: Date;
  finishedAt: Date;
  outcome: "ok" | "failures" | "error" | "interrupted";
  deleted: number;
  failed: number;
  pruned: number;
  error: string | null;
}

/**
 * The last `audit` of the projections (global: the log is one), as recorded when it finished.
 *
 * @example
 * ```ts
 * const last: AuditRecord = { at: new Date(), events: 1234, match: true, differences: 0, deep: false, archiveProblems: null }
 * ```
 */
export interface AuditRecord {
  at: Date;
  events: number;
  match: boolean;
  differences: number;
  /** Whether it was `audit --deep` (the archives checked too). */
  deep: boolean;
  /** How many archive problems a deep audit found; null for an audit that did not look. */
  archiveProblems: number | null;
}

/**
 * How many floor items `statusFacts` lists (the soonest to leave first); `total` counts them all.
 *
 * @example `if (facts.floor.total > STATUS_FLOOR_ITEMS) console.log("and more")`
 */
export const STATUS_FLOOR_ITEMS = 100;
