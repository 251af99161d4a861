import { sql } from "kysely";
import type { Database } from "../adapters/postgres/database.js";
import { type MaintenanceLease, withMaintenanceLease } from "../adapters/postgres/maintenance-lease.js";
import { effectiveSafetyWindowMs } from "../datasets/safety-window.js";
import { isLeaseLostError, isShardledgerError, NotFoundError } from "../errors.js";
import type { CleanupReason, PruneReason } from "../events/catalogue.js";
import type { AppendFence } from "../events/event-log.js";
import type { RunCommand } from "../machines/run-commands.js";
import type { RunState } from "../machines/run-state.js";
import { parseCleanupThroughput } from "../maintenance/cleanup-throughput.js";
import { coalescedCheck } from "../maintenance/coalesced-check.js";
import type { DeletionPurpose } from "../maintenance/deletion-guard.js";
import { type GcAction, planGc, type RunUrls } from "../maintenance/gc-planner.js";
import { planLoserCleanup } from "../maintenance/loser-planner.js";
import { deletePrefix, type PrefixCleanupResult } from "../maintenance/prefix-deleter.js";
import {
  DEFAULT_RETRY_POLICY,
  isExhausted,
  nextRetryAt,
  type RetryPolicy,
} from "../maintenance/retry-policy.js";
import { ThrottledStore } from "../maintenance/throttled-store.js";
import type {
  DatasetView,
  MaintenancePassRecord,
  PendingCleanupItem,
  ProjectionQueries,
} from "../projections/queries.js";
import { keyUnderRoot, objectKeyOfUrl, urlForKey } from "../storage/dataset-url.js";
import { CURRENT_KEY, manifestKey, runDataPrefix } from "../storage/object-layout.js";
import { classifyStoreError, type ObjectStore } from "../storage/object-store.js";
import { type CleanupWork, cleanConcurrently } from "./concurrent-cleanup.js";
import { PassGuard } from "./pass-guard.js";

/** `cleanup --json`: what was deleted, what failed and stays pending, what was planned. */
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
 * The `kind` a gc action shows: the reason its run is pruned with (so `gc --json`, the `Pruned`
 * event and `rollups` say the same word), or what it does when it prunes nothing.
 */
function reportedKind(action: GcAction): string {
  return action.pruneReason ?? action.kind;
}

/** `retry-failed --json`. */
export interface RetryFailedReport {
  /** Distinct failed runs and exhausted cleanup items found (one run counts once). */
  matched: number;
  /** Of those, how many were reopened or re-queued (they were inside the failed floor). */
  retried: number;
  /** Failed items that had passed the floor and were pruned before this call. */
  prunedPastRetention: number;
}

/** A structured log record (to stderr in the CLI, to your logger when embedded). */
export interface LogRecord {
  level: "info" | "warn" | "error";
  msg: string;
  [field: string]: unknown;
}

/** A counter emitted by maintenance passes (deleted, failed, pending …) per dataset. */
export interface MetricRecord {
  name: "cleanup.deleted" | "cleanup.failed" | "cleanup.pending" | "gc.pruned" | "gc.failed_stale";
  value: number;
  datasetId: string;
}

/**
 * How maintenance retries. `deletion` bounds the retries inside one pass (short backoff);
 * `pending` spaces the passes of an item that keeps failing and decides when it is exhausted
 * (its `tries` count deletion rounds over all passes).
 */
export interface MaintenancePolicies {
  deletion: RetryPolicy;
  pending: RetryPolicy;
}

/** Defaults: 5 rounds per pass from 200 ms; between passes from 30 s up to 1 h; exhausted after 20 rounds. */
export const DEFAULT_MAINTENANCE_POLICIES: MaintenancePolicies = Object.freeze({
  deletion: DEFAULT_RETRY_POLICY,
  pending: Object.freeze({ maxTries: 20, baseDelayMs: 30_000, maxDelayMs: 3_600_000 }),
});

/** What the maintenance service needs from the ledger. @internal */
export interface MaintenanceDeps {
  database: Database;
  queries: ProjectionQueries;
  execute(
    command: RunCommand,
    context?: { failedRetentionMs?: number; fence?: AppendFence },
  ): Promise<{ state: RunState }>;
  /** Several commands of one run in one append (batched planning and outcomes). */
  executeMany?(
    runId: string,
    commands: readonly RunCommand[],
    context?: { fence?: AppendFence },
  ): Promise<unknown>;
  load(runId: string): Promise<RunState>;
  storeFor(dataset: DatasetView): ObjectStore;
  clock(): Date;
  policies: MaintenancePolicies;
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
  log?: (record: LogRecord) => void;
  metric?: (record: MetricRecord) => void;
}

/** Options of {@link MaintenanceService.cleanup}. */
export interface CleanupOptions {
  datasetId?: string;
  dryRun?: boolean;
  retryNow?: boolean;
  signal?: AbortSignal;
  /** Prefixes in flight (1: the sequential pass). Validated: an integer 1…256; default 16. */
  concurrency?: number;
  /** The delete rate (keys/s) the adaptive limiter starts at. Validated: > 0; default 1,000. */
  initialRate?: number;
}

type WorkItem = CleanupWork;

/** Batch deletes in flight while a run's whole area is listed on (gc of a pruned or stale run). */
const AREA_PIPELINE = 4;

/** The deletion-guard purpose of a cleanup reason. */
function purposeOf(reason: CleanupReason): DeletionPurpose {
  return reason === "failed_retention" ? "stale" : reason;
}

/**
 * Whether a cleanup item is one object (a manifest, an orphan file) rather than a prefix: an
 * object is deleted by its exact key, never as a prefix that could match its siblings.
 */
