import { sql } from "kysely";
import type { LedgerDb } from "../adapters/postgres/database.js";
import type { InlineProjection } from "../adapters/postgres/inline-projection.js";
import { nextSafetyWindowHold, type SafetyWindowHold } from "../datasets/safety-window.js";
import type { RecordedEvent } from "../events/envelope.js";
import { PROJECTION_KEYS, type ProjectionTable } from "./projection-tables.js";
import { type Columns, deleteByKeys, deleteWhereIn, normaliseRow, type Row, upsertRows } from "./table-io.js";

/** Column types of every projection table (the same order as the DDL). */
export const PROJECTION_COLUMNS: Readonly<Record<ProjectionTable, Columns>> = {
  datasets: {
    dataset_id: "text",
    root: "text",
    keep_runs: "integer",
    retention_ms: "bigint",
    failed_retention_ms: "bigint",
    stale_after_ms: "bigint",
    safety_window_ms: "bigint",
    current_run_id: "text",
    current_manifest_url: "text",
    current_moved_at: "timestamptz",
    registered_at: "timestamptz",
    updated_at: "timestamptz",
    safety_window_hold_ms: "bigint",
    safety_window_hold_until: "timestamptz",
  },
  runs: {
    run_id: "text",
    dataset_id: "text",
    status: "text",
    num_shards: "integer",
    is_current: "boolean",
    publish_progress: "text",
    manifest_url: "text",
    started_at: "timestamptz",
    updated_at: "timestamptz",
    heartbeat_at: "timestamptz",
    winners_selected_at: "timestamptz",
    succeeded_at: "timestamptz",
    failed_at: "timestamptz",
    replaced_at: "timestamptz",
    failure_cause: "text",
    failure_reason: "text",
    missing_shards: "jsonb",
    reopened_count: "integer",
    attempts_total: "integer",
    attempts_started: "integer",
    attempts_succeeded: "integer",
    attempts_failed: "integer",
    attempts_winner: "integer",
    attempts_loser: "integer",
    attempts_cleanup_pending: "integer",
    attempts_deleted: "integer",
  },
  attempt_records: {
    run_id: "text",
    attempt_key: "text",
    dataset_id: "text",
    shard: "integer",
    attempt: "integer",
    task_attempt_id: "text",
    url: "text",
    outcome: "text",
    cleanup_status: "text",
    error: "text",
    reported_at: "timestamptz",
    updated_at: "timestamptz",
  },
  winners: {
    run_id: "text",
    shard: "integer",
    dataset_id: "text",
    attempt: "integer",
    task_attempt_id: "text",
    url: "text",
    selected_at: "timestamptz",
  },
  pending_cleanup: {
    run_id: "text",
    url: "text",
    dataset_id: "text",
    reason: "text",
    state: "text",
    tries: "integer",
    last_error_code: "text",
    last_error_message: "text",
    transient: "boolean",
    planned_at: "timestamptz",
    first_failure_at: "timestamptz",
    last_failure_at: "timestamptz",
    next_retry_at: "timestamptz",
  },
  retention_floors: {
    run_id: "text",
    kind: "text",
    url: "text",
    dataset_id: "text",
    failed_at: "timestamptz",
    protected_until: "timestamptz",
  },
  rollups: {
    dataset_id: "text",
    reason: "text",
    pruned_runs: "bigint",
    pruned_attempts: "bigint",
    pruned_failed_items: "bigint",
    last_pruned_at: "timestamptz",
  },
};

const { cleanup_status: _cleanupStatus, ...recordColumns } = PROJECTION_COLUMNS.attempt_records;
/** Column types of the `attempts` view: an attempt record with `status` for `cleanup_status`. */
export const ATTEMPTS_VIEW_COLUMNS: Columns = { ...recordColumns, status: "text" };

/**
 * The key of an attempt within its run: `shard/attempt/taskAttemptId` (`-` when the engine gave
 * none). The url is data, not identity.
 *
 * @example
 * ```ts
 * attemptKey(3, 1, null) // "3/1/-"
 * ```
 */
function attemptKey(shard: number, attempt: number, taskAttemptId: string | null): string {
  return `${shard}/${attempt}/${taskAttemptId ?? "-"}`;
}

