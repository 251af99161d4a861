/**
 * `cleanup --json`: what was deleted, what failed and stays pending, what was planned.
 *
 * @example
 * ```ts
 * const report: CleanupReport = await ledger.cleanup({ datasetId: "events" })
 * for (const f of report.failed) console.warn(`${f.url}: ${f.error} (try ${f.tries}); next at ${report.nextDueAt}`)
 * ```
 */
export interface CleanupReport {
  deleted: string[];
  failed: { url: string; error: string; tries: number }[];
  planned: string[];
  /** Datasets skipped because another maintenance pass holds their lock. */
  skipped: string[];
  /** Datasets whose pass lost its lease midway and stopped before its next request (fencing). */
  leaseLost: string[];
  /**
   * Items of the selected datasets still in the pending set after the pass (planned, failed and
   * waiting for their retry, or exhausted), whether or not this pass tried them.
   */
  pending: number;
  /** ISO time of the earliest next retry among the waiting (failed, not exhausted) items, or null. */
  nextDueAt: string | null;
  /** True when nothing was deleted or recorded: `planned` is what a real pass would delete. */
  dryRun: boolean;
  /**
   * Per dataset the concurrent engine cleaned (absent when it cleaned none): its concurrency, the
   * delete rate it settled at, its requests.
   */
  throughput?: PassThroughput[];
}

/**
 * How a concurrent pass went on one dataset: `settledRate` is the delete rate (keys/s) its
 * adaptive limiter ended at, `throttled` the requests (or keys) the store answered SlowDown/503.
 *
 * @example
 * ```ts
 * const t: PassThroughput = { datasetId: "sales", concurrency: 16, settledRate: 3120, throttled: 12, listRequests: 4000, listSeconds: 98.2, deleteRequests: 2000, deletedObjects: 100000 }
 * ```
 */
export interface PassThroughput {
  datasetId: string;
  concurrency: number;
  settledRate: number;
  throttled: number;
  listRequests: number;
  /** Summed duration of the listings, in seconds (they overlap when prefixes run concurrently). */
  listSeconds: number;
  deleteRequests: number;
  deletedObjects: number;
}

/**
 * `gc --json`: one entry per run acted on. An action's `kind` is what gc did to the run, in the
 * vocabulary of the `Pruned` event and the rollups: `failed_retention` (a FAILED run past the
 * failed-retention floor), `keep_runs`, `retention` (each pruned with that reason), `fail_stale`
 * (a silent run marked FAILED, nothing deleted) and `orphan` (unreported files of a live run).
 *
 * @example
 * ```ts
 * const plan: GcReport = await ledger.gc("events", { dryRun: true })
 * const wouldPrune = plan.actions.filter((a) => a.kind === "retention").map((a) => a.runId)
 * ```
 */
export interface GcReport {
  actions: { kind: string; runId: string; urls: string[] }[];
  /** Deletions that failed; their runs are not pruned until a later pass deletes them. */
  failed: { url: string; error: string; tries: number }[];
  /** Runs gc deliberately kept, and why. */
  protected: { runId: string; why: string }[];
  /** True when nothing was deleted or recorded: `actions` is what a real pass would do. */
  dryRun: boolean;
  /** What the pass cost the store (absent when it sent nothing): listings, deletes, the settled rate. */
  throughput?: Omit<PassThroughput, "datasetId" | "concurrency">;
}

/**
 * `retry-failed --json`.
 *
 * @example
 * ```ts
 * const { matched, retried }: RetryFailedReport = await ledger.retryFailed({ datasetId: "events", runId: "r1" })
 * ```
 */
export interface RetryFailedReport {
  /** Distinct failed runs and exhausted cleanup items found (one run counts once). */
  matched: number;
  /** Of those, how many were reopened or re-queued (they were inside the failed floor). */
  retried: number;
  /** Failed items that had passed the floor and were pruned before this call. */
  prunedPastRetention: number;
}

/**
 * A structured log record (to stderr in the CLI, to your logger when embedded).
 *
 * @example
 * ```ts
 * const log = (record: LogRecord) => console.error(JSON.stringify(record))
 * const ledger = await openLedger({ database: "pglite:memory", log })
 * ```
 */
export interface LogRecord {
  level: "info" | "warn" | "error";
  msg: string;
  [field: string]: unknown;
}

/**
 * A counter emitted by maintenance passes (deleted, failed, pending …) per dataset.
 *
 * @example
 * ```ts
 * const totals = new Map<string, number>()
 * const metric = (m: MetricRecord) => totals.set(`${m.datasetId}:${m.name}`, (totals.get(`${m.datasetId}:${m.name}`) ?? 0) + m.value)
 * const ledger = await openLedger({ database: "pglite:memory", metric })
 * ```
 */
export interface MetricRecord {
  name: "cleanup.deleted" | "cleanup.failed" | "cleanup.pending" | "gc.pruned" | "gc.failed_stale";
  value: number;
  datasetId: string;
}

/**
 * `archive --json`: the pruned runs whose events moved from the hot log to their dataset's
 * `_archive/` (or, in a dry run, would move), the runs that could not be archived this time and
 * why (`failed`: an error; `deferred`: a publish held the dataset's pointer lock at the last step),
 * and the datasets skipped because another maintenance pass held them.
 *
 * @example
 * ```ts
 * const report: ArchiveReport = await ledger.archive({ datasetId: "events" })
 * for (const a of report.archived) console.log(a.runId, a.events, a.archiveUrl)
 * ```
 */
export interface ArchiveReport {
  archived: { datasetId: string; runId: string; archiveUrl: string; events: number; checksum: string }[];
  failed: { datasetId: string; runId: string; error: string }[];
  deferred: { datasetId: string; runId: string; why: string }[];
  skipped: string[];
  dryRun: boolean;
}

/**
 * What `audit --deep` found wrong with one archive: `missing` (no marker, or no content under
 * it), `corrupt` (a checksum or count that disagrees with the marker or the `Archived` event, or
 * content that does not parse), `unreadable` (the store failed), `unverifiable` (an `Archived`
 * event of version 1, which names no dataset or checksum), or `hot_events_remain` (the hot log
 * still holds events of a stream recorded as archived).
 *
 * @example
 * ```ts
 * const problem: ArchiveProblem = { runId: "r1", datasetId: "events", archiveUrl: "file:///lake/events/_archive/run-r1.jsonl", kind: "corrupt", reason: "checksum differs" }
 * ```
 */
export interface ArchiveProblem {
  runId: string;
  datasetId: string | null;
  archiveUrl: string;
  kind: "missing" | "corrupt" | "unreadable" | "unverifiable" | "hot_events_remain";
  reason: string;
}

/**
 * The archive part of a deep audit: how many archives were checked against their `Archived`
 * event, how many events they hold, and every problem (none is skipped).
 *
 * @example
 * ```ts
 * const { archives } = await ledger.audit({ deep: true })
 * if (archives && archives.problems.length > 0) console.error(archives.problems)
 * ```
 */
export interface ArchiveAuditReport {
  checked: number;
  events: number;
  problems: ArchiveProblem[];
}