function isObjectItem(runId: string, key: string, reason: CleanupReason): boolean {
  return reason === "orphan" || key === manifestKey(runId);
}

/** One pass over one dataset: its lease (every append is fenced by it) and its deletion guard. */
interface Pass {
  lease: MaintenanceLease;
  guard: PassGuard;
  /** Executes a run command fenced by the pass's lease. */
  execute(command: RunCommand): Promise<{ state: RunState }>;
}

interface ItemOutcome {
  url: string;
  deleted: boolean;
  error: string | null;
  tries: number;
  /** Set when the guard refused the deletion on fresh state (nothing was planned or sent). */
  refused?: string;
}

/**
 * Cleanup, gc and retry-failed. Planning is pure (src/maintenance); this service reads the
 * projections, takes the dataset's maintenance lock, appends the planning event before any
 * request, deletes through the object store, and records the outcome. A crash anywhere leaves a
 * `planned` item that the next pass resumes.
 *
 * @internal used through the Ledger facade.
 */
export class MaintenanceService {
  readonly #deps: MaintenanceDeps;

  constructor(deps: MaintenanceDeps) {
    this.#deps = deps;
  }

  /**
   * Deletes losers of published runs and drains the due part of the pending set (`retryNow`: every
   * item that is not exhausted, due or not).
   */
  async cleanup(options: CleanupOptions = {}): Promise<CleanupReport> {
    // Validated before anything is read or deleted.
    const throughput = parseCleanupThroughput({
      ...(options.concurrency !== undefined ? { concurrency: options.concurrency } : {}),
      ...(options.initialRate !== undefined ? { initialRate: options.initialRate } : {}),
    });
    options = { ...options, ...throughput };
    const report: CleanupReport = {
      deleted: [],
      failed: [],
      planned: [],
      skipped: [],
      leaseLost: [],
      pending: 0,
      nextDueAt: null,
      dryRun: options.dryRun === true,
    };
    const datasets = options.datasetId
      ? [await this.#dataset(options.datasetId)]
      : await this.#deps.queries.datasets();
    for (const dataset of datasets) {
      if (options.signal?.aborted) break;
      try {
        await withMaintenanceLease(
          this.#deps.database,
          dataset.datasetId,
          (lease) =>
            this.#recorded(lease, "cleanup", options, () =>
              this.#cleanupDataset(dataset, report, options, this.#pass(dataset.datasetId, lease)),
            ),
          { wait: false },
        );
      } catch (e) {
        if (isShardledgerError(e) && e.code === "LOCKED") report.skipped.push(dataset.datasetId);
        else if (isLeaseLostError(e)) {
          // Fenced off mid-pass: nothing more was sent or appended; another pass owns the dataset.
          report.leaseLost.push(dataset.datasetId);
          this.#deps.log?.({
            level: "error",
            msg: "maintenance lease lost; the pass stopped",
            datasetId: dataset.datasetId,
            error: e.message,
          });
        } else throw e;
      }
    }
    // Counted after the pass, over every selected dataset (skipped ones too): an item that was not
    // due, or whose dataset another pass held, is still work left, and exit 4 must say so.
    const pending = await this.#deps.queries.pendingCleanup(
      options.datasetId ? { datasetId: options.datasetId } : {},
    );
    report.pending = pending.length;
    report.nextDueAt = earliestRetry(pending);
    return report;
  }

  async #cleanupDataset(
    dataset: DatasetView,
    report: CleanupReport,
    options: CleanupOptions,
    pass: Pass,
  ): Promise<PassCounts> {
    const now = this.#deps.clock();
    const items = await this.#cleanupWork(dataset, now, options.retryNow === true);
    const guard = pass.guard;
    if (options.dryRun) {
      // Exactly what a real pass would delete: the same fresh-state check, nothing recorded.
      for (const i of items)
        if ((await this.#refusal(guard, dataset, i)) === null) report.planned.push(i.url);
      return { deleted: 0, failed: 0, pruned: 0 };
    }
    const store = this.#deps.storeFor(dataset);
    let deleted = 0;
    let failed = 0;
    const outcomes =
      (options.concurrency ?? 1) > 1 && items.length > 0
        ? await this.#cleanConcurrently(dataset, store, items, pass, options, report)
        : this.#cleanSequentially(dataset, store, items, pass, options.signal);
    for await (const { item, outcome } of outcomes) {
      if (!item.planned && outcome.refused === undefined) report.planned.push(item.url);
      if (outcome.deleted) {
        report.deleted.push(item.url);
        deleted++;
      } else {
        report.failed.push({ url: item.url, error: outcome.error ?? "unknown", tries: outcome.tries });
        failed++;
      }
    }
    const pending = (await this.#deps.queries.pendingCleanup({ datasetId: dataset.datasetId })).length;
    this.#deps.metric?.({ name: "cleanup.deleted", value: deleted, datasetId: dataset.datasetId });
    this.#deps.metric?.({ name: "cleanup.failed", value: failed, datasetId: dataset.datasetId });
    this.#deps.metric?.({ name: "cleanup.pending", value: pending, datasetId: dataset.datasetId });
    this.#deps.log?.({
      level: failed > 0 ? "warn" : "info",
      msg: "cleanup pass",
      datasetId: dataset.datasetId,
      deleted,
      failed,
      pending,
    });
    return { deleted, failed, pruned: 0 };
  }

  /** Today's pass: one item at a time, each planned, deleted and recorded before the next. */
  async *#cleanSequentially(
    dataset: DatasetView,
    store: ObjectStore,
    items: readonly WorkItem[],
    pass: Pass,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<{ item: WorkItem; outcome: ItemOutcome }> {
    for (const item of items) {
      if (signal?.aborted) break;
      yield { item, outcome: await this.#deleteItem(dataset, store, item, pass, signal) };
    }
  }

  /**
   * The concurrent pass (src/ledger/concurrent-cleanup.ts): `concurrency` prefixes in flight through
   * an adaptive rate limiter for the store's root, batched planning and outcome appends, the
   * guard on fresh state per batch, the coalesced fencing check before every request.
   */
  async #cleanConcurrently(
    dataset: DatasetView,
    store: ObjectStore,
    items: readonly WorkItem[],
    pass: Pass,
    options: CleanupOptions,
    report: { throughput?: PassThroughput[] },
  ): Promise<{ item: WorkItem; outcome: ItemOutcome }[]> {
    const concurrency = options.concurrency ?? 1;
    const throttled = new ThrottledStore(store, { initialRate: options.initialRate ?? 1_000 });
    const executeMany = async (runId: string, commands: readonly RunCommand[]) => {
      if (this.#deps.executeMany) await this.#deps.executeMany(runId, commands, { fence: pass.lease.fence });
      else for (const c of commands) await pass.execute(c);
    };
    const results = await cleanConcurrently(
      items,
      {
        store: throttled,
        keyOf: (item) => this.#keyOf(dataset, item),
        isObject: (item, key) => isObjectItem(item.runId, key, item.reason),
        refusals: (batch) => this.#refusals(pass.guard, dataset, batch),
        executeMany,
        assertHeld: coalescedCheck(() => pass.lease.assertHeld()),
        deleteObject,
        policies: this.#deps.policies,
        clock: this.#deps.clock,
        ...(this.#deps.sleep ? { sleep: this.#deps.sleep } : {}),
        ...(this.#deps.random ? { random: this.#deps.random } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
        log: (record) => this.#deps.log?.({ ...record, datasetId: dataset.datasetId }),
      },
      { concurrency, batchSize: Math.max(32, concurrency * 4) },
    );
    const traffic = throttled.traffic();
    report.throughput ??= [];
    report.throughput.push({
      datasetId: dataset.datasetId,
      concurrency,
      settledRate: Math.round(traffic.deleteRate.rate),
      throttled: traffic.throttled,
      listRequests: traffic.listRequests,
      listSeconds: Math.round(traffic.listMs) / 1000,
      deleteRequests: traffic.deleteRequests,
      deletedObjects: traffic.deletedKeys,
    });
    return items.flatMap((item, i) => {
      const r = results[i];
      if (!r) return [];
      const outcome: ItemOutcome = { url: r.url, deleted: r.deleted, error: r.error, tries: r.tries };
      if (r.refused !== undefined) outcome.refused = r.refused;
      return [{ item, outcome }];
    });
  }

  /** The guard's verdicts on a batch, from one read of fresh state. */
  async #refusals(
    guard: PassGuard,
    dataset: DatasetView,
    items: readonly WorkItem[],
  ): Promise<(string | null)[]> {
    const requests: {
      index: number;
      runId: string;
      key: string;
      purpose: DeletionPurpose;
      decisionConfirmed?: boolean;
    }[] = [];
    const out: (string | null)[] = items.map(() => null);
    for (const [index, item] of items.entries()) {
      const k = this.#keyOf(dataset, item);
      if ("refused" in k) {
        out[index] = k.refused;
        continue;
      }
      const key = k.key.endsWith("/") && item.reason !== "orphan" ? k.key.slice(0, -1) : k.key;
      requests.push({
        index,
        runId: item.runId,
        key,
        purpose: purposeOf(item.reason),
        ...(item.decisionConfirmed ? { decisionConfirmed: true } : {}),
      });
    }
    const verdicts = await guard.refusals(requests);
    for (const [i, r] of requests.entries()) out[r.index] = verdicts[i] ?? null;
    return out;
  }

  /**
   * Runs one pass and records how it ended beside its lease (`status` shows it as the last pass),
   * unless it is a dry run. The record is written only while the lease is still this pass's
   * (`epoch` matches), so a pass fenced off midway records nothing; a pass that throws records
   * `error` and rethrows.
   */
  async #recorded<T extends PassCounts>(
    lease: MaintenanceLease,
    kind: MaintenancePassRecord["kind"],
    options: { dryRun?: boolean; signal?: AbortSignal },
    run: () => Promise<T>,
  ): Promise<T> {
    const startedAt = this.#deps.clock();
    const record = (outcome: MaintenancePassRecord["outcome"], counts: PassCounts, error: string | null) =>
      recordPass(this.#deps.database, lease, {
        kind,
        startedAt,
        finishedAt: this.#deps.clock(),
        outcome,
        ...counts,
        error,
      });
    let result: T;
    try {
      result = await run();
    } catch (e) {
      if (!options.dryRun && !isLeaseLostError(e)) {
        await record("error", { deleted: 0, failed: 0, pruned: 0 }, describe(e)).catch(() => {});
      }
      throw e;
    }
    if (!options.dryRun) {
      const outcome = options.signal?.aborted ? "interrupted" : result.failed > 0 ? "failures" : "ok";
      await record(outcome, result, null);
    }
    return result;
  }

  /** Losers not yet planned, plus pending items that are due (or were planned and never reported). */
  async #cleanupWork(dataset: DatasetView, now: Date, retryNow: boolean): Promise<WorkItem[]> {
    const db = this.#deps.database.db;
    const schema = this.#deps.database.schema;
    const pending = await this.#deps.queries.pendingCleanup({ datasetId: dataset.datasetId });
    const pendingByKey = new Map(pending.map((p) => [`${p.runId}\u0000${p.url}`, p]));
    // Status LOSER, spelled out on the tables behind the `attempts` view so the planner starts from
    // the dataset's succeeded runs that still have losers (the runs index), then their attempts.
    const { rows: losers } = await sql<{ run_id: string; url: string }>`
      SELECT a.run_id, a.url FROM ${sql.id(schema, "runs")} r
      JOIN ${sql.id(schema, "attempt_records")} a ON a.run_id = r.run_id
      WHERE r.dataset_id = ${dataset.datasetId} AND r.status = 'SUCCEEDED' AND r.attempts_loser > 0
        AND a.cleanup_status IS NULL AND a.url IS NOT NULL
        AND NOT EXISTS (
          SELECT 1 FROM ${sql.id(schema, "winners")} w
          WHERE w.run_id = a.run_id AND w.shard = a.shard AND w.attempt = a.attempt
            AND w.task_attempt_id IS NOT DISTINCT FROM a.task_attempt_id)
      ORDER BY a.run_id, a.url`.execute(db);
    const winnerUrls = await this.#winnerUrls(dataset.datasetId);
    const items: WorkItem[] = [];
    const seen = new Set<string>();
    const byRun = new Map<string, { url: string; status: "LOSER" }[]>();
    for (const l of losers) {
      const list = byRun.get(l.run_id) ?? [];
      list.push({ url: l.url, status: "LOSER" });
      byRun.set(l.run_id, list);
    }
    for (const [runId, attempts] of byRun) {
      const plan = planLoserCleanup({ root: dataset.root, attempts, winnerUrls });
      // A loser the planner refuses is still an item: the guard refuses it again when it comes
      // up and records why, so it shows in the pending set instead of staying a LOSER forever.
      for (const url of [...plan.prefixes.map((p) => p.url), ...plan.refused.map((r) => r.url)]) {
        const key = `${runId}\u0000${url}`;
        if (seen.has(key) || pendingByKey.has(key)) continue;
        seen.add(key);
        items.push({ runId, url, reason: "loser", planned: false, priorTries: 0 });
      }
    }
    for (const p of pending) {
      if (!isDue(p, now, retryNow)) continue;
      items.push({
        runId: p.runId,
        url: p.url,
        reason: p.reason as CleanupReason,
        planned: p.state === "planned",
        priorTries: p.tries,
      });
    }
    return items;
  }

  #pass(datasetId: string, lease: MaintenanceLease): Pass {
    return {
      lease,
      guard: this.#guard(datasetId),
      execute: (command) => this.#deps.execute(command, { fence: lease.fence }),
    };
  }

  #guard(datasetId: string): PassGuard {
    return new PassGuard(
      {
        database: this.#deps.database,
        queries: this.#deps.queries,
        load: (runId) => this.#deps.load(runId),
        clock: this.#deps.clock,
      },
      datasetId,
    );
  }

  /** The item's root-relative key, or why it has none (a url that does not map under the root). */
  #keyOf(dataset: DatasetView, item: WorkItem): { key: string } | { refused: string } {
    if (item.key !== undefined) return { key: item.key };
    try {
      return {
        key:
          item.reason === "orphan"
            ? objectKeyOfUrl(dataset.root, item.url)
            : keyUnderRoot(dataset.root, item.url),
      };
    } catch (e) {
      return { refused: e instanceof Error ? e.message : String(e) };
    }
  }

  async #refusal(guard: PassGuard, dataset: DatasetView, item: WorkItem): Promise<string | null> {
    const k = this.#keyOf(dataset, item);
    if ("refused" in k) return k.refused;
    const key = k.key.endsWith("/") && item.reason !== "orphan" ? k.key.slice(0, -1) : k.key;
    return guard.refusal(item.runId, key, purposeOf(item.reason), {
      ...(item.decisionConfirmed ? { decisionConfirmed: true } : {}),
    });
  }

  /**
   * Justifies the deletion on fresh state (the guard), plans it (unless resuming), deletes,
   * verifies, records the outcome. A refused loser is recorded as a failed cleanup with the
   * reason, so it stays visible in the pending set and is looked at again when due.
   */
  async #deleteItem(
    dataset: DatasetView,
    store: ObjectStore,
    item: WorkItem,
    pass: Pass,
    signal?: AbortSignal,
  ): Promise<ItemOutcome> {
    const { runId, url } = item;
    const refused = await this.#refusal(pass.guard, dataset, item);
    if (refused !== null) {
      const tries = item.priorTries + 1;
      if (item.reason === "loser") {
        await this.#recordFailed(pass, item, tries, {
          code: "Protected",
          message: `not deleted: ${refused}`,
          transient: true,
        });
      }
      this.#deps.log?.({
        level: "warn",
        msg: "deletion refused",
        datasetId: dataset.datasetId,
        runId,
        url,
        refused,
      });
      return { url, deleted: false, error: `Protected: ${refused}`, tries, refused };
    }
    const key = (this.#keyOf(dataset, item) as { key: string }).key;
    if (!item.planned) await pass.execute({ type: "planCleanup", runId, url, reason: item.reason });
    const result = isObjectItem(runId, key, item.reason)
      ? await deleteObject(store, key, () => pass.lease.assertHeld())
      : await deletePrefix(store, `${key}/`, {
          policy: this.#deps.policies.deletion,
          beforeRequest: () => pass.lease.assertHeld(),
          // An attempt url may name one object (a file) rather than a directory: both go. (Not
          // for a run's whole area: `data/<runId>` is never an object, and listing it without its
          // slash would walk every run whose id starts with this one.)
          includeExactKey: `${key}/` !== runDataPrefix(runId),
          // A run's whole area may hold 100,000 objects: list on while its pages are deleted.
          ...(`${key}/` === runDataPrefix(runId) ? { pipeline: AREA_PIPELINE } : {}),
          ...(this.#deps.sleep ? { sleep: this.#deps.sleep } : {}),
          ...(this.#deps.random ? { random: this.#deps.random } : {}),
          ...(signal ? { signal } : {}),
        });
    const tries = item.priorTries + Math.max(1, result.tries);
    if (result.status === "deleted") {
      if (item.reason === "stale") await pass.execute({ type: "recordStaleCollected", runId, url });
      else
        await pass.execute({
          type: "recordCleanupSucceeded",
          runId,
          url,
          deletedObjects: result.deletedObjects,
        });
      return { url, deleted: true, error: null, tries };
    }
    const error = result.error ?? { code: "Unknown", message: "deletion did not complete", transient: true };
    const exhausted = await this.#recordFailed(pass, item, tries, error);
    this.#deps.log?.({
      level: "warn",
      msg: "cleanup failed",
      datasetId: dataset.datasetId,
      runId,
      url,
      code: error.code,
      tries,
      exhausted,
    });
    return { url, deleted: false, error: `${error.code}: ${error.message}`, tries };
  }

  /** Records a failed (or refused) cleanup with its next retry; returns whether it is exhausted. */
  async #recordFailed(
    pass: Pass,
    item: WorkItem,
    tries: number,
    error: { code: string; message: string; transient: boolean },
  ): Promise<boolean> {
    const exhausted = !error.transient || isExhausted(this.#deps.policies.pending, tries);
    await pass.execute({
      type: "recordCleanupFailed",
      runId: item.runId,
      url: item.url,
      errorCode: error.code,
      errorMessage: error.message.slice(0, 8000),
      transient: error.transient,
      tries,
      exhausted,
      nextRetryAt: exhausted
        ? null
        : nextRetryAt(this.#deps.policies.pending, tries, this.#deps.clock(), this.#deps.random),
    });
    return exhausted;
  }

  /** Stale runs, keep-runs, retention and the failed floor for one dataset, in one locked pass. */
  async gc(datasetId: string, options: { dryRun?: boolean; signal?: AbortSignal } = {}): Promise<GcReport> {
    const dataset = await this.#dataset(datasetId);
    return withMaintenanceLease(
      this.#deps.database,
      datasetId,
      (lease) => this.#recorded(lease, "gc", options, () => this.#gcPass(dataset, lease, options)),
      { wait: false },
    ).then(({ report }) => report);
  }

  async #gcPass(
    dataset: DatasetView,
    lease: MaintenanceLease,
    options: { dryRun?: boolean; signal?: AbortSignal },
  ): Promise<PassCounts & { report: GcReport }> {
    const datasetId = dataset.datasetId;
    const pass = this.#pass(datasetId, lease);
    const now = this.#deps.clock();
    const runs = await this.#deps.queries.runs(datasetId);
    // Deletes and listings through the adaptive limiter of the dataset's root (S3's per-prefix
    // limit applies to gc as much as to cleanup); its counts are the pass's listing cost.
    const store = new ThrottledStore(this.#deps.storeFor(dataset), {});
    await lease.assertHeld();
    const plan = planGc({
      now,
      dataset,
      runs,
      floors: await this.#deps.queries.retentionFloors(datasetId),
      runUrls: await this.#runUrls(datasetId, dataset.root),
      pointerRunId: await storePointerRunId(store),
    });
    const report: GcReport = {
      actions: [],
      failed: [],
      protected: plan.protected.map((p) => ({ runId: p.runId, why: p.why })),
      dryRun: options.dryRun === true,
    };
    const sinceOf = new Map(runs.map((r) => [r.runId, r]));
    let pruned = 0;
    let failedStale = 0;

    for (const action of plan.actions) {
      if (options.signal?.aborted) break;
      if (action.kind === "fail_stale") {
        report.actions.push({ kind: reportedKind(action), runId: action.runId, urls: [] });
        if (options.dryRun) continue;
        const seen = sinceOf.get(action.runId);
        try {
          // The decision travels with the command: the decider refuses it if the run showed a
          // sign of life after gc looked (a heartbeat while the pass was listing the store).
          await pass.execute({
            type: "fail",
            runId: action.runId,
            cause: "heartbeat_timeout",
            reason: action.reason,
            ...(seen ? { silentSince: latestOf(seen.heartbeatAt, seen.updatedAt) } : {}),
            staleAfterMs: dataset.policies.staleAfterMs,
          });
          failedStale++;
        } catch (e) {
          if (!isShardledgerError(e) || e.code !== "ILLEGAL_TRANSITION") throw e;
          report.actions.pop();
          report.protected.push({ runId: action.runId, why: `not failed: ${e.message}` });
        }
        continue;
      }
      const reason: CleanupReason = action.kind;
      const entry = { kind: reportedKind(action), runId: action.runId, urls: [] as string[] };
      report.actions.push(entry);
      const pending = new Map(
        (await this.#deps.queries.pendingCleanup({ datasetId }))
          .filter((p) => p.runId === action.runId)
          .map((p) => [p.url, p]),
      );
      let allDeleted = true;
      // In plan order, the manifest first: if the marker cannot go, the data it names stays.
      for (const [index, url] of action.urls.entries()) {
        if (options.signal?.aborted) {
          allDeleted = false;
          break;
        }
        const prior = pending.get(url);
        const item: WorkItem = {
          runId: action.runId,
          url,
          reason,
          planned: prior?.state === "planned",
          priorTries: prior?.tries ?? 0,
          ...(index > 0 ? { decisionConfirmed: true } : {}),
        };
        if (options.dryRun) {
          const refused = await this.#refusal(pass.guard, dataset, item);
          if (refused === null) entry.urls.push(url);
          else report.protected.push({ runId: action.runId, why: `url ${url} is not deleted: ${refused}` });
          continue;
        }
        const outcome = await this.#deleteItem(dataset, store, item, pass, options.signal);
        if (outcome.refused !== undefined) {
          report.protected.push({
            runId: action.runId,
            why: `url ${url} is not deleted: ${outcome.refused}`,
          });
          allDeleted = false;
          break;
        }
        entry.urls.push(url);
        if (!outcome.deleted) {
          allDeleted = false;
          report.failed.push({ url, error: outcome.error ?? "unknown", tries: outcome.tries });
          break;
        }
      }
      if (!options.dryRun && allDeleted && action.pruneReason) {
        await this.#prune(pass, action.runId, action.pruneReason);
        pruned++;
      }
    }

    const orphans = await this.#planOrphans(
      dataset,
      store,
      now,
      new Set(plan.actions.map((a) => a.runId)),
      report,
      pass,
    );
    for (const orphan of orphans) {
      const entry = { kind: "orphan", runId: orphan.runId, urls: [] as string[] };
      report.actions.push(entry);
      for (const key of orphan.keys) {
        if (options.signal?.aborted) break;
        let url: string;
        try {
          url = urlForKey(dataset.root, key);
        } catch (e) {
          // A key no URL can name (a backslash, a dot segment) is never sent in a delete.
          report.protected.push({
            runId: orphan.runId,
            why: `key ${JSON.stringify(key)} is not deleted: ${String(e)}`,
          });
          continue;
        }
        const item: WorkItem = {
          runId: orphan.runId,
          url,
          key,
          reason: "orphan",
          planned: false,
          priorTries: 0,
        };
        if (options.dryRun) {
          if ((await this.#refusal(pass.guard, dataset, item)) === null) entry.urls.push(item.url);
          continue;
        }
        const outcome = await this.#deleteItem(dataset, store, item, pass, options.signal);
        if (outcome.refused !== undefined) continue;
        entry.urls.push(item.url);
        if (!outcome.deleted)
          report.failed.push({ url: item.url, error: outcome.error ?? "unknown", tries: outcome.tries });
      }
      if (entry.urls.length === 0) report.actions.pop();
    }
    this.#deps.metric?.({ name: "gc.pruned", value: pruned, datasetId });
    this.#deps.metric?.({ name: "gc.failed_stale", value: failedStale, datasetId });
    this.#deps.log?.({
      level: "info",
      msg: "gc pass",
      datasetId,
      actions: plan.actions.length,
      pruned,
      failed: report.failed.length,
    });
    const deleted = report.actions.reduce((n, a) => n + (a.kind === "fail_stale" ? 0 : a.urls.length), 0);
    const traffic = store.traffic();
    if (traffic.listRequests + traffic.deleteRequests > 0) {
      report.throughput = {
        settledRate: Math.round(traffic.deleteRate.rate),
        throttled: traffic.throttled,
        listRequests: traffic.listRequests,
        listSeconds: Math.round(traffic.listMs) / 1000,
        deleteRequests: traffic.deleteRequests,
        deletedObjects: traffic.deletedKeys,
      };
    }
    return { report, deleted: deleted - report.failed.length, failed: report.failed.length, pruned };
  }

  /**
   * Orphans under the data area of a live published run: listed keys under no recorded winner and
   * under no loser still awaiting cleanup (a speculative attempt killed before it reported, or one
   * that kept writing after its prefix was cleaned), once older than the safety window. Planned
   * per key, so a stray file beside a winner's directory never widens into a prefix delete. A run
   * with a winner whose url is unknown gets none: that winner's data may be anywhere in its area.
   */
  async #planOrphans(
    dataset: DatasetView,
    store: ObjectStore,
    now: Date,
    skip: ReadonlySet<string>,
    report: GcReport,
    pass: Pass,
  ): Promise<{ runId: string; keys: string[] }[]> {
    const runs = (await this.#deps.queries.runs(dataset.datasetId)).filter(
      (r) => r.status === "SUCCEEDED" && !skip.has(r.runId),
    );
    const pendingKeys = new Set<string>();
    for (const p of await this.#deps.queries.pendingCleanup({ datasetId: dataset.datasetId })) {
      try {
        pendingKeys.add(keyUnderRoot(dataset.root, p.url));
      } catch {}
    }
    const out: { runId: string; keys: string[] }[] = [];
    const safetyWindowMs = effectiveSafetyWindowMs(dataset, now);
    for (const run of runs) {
      const state = await this.#deps.load(run.runId);
      if ([...state.winners.values()].some((w) => w.url === null)) {
        report.protected.push({
          runId: run.runId,
          why: "no orphan collection: a winner was reported without a url, so its data may lie anywhere in the run's area",
        });
        continue;
      }
      // Keys kept, exactly and as prefixes: every attempt with data that may still be there.
      const keep = new Set<string>();
      for (const a of state.attempts.values()) {
        if (a.url === null || a.status === "DELETED") continue;
        try {
          keep.add(keyUnderRoot(dataset.root, a.url));
        } catch {}
      }
      for (const k of pendingKeys) keep.add(k);
      const kept = (key: string): boolean => {
        const bare = key.endsWith("/") ? key.slice(0, -1) : key;
        if (keep.has(bare)) return true;
        const parts = bare.split("/");
        for (let i = 1; i < parts.length; i++) if (keep.has(parts.slice(0, i).join("/"))) return true;
        return false;
      };
      const keys: string[] = [];
      let token: string | null = null;
      do {
        // Not destructive, but a pass fenced off stops before its next request, whatever it is.
        await pass.lease.assertHeld();
        const page = await store.list(runDataPrefix(run.runId), { token });
        for (const o of page.objects) {
          if (kept(o.key)) continue;
          if (o.lastModified.getTime() + safetyWindowMs > now.getTime()) continue;
          keys.push(o.key);
        }
        token = page.nextToken;
      } while (token);
      if (keys.length > 0) out.push({ runId: run.runId, keys });
    }
    return out;
  }

  async #prune(pass: Pass, runId: string, reason: PruneReason): Promise<void> {
    const state = await this.#deps.load(runId);
    const failedItems =
      (state.status === "FAILED" ? 1 : 0) +
      [...state.cleanup.values()].filter((c) => c.exhausted && c.state !== "deleted").length;
    await pass.execute({ type: "prune", runId, reason, attempts: state.attempts.size, failedItems });
  }

  /** Reopens failed runs and re-queues exhausted cleanup items that are still inside the floor. */
  async retryFailed(input: { datasetId: string; runId?: string }): Promise<RetryFailedReport> {
    const dataset = await this.#dataset(input.datasetId);
    const now = this.#deps.clock();
    const floorMs = dataset.policies.failedRetentionMs;
    // An item is retryable while its floor row says so (a policy change never shortens what was
    // promised), or while the policy does.
    const floors = await this.#deps.queries.retentionFloors(dataset.datasetId);
    const promised = new Map(
      floors.map((f) => [`${f.runId}\u0000${f.url ?? ""}`, f.protectedUntil.getTime()]),
    );
    const untilOf = (runId: string, url: string | null, failedAt: Date) =>
      Math.max(failedAt.getTime() + floorMs, promised.get(`${runId}\u0000${url ?? ""}`) ?? 0);
    const inFloor = (runId: string, url: string | null, failedAt: Date | null) =>
      failedAt !== null && now.getTime() < untilOf(runId, url, failedAt);
    const report: RetryFailedReport = { matched: 0, retried: 0, prunedPastRetention: 0 };
    const runs = (await this.#deps.queries.runs(dataset.datasetId)).filter(
      (r) => !input.runId || r.runId === input.runId,
    );
    if (input.runId && runs.length === 0) {
      // The run is gone from the registry: was it pruned past the floor, or did it never fail?
      const state = await this.#deps.load(input.runId);
      // A run with no events, or another dataset's, is a wrong --run: answering "nothing failed"
      // would hide the typo from the operator who asked.
      if (state.status === "NONE") throw new NotFoundError("run", input.runId);
      if (state.datasetId !== dataset.datasetId) {
        throw new NotFoundError("run", input.runId, {
          message: `run ${input.runId} belongs to dataset ${state.datasetId}, not ${dataset.datasetId}`,
          details: { datasetId: dataset.datasetId, runDatasetId: state.datasetId },
        });
      }
      if (state.status === "PRUNED") {
        const pruned = await this.#prunedFailedItems(input.runId);
        report.prunedPastRetention = pruned;
      }
      return report;
    }
    const items = await this.#deps.queries.pendingCleanup({ datasetId: dataset.datasetId });
    for (const run of runs) {
      if (run.status === "FAILED") {
        report.matched++;
        if (inFloor(run.runId, null, run.failedAt)) {
          const failedAt = run.failedAt as Date;
          await this.#deps.execute(
            { type: "reopen", runId: run.runId, reason: "retry-failed" },
            { failedRetentionMs: untilOf(run.runId, null, failedAt) - failedAt.getTime() },
          );
          report.retried++;
        }
      }
      for (const item of items) {
        if (item.runId !== run.runId || item.state !== "exhausted") continue;
        report.matched++;
        if (inFloor(run.runId, item.url, item.lastFailureAt)) {
          await this.#deps.execute({ type: "requeueCleanup", runId: run.runId, url: item.url });
          report.retried++;
        }
      }
    }
    if (!input.runId) {
      const rollups = await this.#deps.queries.rollups(dataset.datasetId);
      report.prunedPastRetention = rollups
        .filter((r) => r.reason === "failed_retention")
        .reduce((n, r) => n + r.prunedFailedItems, 0);
    }
    return report;
  }

  async #prunedFailedItems(runId: string): Promise<number> {
    const { rows } = await sql<{ data: { reason: string; failedItems: number } }>`
      SELECT data FROM ${sql.id(this.#deps.database.schema, "events")}
      WHERE stream_id = ${`run-${runId}`} AND type = 'Pruned'`.execute(this.#deps.database.db);
    const pruned = rows[0]?.data;
    return pruned && pruned.reason === "failed_retention" ? Math.max(1, pruned.failedItems) : 0;
  }

  async #dataset(datasetId: string): Promise<DatasetView> {
    const dataset = await this.#deps.queries.dataset(datasetId);
    if (!dataset) throw new NotFoundError("dataset", datasetId);
    return dataset;
  }

  async #winnerUrls(datasetId: string): Promise<string[]> {
    const { rows } = await sql<{ url: string }>`
      SELECT url FROM ${sql.id(this.#deps.database.schema, "winners")}
      WHERE dataset_id = ${datasetId} AND url IS NOT NULL`.execute(this.#deps.database.db);
    return rows.map((r) => r.url);
  }

  async #runUrls(datasetId: string, root: string): Promise<Map<string, RunUrls>> {
    const schema = this.#deps.database.schema;
    const db = this.#deps.database.db;
    // A run's attempts lie inside its data area, which goes as one prefix; only urls recorded
    // outside it (before attempt urls were confined to their run's area) are listed one by one.
    const { rows: attempts } = await sql<{ run_id: string; url: string; winner: boolean }>`
      SELECT a.run_id, a.url, (w.run_id IS NOT NULL) AS winner
      FROM ${sql.id(schema, "runs")} r
      JOIN ${sql.id(schema, "attempt_records")} a ON a.run_id = r.run_id
      LEFT JOIN ${sql.id(schema, "winners")} w ON w.run_id = a.run_id AND w.shard = a.shard
        AND w.attempt = a.attempt AND w.task_attempt_id IS NOT DISTINCT FROM a.task_attempt_id
      WHERE r.dataset_id = ${datasetId} AND a.url IS NOT NULL
        AND a.cleanup_status IS DISTINCT FROM 'DELETED'
        AND NOT starts_with(a.url, ${`${root}/data/`} || a.run_id || '/')`.execute(db);
    const { rows: runs } = await sql<{ run_id: string; manifest_url: string | null }>`
      SELECT run_id, manifest_url FROM ${sql.id(schema, "runs")} WHERE dataset_id = ${datasetId}`.execute(db);
    const sets = new Map<
      string,
      { attemptUrls: Set<string>; winnerUrls: Set<string>; manifestUrl: string | null }
    >();
    // A pruned run's whole data area goes with it, so files no attempt reported are not stranded
    // (the planner still refuses it if it overlaps a run that stays).
    for (const r of runs) {
      sets.set(r.run_id, {
        attemptUrls: new Set([`${root}/data/${r.run_id}`]),
        winnerUrls: new Set(),
        manifestUrl: r.manifest_url,
      });
    }
    for (const a of attempts) {
      const entry = sets.get(a.run_id);
      if (!entry) continue;
      entry.attemptUrls.add(a.url);
      if (a.winner) entry.winnerUrls.add(a.url);
    }
    const out = new Map<string, RunUrls>();
    for (const [runId, e] of sets) {
      out.set(runId, {
        attemptUrls: [...e.attemptUrls],
        winnerUrls: [...e.winnerUrls],
        manifestUrl: e.manifestUrl,
      });
    }
    return out;
  }
}