const COUNT_COLUMN: Record<string, string> = {
  STARTED: "attempts_started",
  SUCCEEDED: "attempts_succeeded",
  FAILED: "attempts_failed",
  WINNER: "attempts_winner",
  LOSER: "attempts_loser",
  CLEANUP_PENDING: "attempts_cleanup_pending",
  DELETED: "attempts_deleted",
};
/** Events that write a dataset row or its rollups: their batches lock the dataset row exclusively. */
const DATASET_WRITERS = new Set([
  "DatasetRegistered",
  "DatasetPoliciesChanged",
  "CurrentPointerMoved",
  "Pruned",
]);

type Data = Record<string, unknown>;

/** The stored safety-window hold of a dataset row, or null. */
function holdOf(row: Row): SafetyWindowHold | null {
  if (row.safety_window_hold_ms === null || row.safety_window_hold_ms === undefined) return null;
  if (!(row.safety_window_hold_until instanceof Date)) return null;
  return { windowMs: row.safety_window_hold_ms as number, until: row.safety_window_hold_until };
}
const str = (v: unknown): string => v as string;
const strOrNull = (v: unknown): string | null => (v === undefined || v === null ? null : (v as string));

/**
 * The inline projection that folds the ledger's events into the projection tables. It works in
 * batches: load the rows the events touch, fold the events over them in order in memory, write
 * back only what changed with one bulk statement per table. Replay uses the same code.
 *
 * @example
 * ```ts
 * const log = createPgEventLog({ db, schema, projections: [ledgerProjection] })
 * ```
 */
export const ledgerProjection: InlineProjection = {
  name: "ledger",
  apply: (trx, events, schema) => applyLedgerEvents(trx, schema, events),
};

/** Folds `events` into the projection tables of `schema`. */
export async function applyLedgerEvents(
  db: LedgerDb,
  schema: string,
  events: readonly RecordedEvent[],
): Promise<void> {
  if (events.length === 0) return;
  const batch = new ProjectionBatch(db, schema);
  await batch.load(events);
  for (const e of events) batch.apply(e);
  await batch.store();
}

class TableState {
  readonly rows = new Map<string, Row>();
  readonly dirty = new Set<string>();
  readonly deleted = new Map<string, Row>();
  constructor(readonly table: ProjectionTable) {}
  key(row: Row): string {
    return PROJECTION_KEYS[this.table].map((k) => String(row[k])).join("\u0000");
  }
  add(row: Row): void {
    this.rows.set(this.key(row), row);
  }
  get(...parts: (string | number)[]): Row | undefined {
    return this.rows.get(parts.map(String).join("\u0000"));
  }
  put(row: Row): void {
    const k = this.key(row);
    this.rows.set(k, row);
    this.dirty.add(k);
    this.deleted.delete(k);
  }
  touch(row: Row): void {
    this.dirty.add(this.key(row));
  }
  remove(row: Row): void {
    const k = this.key(row);
    this.rows.delete(k);
    this.dirty.delete(k);
    this.deleted.set(k, row);
  }
}

class ProjectionBatch {
  readonly #db: LedgerDb;
  readonly #schema: string;
  readonly datasets = new TableState("datasets");
  readonly runs = new TableState("runs");
  readonly attempts = new TableState("attempt_records");
  readonly winners = new TableState("winners");
  readonly pending = new TableState("pending_cleanup");
  readonly floors = new TableState("retention_floors");
  readonly rollups = new TableState("rollups");
  /** Attempts by run and url, for cleanup events that name a url. */
  readonly #byUrl = new Map<string, Row[]>();
  readonly #prunedRuns = new Set<string>();
  /** Runs whose winner selection was cancelled in this batch: their stored winners are deleted. */
  readonly #clearedWinners = new Set<string>();

  constructor(db: LedgerDb, schema: string) {
    this.#db = db;
    this.#schema = schema;
  }