function latestOf(...dates: Date[]): Date {
  return new Date(Math.max(...dates.map((d) => d.getTime())));
}

/** Exhausted items wait for `retry-failed` (which re-queues them), even with `retryNow`. */
function isDue(item: PendingCleanupItem, now: Date, retryNow = false): boolean {
  if (item.state === "exhausted") return false;
  if (item.state === "planned" || retryNow) return true;
  return item.nextRetryAt === null || item.nextRetryAt.getTime() <= now.getTime();
}

function earliestRetry(items: readonly PendingCleanupItem[]): string | null {
  let earliest: Date | null = null;
  for (const i of items) {
    if (i.state === "exhausted" || i.nextRetryAt === null) continue;
    if (earliest === null || i.nextRetryAt.getTime() < earliest.getTime()) earliest = i.nextRetryAt;
  }
  return earliest === null ? null : earliest.toISOString();
}

/** Deletes one object (a manifest, an orphan) and verifies it is gone; `authorise` before each request. */
async function deleteObject(
  store: ObjectStore,
  key: string,
  authorise: () => Promise<void>,
): Promise<PrefixCleanupResult> {
  await authorise();
  try {
    const outcome = await store.deleteMany([key]);
    const failure = outcome.errors[0];
    if (failure) {
      return {
        status: "failed",
        deletedObjects: 0,
        tries: 1,
        error: { code: failure.code, message: failure.message, transient: failure.transient },
        remainingKeys: [key],
      };
    }
    await authorise();
    if ((await store.get(key)) !== null) {
      return {
        status: "failed",
        deletedObjects: 0,
        tries: 1,
        error: { code: "StillPresent", message: `${key} is still there`, transient: true },
        remainingKeys: [key],
      };
    }
    return {
      status: "deleted",
      deletedObjects: outcome.deleted.length,
      tries: 1,
      error: null,
      remainingKeys: [],
    };
  } catch (e) {
    const c = classifyStoreError(e);
    return { status: "failed", deletedObjects: 0, tries: 1, error: c, remainingKeys: [key] };
  }
}

/** What a pass did, for its record. */
interface PassCounts {
  deleted: number;
  failed: number;
  pruned: number;
}

/**
 * The run the store's `_CURRENT` names, or null when there is none or it cannot be parsed. A read
 * that fails (the store is down) throws: gc must not plan without knowing.
 */
async function storePointerRunId(store: ObjectStore): Promise<string | null> {
  const body = await store.get(CURRENT_KEY);
  if (body === null) return null;
  try {
    const pointer = JSON.parse(new TextDecoder().decode(body)) as { runId?: unknown };
    return typeof pointer.runId === "string" ? pointer.runId : null;
  } catch {
    return null;
  }
}

/** Records a finished pass on its lease row, only while the lease's epoch is still the stored one. */
async function recordPass(
  database: Database,
  lease: MaintenanceLease,
  pass: Omit<MaintenancePassRecord, "holder">,
): Promise<void> {
  const outcome = {
    outcome: pass.outcome,
    deleted: pass.deleted,
    failed: pass.failed,
    pruned: pass.pruned,
    error: pass.error,
  };
  await sql`UPDATE ${sql.id(database.schema, "maintenance_leases")}
    SET last_pass_kind = ${pass.kind}, last_pass_started_at = ${pass.startedAt.toISOString()}::timestamptz,
      last_pass_finished_at = ${pass.finishedAt.toISOString()}::timestamptz,
      last_pass_outcome = ${JSON.stringify(outcome)}::jsonb
    WHERE dataset_id = ${lease.datasetId} AND epoch = ${lease.epoch}`.execute(database.db);
}

function describe(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).slice(0, 2000);
}