  async load(events: readonly RecordedEvent[]): Promise<void> {
    const runIds = new Set<string>();
    const datasetIds = new Set<string>();
    const attemptKeys: [string, string][] = [];
    const urls: [string, string][] = [];
    const fullRuns = new Set<string>();
    const floorDatasets = new Set<string>();
    const startedHere = new Set<string>();
    for (const e of events) {
      const d = e.data as Data;
      if (e.type === "RunStarted") startedHere.add(str(d.runId));
      if (typeof d.runId === "string") runIds.add(d.runId);
      if (typeof d.previousRunId === "string") runIds.add(d.previousRunId);
      if (typeof d.datasetId === "string") datasetIds.add(d.datasetId);
      switch (e.type) {
        case "AttemptStarted":
        case "AttemptSucceeded":
        case "AttemptFailed":
          attemptKeys.push([
            str(d.runId),
            attemptKey(d.shard as number, d.attempt as number, strOrNull(d.taskAttemptId)),
          ]);
          break;
        case "RunFailed":
          // A failure can void a selection, and the run's counts are then recounted from its rows.
          fullRuns.add(str(d.runId));
          break;
        case "CleanupPlanned":
        case "CleanupSucceeded":
        case "CleanupFailed":
        case "CleanupRequeued":
        case "StaleAttemptCollected":
          urls.push([str(d.runId), str(d.url)]);
          break;
        case "DatasetPoliciesChanged":
          floorDatasets.add(str(d.datasetId));
          break;
      }
    }
    const q = (table: ProjectionTable, where: ReturnType<typeof sql>, lock: ReturnType<typeof sql> = sql``) =>
      sql<Row>`SELECT * FROM ${sql.id(this.#schema, table)} WHERE ${where} ${lock}`
        .execute(this.#db)
        .then((r) => r.rows.map((row) => normaliseRow(row, PROJECTION_COLUMNS[table])));
    // Row locks, because appends to different streams can touch the same rows (a pointer move on
    // the dataset stream rewrites run rows that a late attempt report on the run stream updates):
    // runs are locked for update in id order, then the dataset row — shared by ordinary run events
    // (so runs of one dataset still append in parallel), exclusive when this batch writes it or its
    // rollups. One lock order everywhere, so projections never deadlock each other.
    const runList = [...runIds].sort();
    const existing = new Set<string>();
    for (const r of await q("runs", sql`run_id = ANY(${runList}::text[]) ORDER BY run_id`, sql`FOR UPDATE`)) {
      this.runs.add(r);
      existing.add(str(r.run_id));
      datasetIds.add(str(r.dataset_id));
    }
    // A run that starts in this batch and has no row yet has no attempts, cleanup items or
    // floors yet either: nothing to load for it (most runs of a replay page are such runs).
    const isNew = (runId: string) => startedHere.has(runId) && !existing.has(runId);
    const writesDataset = events.some((e) => DATASET_WRITERS.has(e.type));
    for (const r of await q(
      "datasets",
      sql`dataset_id = ANY(${[...datasetIds].sort()}::text[]) ORDER BY dataset_id`,
      writesDataset ? sql`FOR UPDATE` : sql`FOR SHARE`,
    ))
      this.datasets.add(r);
    // Batches of attempt rows can be hundreds of thousands long: append them with loops, never
    // with spread arguments (V8 overflows its call stack at ~125k arguments).
    const attemptRows: Row[] = [];
    const addAll = (rows: readonly Row[]) => {
      for (const r of rows) attemptRows.push(r);
    };
    const loadRuns = [...fullRuns].filter((id) => !isNew(id));
    if (loadRuns.length > 0) addAll(await q("attempt_records", sql`run_id = ANY(${loadRuns}::text[])`));
    const loadKeys = attemptKeys.filter((k) => !isNew(k[0]));
    if (loadKeys.length > 0) {
      addAll(
        await q(
          "attempt_records",
          sql`(run_id, attempt_key) IN (SELECT * FROM unnest(${loadKeys.map((k) => k[0])}::text[], ${loadKeys.map((k) => k[1])}::text[]))`,
        ),
      );
    }
    const loadUrls = urls.filter((u) => !isNew(u[0]));
    if (loadUrls.length > 0) {
      const runs = loadUrls.map((u) => u[0]);
      const us = loadUrls.map((u) => u[1]);
      const atUrls = sql`(run_id, url) IN (SELECT * FROM unnest(${runs}::text[], ${us}::text[]))`;
      addAll(await q("attempt_records", atUrls));
      // Cleanup never changes a winner: the winners of the shards at these urls tell which is one.
      // Only runs that had selected winners before this batch need them loaded (a selection made
      // in the batch is all in memory: a publish appends all its WinnerSelected events together,
      // and a replay page that splits them leaves the run selected for the next page).
      const selectedBefore = [...new Set(runs)].filter(
        (id) => this.runs.get(id)?.winners_selected_at != null,
      );
      if (selectedBefore.length > 0) {
        for (const r of await q(
          "winners",
          sql`(run_id, shard) IN (SELECT run_id, shard FROM ${sql.id(this.#schema, "attempt_records")}
            WHERE ${atUrls} AND run_id = ANY(${selectedBefore}::text[]))`,
        ))
          this.winners.add(r);
      }
      for (const r of await q(
        "pending_cleanup",
        sql`(run_id, url) IN (SELECT * FROM unnest(${runs}::text[], ${us}::text[]))`,
      ))
        this.pending.add(r);
    }
    for (const r of attemptRows) {
      if (!this.attempts.rows.has(this.attempts.key(r))) this.#indexAttempt(r);
    }
    if (floorDatasets.size > 0) {
      for (const r of await q("retention_floors", sql`dataset_id = ANY(${[...floorDatasets]}::text[])`))
        this.floors.add(r);
    }
    const prunedDatasets = events
      .filter((e) => e.type === "Pruned")
      .map((e) => str((e.data as Data).datasetId));
    if (prunedDatasets.length > 0) {
      for (const r of await q("rollups", sql`dataset_id = ANY(${prunedDatasets}::text[])`))
        this.rollups.add(r);
    }
  }

  #unindexAttempt(row: Row): void {
    if (row.url === null) return;
    const k = `${str(row.run_id)}\u0000${str(row.url)}`;
    const list = this.#byUrl.get(k)?.filter((r) => r !== row);
    if (list && list.length > 0) this.#byUrl.set(k, list);
    else this.#byUrl.delete(k);
  }

  #indexAttempt(row: Row): void {
    this.attempts.add(row);
    if (row.url !== null) {
      const k = `${str(row.run_id)}\u0000${str(row.url)}`;
      const list = this.#byUrl.get(k);
      if (list) list.push(row);
      else this.#byUrl.set(k, [row]);
    }
  }

  apply(e: RecordedEvent): void {
    const d = e.data as Data;
    const at = e.recordedAt;
    const runId = typeof d.runId === "string" ? d.runId : undefined;
    if (runId && this.#prunedRuns.has(runId)) return;
    const run = runId ? this.runs.get(runId) : undefined;
    if (run && e.type !== "CurrentPointerMoved") {
      run.updated_at = at;
      this.runs.touch(run);
    }
    switch (e.type) {
      case "DatasetRegistered":
      case "DatasetPoliciesChanged": {
        const p = d.policies as Record<string, number>;
        const existing = this.datasets.get(str(d.datasetId));
        const row: Row = existing ?? {
          dataset_id: d.datasetId,
          root: d.root,
          current_run_id: null,
          current_manifest_url: null,
          current_moved_at: null,
          registered_at: at,
          safety_window_hold_ms: null,
          safety_window_hold_until: null,
        };
        if (e.type === "DatasetPoliciesChanged" && existing) {
          // A shorter safety window must not take back what the old one promised (see
          // src/datasets/safety-window.ts): the window in force is held until those promises end.
          const hold = nextSafetyWindowHold(
            {
              policies: { safetyWindowMs: existing.safety_window_ms as number },
              safetyWindowHold: holdOf(existing),
            },
            p.safetyWindowMs as number,
            at,
          );
          row.safety_window_hold_ms = hold?.windowMs ?? null;
          row.safety_window_hold_until = hold?.until ?? null;
        }
        Object.assign(row, {
          keep_runs: p.keepRuns,
          retention_ms: p.retentionMs,
          failed_retention_ms: p.failedRetentionMs,
          stale_after_ms: p.staleAfterMs,
          safety_window_ms: p.safetyWindowMs,
          updated_at: at,
        });
        this.datasets.put(row);
        for (const floor of this.floors.rows.values()) {
          if (floor.dataset_id !== d.datasetId) continue;
          // What is in the floor keeps what it was promised: a longer failedRetention extends every
          // item, a shorter one applies only to what fails from now on.
          const byPolicy = (floor.failed_at as Date).getTime() + (p.failedRetentionMs as number);
          const promised = (floor.protected_until as Date).getTime();
          if (!(byPolicy > promised)) continue;
          floor.protected_until = new Date(byPolicy);
          this.floors.touch(floor);
        }
        return;
      }
      case "RunStarted": {
        if (run) return;
        const row: Row = {
          run_id: d.runId,
          dataset_id: d.datasetId,
          status: "STARTED",
          num_shards: d.numShards,
          is_current: false,
          publish_progress: "none",
          manifest_url: null,
          started_at: at,
          updated_at: at,
          heartbeat_at: at,
          winners_selected_at: null,
          succeeded_at: null,
          failed_at: null,
          replaced_at: null,
          failure_cause: null,
          failure_reason: null,
          missing_shards: null,
          reopened_count: 0,
        };
        for (const c of Object.values(COUNT_COLUMN)) row[c] = 0;
        row.attempts_total = 0;
        this.runs.put(row);
        return;
      }
      case "RunHeartbeat":
        if (run) run.heartbeat_at = at;
        return;
      case "AttemptStarted":
      case "AttemptSucceeded":
      case "AttemptFailed": {
        if (!run) return;
        const key = attemptKey(d.shard as number, d.attempt as number, strOrNull(d.taskAttemptId));
        let attempt = this.attempts.get(str(runId), key);
        const outcome =
          e.type === "AttemptStarted" ? "STARTED" : e.type === "AttemptSucceeded" ? "SUCCEEDED" : "FAILED";
        if (!attempt) {
          attempt = {
            run_id: runId,
            attempt_key: key,
            dataset_id: run.dataset_id,
            shard: d.shard,
            attempt: d.attempt,
            task_attempt_id: strOrNull(d.taskAttemptId),
            url: strOrNull(d.url),
            outcome,
            cleanup_status: null,
            error: e.type === "AttemptFailed" ? d.error : null,
            reported_at: at,
            updated_at: at,
          };
          this.#indexAttempt(attempt);
          this.attempts.put(attempt);
          run.attempts_total = (run.attempts_total as number) + 1;
          // Reported after its run's winners were selected: a loser at once.
          this.#count(run, this.#statusOf(run, attempt), 1);
          return;
        }
        if (e.type === "AttemptStarted") return;
        // The first reported outcome stands (a contradicting report is refused when decided).
        if (attempt.outcome !== "STARTED" && attempt.outcome !== outcome) return;
        // A changed outcome is never a winner's (a winner had succeeded when it was selected), so
        // its status needs no winners loaded.
        const before = this.#statusOf(run, attempt);
        attempt.outcome = outcome;
        if (d.url !== null && d.url !== undefined && attempt.url !== d.url) {
          this.#unindexAttempt(attempt);
          attempt.url = d.url;
          this.#indexAttempt(attempt);
        }
        if (e.type === "AttemptFailed") attempt.error = d.error;
        attempt.updated_at = at;
        this.attempts.touch(attempt);
        this.#move(run, before, this.#statusOf(run, attempt));
        return;
      }
      case "WinnerSelected": {
        if (!run) return;
        if (run.winners_selected_at === null) {
          // The selection begins: from now on every attempt the winners do not name is a loser.
          run.winners_selected_at = at;
          run.status = "PUBLISHING";
          run.publish_progress = "winners_selected";
          for (const outcome of ["STARTED", "SUCCEEDED", "FAILED"]) {
            const column = COUNT_COLUMN[outcome] as string;
            this.#count(run, "LOSER", run[column] as number);
            run[column] = 0;
          }
        }
        for (const w of d.winners as readonly Data[]) {
          if (this.winners.get(str(runId), w.shard as number)) continue;
          this.winners.put({
            run_id: runId,
            shard: w.shard,
            dataset_id: run.dataset_id,
            attempt: w.attempt,
            task_attempt_id: strOrNull(w.taskAttemptId),
            url: strOrNull(w.url),
            selected_at: at,
          });
          this.#move(run, "LOSER", "WINNER");
        }
        return;
      }
      case "ShardCoverageFailed":
        if (run) run.missing_shards = d.missingShards;
        return;
      case "ManifestPublished":
        if (run) {
          run.manifest_url = d.manifestUrl;
          run.publish_progress = "manifest_published";
        }
        return;
      case "RunSucceeded":
        if (run) {
          run.status = "SUCCEEDED";
          run.succeeded_at = at;
          run.publish_progress = "succeeded";
        }
        return;
      case "RunFailed":
        if (run) {
          if (run.publish_progress === "winners_selected") this.#cancelSelection(run);
          run.status = "FAILED";
          run.failed_at = at;
          run.failure_cause = d.cause;
          run.failure_reason = d.reason;
          this.#protect(run, "failed_run", "", at);
        }
        return;
      case "RunReopened":
        if (run) {
          run.status = "STARTED";
          run.failed_at = null;
          run.failure_cause = null;
          run.failure_reason = null;
          run.missing_shards = null;
          run.heartbeat_at = at;
          run.reopened_count = (run.reopened_count as number) + 1;
          this.#unprotect(run, "failed_run", "");
        }
        return;
      case "CurrentPointerMoved": {
        const dataset = this.datasets.get(str(d.datasetId));
        if (dataset) {
          dataset.current_run_id = d.runId;
          dataset.current_manifest_url = d.manifestUrl;
          dataset.current_moved_at = at;
          dataset.updated_at = at;
          this.datasets.touch(dataset);
        }
        const previous = typeof d.previousRunId === "string" ? this.runs.get(d.previousRunId) : undefined;
        if (previous && previous.run_id !== d.runId) {
          previous.is_current = false;
          previous.replaced_at = at;
          this.runs.touch(previous);
        }
        if (run) {
          run.is_current = true;
          run.replaced_at = null;
          this.runs.touch(run);
        }
        return;
      }
      case "CleanupPlanned": {
        if (!run) return;
        const existing = this.pending.get(str(runId), str(d.url));
        const row: Row = existing ?? {
          run_id: runId,
          url: d.url,
          dataset_id: run.dataset_id,
          tries: 0,
          last_error_code: null,
          last_error_message: null,
          transient: null,
          first_failure_at: null,
          last_failure_at: null,
        };
        Object.assign(row, { reason: d.reason, state: "planned", planned_at: at, next_retry_at: null });
        this.pending.put(row);
        return;
      }
      case "CleanupFailed": {
        if (!run) return;
        const row: Row = this.pending.get(str(runId), str(d.url)) ?? {
          run_id: runId,
          url: d.url,
          dataset_id: run.dataset_id,
          reason: "loser",
          planned_at: at,
          first_failure_at: null,
        };
        Object.assign(row, {
          state: d.exhausted ? "exhausted" : "failed",
          tries: d.tries,
          last_error_code: d.errorCode,
          last_error_message: d.errorMessage,
          transient: d.transient,
          first_failure_at: row.first_failure_at ?? at,
          last_failure_at: at,
          next_retry_at: d.nextRetryAt === null ? null : new Date(str(d.nextRetryAt)),
        });
        this.pending.put(row);
        for (const a of this.#attemptsAt(str(runId), str(d.url))) {
          const status = this.#statusOf(run, a);
          if (status !== "WINNER" && status !== "DELETED")
            this.#setCleanupStatus(run, a, "CLEANUP_PENDING", at);
        }
        if (d.exhausted) this.#protect(run, "failed_cleanup", str(d.url), at);
        return;
      }
      case "CleanupRequeued": {
        if (!run) return;
        const row = this.pending.get(str(runId), str(d.url));
        if (row) {
          row.state = "planned";
          row.next_retry_at = null;
          this.pending.touch(row);
        }
        this.#unprotect(run, "failed_cleanup", str(d.url));
        return;
      }
      case "CleanupSucceeded":
      case "StaleAttemptCollected": {
        if (!run) return;
        const row = this.pending.get(str(runId), str(d.url)) ?? { run_id: runId, url: d.url };
        this.pending.remove(row);
        for (const a of this.#attemptsAt(str(runId), str(d.url))) {
          if (this.#statusOf(run, a) !== "WINNER") this.#setCleanupStatus(run, a, "DELETED", at);
        }
        this.#unprotect(run, "failed_cleanup", str(d.url));
        return;
      }
      case "Pruned": {
        const datasetId = str(d.datasetId);
        const reason = str(d.reason);
        const rollup: Row = this.rollups.get(datasetId, reason) ?? {
          dataset_id: datasetId,
          reason,
          pruned_runs: 0,
          pruned_attempts: 0,
          pruned_failed_items: 0,
        };
        rollup.pruned_runs = (rollup.pruned_runs as number) + 1;
        rollup.pruned_attempts = (rollup.pruned_attempts as number) + (d.attempts as number);
        rollup.pruned_failed_items = (rollup.pruned_failed_items as number) + (d.failedItems as number);
        rollup.last_pruned_at = at;
        this.rollups.put(rollup);
        if (runId) this.#prunedRuns.add(runId);
        return;
      }
      default:
        return;
    }
  }

  /**
   * A run failed after its winners were chosen but before its manifest: the selection is void.
   * Winners go, attempts return to what they reported (the run's counts are recounted from its
   * rows, all loaded for RunFailed), and a reopened run selects afresh.
   */
  #cancelSelection(run: Row): void {
    const runId = str(run.run_id);
    for (const [k, w] of this.winners.rows) {
      if (w.run_id === runId) {
        this.winners.rows.delete(k);
        this.winners.dirty.delete(k);
      }
    }
    this.#clearedWinners.add(runId);
    run.winners_selected_at = null;
    run.publish_progress = "none";
    for (const status of ["STARTED", "SUCCEEDED", "FAILED", "WINNER", "LOSER"])
      run[COUNT_COLUMN[status] as string] = 0;
    for (const a of this.attempts.rows.values()) {
      if (a.run_id === runId && a.cleanup_status === null) this.#count(run, str(a.outcome), 1);
    }
  }

  #attemptsAt(runId: string, url: string): Row[] {
    return this.#byUrl.get(`${runId}\u0000${url}`) ?? [];
  }

  /**
   * An attempt's lifecycle status, derived exactly as the `attempts` view derives it: cleanup's
   * verdict, else WINNER/LOSER once the run's winners are selected, else the reported outcome.
   */
  #statusOf(run: Row, attempt: Row): string {
    if (attempt.cleanup_status !== null) return str(attempt.cleanup_status);
    if (run.winners_selected_at === null) return str(attempt.outcome);
    const w = this.winners.get(str(attempt.run_id), attempt.shard as number);
    const wins =
      w !== undefined && w.attempt === attempt.attempt && w.task_attempt_id === attempt.task_attempt_id;
    return wins ? "WINNER" : "LOSER";
  }

  #setCleanupStatus(run: Row, attempt: Row, status: "CLEANUP_PENDING" | "DELETED", at: Date): void {
    const before = this.#statusOf(run, attempt);
    if (before === status) return;
    attempt.cleanup_status = status;
    attempt.updated_at = at;
    this.attempts.touch(attempt);
    this.#move(run, before, status);
  }

  /** Moves one attempt between the run's status counts. */
  #move(run: Row, from: string, to: string): void {
    if (from === to) return;
    this.#count(run, from, -1);
    this.#count(run, to, 1);
  }

  #count(run: Row, status: string, delta: number): void {
    if (delta === 0) return;
    const c = COUNT_COLUMN[status] as string;
    run[c] = (run[c] as number) + delta;
    this.runs.touch(run);
  }

  #protect(run: Row, kind: string, url: string, failedAt: Date): void {
    const dataset = this.datasets.get(str(run.dataset_id));
    const ms = dataset ? (dataset.failed_retention_ms as number) : 0;
    this.floors.put({
      run_id: run.run_id,
      kind,
      url,
      dataset_id: run.dataset_id,
      failed_at: failedAt,
      protected_until: new Date(failedAt.getTime() + ms),
    });
  }

  #unprotect(run: Row, kind: string, url: string): void {
    this.floors.remove({ run_id: run.run_id, kind, url });
  }

  async store(): Promise<void> {
    const db = this.#db;
    const schema = this.#schema;
    await deleteWhereIn(db, schema, "winners", "run_id", [...this.#clearedWinners]);
    for (const state of [
      this.datasets,
      this.runs,
      this.attempts,
      this.winners,
      this.pending,
      this.floors,
      this.rollups,
    ]) {
      const dirty = [...state.dirty].map((k) => state.rows.get(k)).filter((r): r is Row => r !== undefined);
      const live = dirty.filter(
        (r) => !(typeof r.run_id === "string" && this.#prunedRuns.has(r.run_id) && state.table !== "rollups"),
      );
      await upsertRows(
        db,
        schema,
        state.table,
        PROJECTION_COLUMNS[state.table],
        PROJECTION_KEYS[state.table],
        live,
      );
      await deleteByKeys(db, schema, state.table, PROJECTION_KEYS[state.table], [...state.deleted.values()]);
    }
    // A pruned run leaves no row behind in any table (the rollups keep its counts).
    const pruned = [...this.#prunedRuns];
    for (const table of [
      "attempt_records",
      "winners",
      "pending_cleanup",
      "retention_floors",
      "runs",
    ] as const) {
      await deleteWhereIn(db, schema, table, "run_id", pruned);
    }
  }
}
