import { nextSafetyWindowHold, type SafetyWindowHold } from "../datasets/safety-window.js";
import type { RecordedEvent } from "../events/envelope.js";
import { OUTCOME_OF_REPORT, REPORT_EVENT } from "../machines/attempt-reports.js";
import { ATTEMPT_TABLE, attemptPhaseInfo } from "../machines/machine-tables.js";
import { attemptKey } from "../machines/run-state.js";
import { PROJECTION_KEYS, type ProjectionTable, type Row } from "./projection-rows.js";

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
  "Archived",
]);

type Data = Record<string, unknown>;

/**
 * What the fold reads of an event: its type, its data (upcast to the current version) and when it
 * was recorded. A replay reads only these columns of the log.
 */
export type FoldEvent = Pick<RecordedEvent, "type" | "data" | "recordedAt">;

/**
 * Event types whose fold writes beyond the rows of the run their data names: the dataset row and
 * the previous current run (a pointer move), the rollups (a prune, an archive). Every other event
 * that names a run changes that run's rows alone, so one folded before that run's `Pruned` leaves
 * no trace once the prune is folded (a prune removes every row of the run; its counts go to the
 * rollups from the `Pruned` event's own data). A replay that knows where each run is pruned skips
 * such events without reading their data.
 *
 * @example
 * ```ts
 * const skipped = (e: FoldEvent, position: number, prunedAt: number | undefined) =>
 *   prunedAt !== undefined && position < prunedAt && !WRITES_BEYOND_ITS_RUN.includes(e.type)
 * ```
 */
export const WRITES_BEYOND_ITS_RUN: readonly string[] = [
  "DatasetRegistered",
  "DatasetPoliciesChanged",
  "CurrentPointerMoved",
  "Pruned",
  "Archived",
];

/** The stored safety-window hold of a dataset row, or null. */
function holdOf(row: Row): SafetyWindowHold | null {
  if (row.safety_window_hold_ms === null || row.safety_window_hold_ms === undefined) return null;
  if (!(row.safety_window_hold_until instanceof Date)) return null;
  return { windowMs: row.safety_window_hold_ms as number, until: row.safety_window_hold_until };
}
const str = (v: unknown): string => v as string;
const strOrNull = (v: unknown): string | null => (v === undefined || v === null ? null : (v as string));

/** The rows of one projection table the fold holds: loaded, changed (dirty) and deleted. */
class TableState {
  readonly rows = new Map<string, Row>();
  /** Rows changed, by identity (a touch needs no key). Only the row held under its key counts. */
  readonly dirty = new Set<Row>();
  readonly deleted = new Map<string, Row>();
  readonly #keys: readonly string[];
  /**
   * Keys of the rows held, by run (tables keyed by run only): a selection steps every attempt of
   * its run, and a replay holds the rows of many runs at once, so a run's rows are found by run,
   * never by scanning the whole table.
   */
  readonly #byRun: Map<string, Set<string>> | undefined;
  constructor(readonly table: ProjectionTable) {
    this.#keys = PROJECTION_KEYS[table];
    if (this.#keys[0] === "run_id") this.#byRun = new Map();
  }
  // Keys are built for every row a selection steps (tens of thousands per batch): one template
  // string for the usual one- and two-column keys, no intermediate arrays.
  key(row: Row): string {
    const ks = this.#keys;
    if (ks.length === 2) return `${row[ks[0] as string]}\u0000${row[ks[1] as string]}`;
    if (ks.length === 1) return `${row[ks[0] as string]}`;
    return ks.map((k) => String(row[k])).join("\u0000");
  }
  add(row: Row): void {
    this.#hold(this.key(row), row);
  }
  /** The row held under a one- or two-column key (called per event: no rest arguments). */
  get(first: string | number, second?: string | number): Row | undefined {
    return this.rows.get(second === undefined ? `${first}` : `${first}\u0000${second}`);
  }
  put(row: Row): void {
    const k = this.key(row);
    const held = this.rows.get(k);
    if (held !== undefined && held !== row) this.dirty.delete(held);
    this.#hold(k, row);
    this.dirty.add(row);
    this.deleted.delete(k);
  }
  /** Marks a held row changed. */
  touch(row: Row): void {
    this.dirty.add(row);
  }
  remove(row: Row): void {
    const k = this.key(row);
    this.drop(k);
    this.deleted.set(k, row);
  }
  /** Lets go of a held row without recording a deletion (the store is told some other way). */
  drop(k: string): void {
    const row = this.rows.get(k);
    if (row === undefined) return;
    this.rows.delete(k);
    this.dirty.delete(row);
    if (this.#byRun === undefined) return;
    const keys = this.#byRun.get(row.run_id as string);
    keys?.delete(k);
    if (keys?.size === 0) this.#byRun.delete(row.run_id as string);
  }
  /** The rows held of one run (tables keyed by run), in the order they were first held. */
  rowsOfRun(runId: string): Row[] {
    const out: Row[] = [];
    const keys = this.#byRun?.get(runId);
    if (keys) for (const k of keys) out.push(this.rows.get(k) as Row);
    return out;
  }
  /** Lets go of every row of `runId` and of its recorded deletions: the run is gone as a whole. */
  forgetRun(runId: string): void {
    const keys = this.#byRun?.get(runId);
    if (keys) {
      for (const k of keys) {
        this.dirty.delete(this.rows.get(k) as Row);
        this.rows.delete(k);
      }
      this.#byRun?.delete(runId);
    }
    if (this.deleted.size === 0) return;
    for (const [k, row] of this.deleted) if (row.run_id === runId) this.deleted.delete(k);
  }
  #hold(k: string, row: Row): void {
    this.rows.set(k, row);
    if (this.#byRun === undefined) return;
    const runId = row.run_id as string;
    const keys = this.#byRun.get(runId);
    if (keys) keys.add(k);
    else this.#byRun.set(runId, new Set([k]));
  }
}

/**
 * What a batch of events needs loaded before it can be folded: the rows it touches, by key. The
 * store (src/adapters/postgres/projection-store.ts) turns this into locked, indexed reads.
 */
export interface RowsNeeded {
  /** Runs the events name (also a pointer move's previous run), to load and lock in id order. */
  runIds: string[];
  /** Datasets the events name (the store adds the datasets of the loaded runs). */
  datasetIds: Set<string>;
  /** Whether the batch writes a dataset row or its rollups (lock it exclusively, else shared). */
  writesDataset: boolean;
  /** Runs started in this batch: a run that has no row yet has nothing else to load either. */
  startedHere: Set<string>;
  /**
   * Runs whose winners must all be loaded: a selection or its undoing also steps every attempt of
   * the run, but those attempt rows are not loaded — the steps go to the store as
   * {@link AttemptBulkStep}s.
   */
  selectionRuns: string[];
  /** Attempt rows by (runId, attemptKey). */
  attemptKeys: [string, string][];
  /** Attempt rows and pending items by (runId, url): what cleanup events name. */
  urls: [string, string][];
  /** Datasets whose floor rows a policy change rewrites. */
  floorDatasets: string[];
  /** Datasets whose rollups a prune adds to. */
  prunedDatasets: string[];
}

/** The rows `events` touch (see {@link RowsNeeded}). */
export function rowsNeeded(events: readonly FoldEvent[]): RowsNeeded {
  const runIds = new Set<string>();
  const needed: RowsNeeded = {
    runIds: [],
    datasetIds: new Set(),
    writesDataset: false,
    startedHere: new Set(),
    selectionRuns: [],
    attemptKeys: [],
    urls: [],
    floorDatasets: [],
    prunedDatasets: [],
  };
  const selectionRuns = new Set<string>();
  const floorDatasets = new Set<string>();
  for (const e of events) {
    const d = e.data as Data;
    if (DATASET_WRITERS.has(e.type)) needed.writesDataset = true;
    if (e.type === "RunStarted") needed.startedHere.add(str(d.runId));
    if (typeof d.runId === "string") runIds.add(d.runId);
    if (typeof d.previousRunId === "string") runIds.add(d.previousRunId);
    if (typeof d.datasetId === "string") needed.datasetIds.add(d.datasetId);
    switch (e.type) {
      case "AttemptStarted":
      case "AttemptSucceeded":
      case "AttemptFailed":
        needed.attemptKeys.push([
          str(d.runId),
          attemptKey(d.shard as number, d.attempt as number, strOrNull(d.taskAttemptId)),
        ]);
        break;
      case "WinnerSelected":
      case "RunFailed":
        // A selection classifies every attempt of the run (winners, then losers once it is
        // complete), and a failure can void it: either reads the run's winners and steps every
        // attempt row of the run (those not loaded, in the store: see AttemptBulkStep).
        selectionRuns.add(str(d.runId));
        break;
      case "CleanupPlanned":
      case "CleanupSucceeded":
      case "CleanupFailed":
      case "CleanupRequeued":
      case "StaleAttemptCollected":
        needed.urls.push([str(d.runId), str(d.url)]);
        break;
      case "DatasetPoliciesChanged":
        floorDatasets.add(str(d.datasetId));
        break;
      case "Pruned":
        needed.prunedDatasets.push(str(d.datasetId));
        break;
      case "Archived":
        if (d.pruned !== null && typeof d.datasetId === "string") needed.prunedDatasets.push(d.datasetId);
        break;
    }
  }
  needed.runIds = [...runIds].sort();
  needed.selectionRuns = [...selectionRuns];
  needed.floorDatasets = [...floorDatasets];
  return needed;
}

/** What a folded batch changed in one table: rows to upsert and rows to delete, by key. */
interface TableChanges {
  table: ProjectionTable;
  upserts: Row[];
  deletes: Row[];
}

/**
 * The columns a step through the attempt machine changes on an attempt row that already exists.
 * Loaded rows that only stepped are written back with these columns alone: a selection steps
 * every attempt of the run, and rewriting whole rows made publish O(attempts) in bytes.
 */
const ATTEMPT_STEP_COLUMNS = ["phase", "status", "outcome", "cleanup_status", "updated_at"] as const;
/**
 * The attempt columns the fold reads from a loaded row: its keys, its url (cleanup events find
 * attempts by url) and its place in the machine. The store loads only these.
 */
export const ATTEMPT_FOLD_COLUMNS = ["run_id", "attempt_key", "url", "phase", "status", "outcome"] as const;

/** Existing attempt rows that changed the same columns: one bulk update writes them. */
interface AttemptUpdate {
  /** {@link ATTEMPT_STEP_COLUMNS}, plus `url` and/or `error` when a repeated report changed them. */
  columns: readonly string[];
  rows: Row[];
}

/** The step columns of an attempt row in a phase (see {@link ATTEMPT_STEP_COLUMNS}, less `updated_at`). */
interface AttemptStepColumns {
  readonly phase: string;
  readonly status: string;
  readonly outcome: string;
  readonly cleanup_status: string | null;
}

/** One line of a bulk step: rows in phase `from` go to `to`. */
interface AttemptMove {
  readonly from: string;
  readonly to: AttemptStepColumns;
}

/**
 * One step of the attempt machine applied to attempt rows the fold does not hold: every row of
 * the run (or only those of `keys`) that is in one of the `moves`' `from` phases goes to that
 * move's columns, and `updated_at` becomes `at`. The moves are the transition table's row for the
 * event (every phase that accepts it, with its target), so the store applies the fold's step
 * set-based — `UPDATE … WHERE run_id = … AND phase = …` — without loading the rows, and tells the
 * fold how many rows left each phase ({@link LedgerFold.bulkStepped}) so the run's counts move.
 */
export interface AttemptBulkStep {
  readonly runId: string;
  /** The machine event stepped (`SELECT_LOSER`, …), for reading. */
  readonly event: string;
  /** Only these attempt keys (a selection's winners), or every attempt row of the run. */
  readonly keys: readonly string[] | null;
  /** Attempt keys of the run the fold holds (and steps itself): the store leaves those rows alone. */
  readonly held: readonly string[];
  readonly moves: readonly AttemptMove[];
  readonly at: Date;
}

const stepColumnsCache = new Map<string, AttemptStepColumns>();
/** The step columns of a phase: the phase, the status and outcome it means, the cleanup verdict. */
function stepColumnsOf(phase: string): AttemptStepColumns {
  let columns = stepColumnsCache.get(phase);
  if (!columns) {
    const info = attemptPhaseInfo(phase);
    columns = Object.freeze({
      phase,
      status: info.status,
      outcome: info.outcome,
      cleanup_status: info.status === "CLEANUP_PENDING" || info.status === "DELETED" ? info.status : null,
    });
    stepColumnsCache.set(phase, columns);
  }
  return columns;
}

/** The transition table's row for `eventKey`: every phase that accepts it and where it goes. */
const movesCache = new Map<string, readonly AttemptMove[]>();
function movesOf(eventKey: string): readonly AttemptMove[] {
  let moves = movesCache.get(eventKey);
  if (!moves) {
    moves = ATTEMPT_TABLE.states.flatMap((from) => {
      const next = ATTEMPT_TABLE.next(from, eventKey);
      return next === undefined ? [] : [{ from, to: stepColumnsOf(next) }];
    });
    movesCache.set(eventKey, moves);
  }
  return moves;
}

interface PendingBulkStep {
  runId: string;
  event: string;
  keys: string[] | null;
  at: Date;
}

/** Everything a folded batch changed, in the order the store writes it. */
export interface FoldChanges {
  /** Runs whose winner selection was voided: every stored winner of theirs goes first. */
  clearedWinners: string[];
  /** Rows to upsert whole and rows to delete, per table (attempt rows: only those new in the batch). */
  tables: TableChanges[];
  /** Attempt rows loaded from the store that changed: only their changed columns are written. */
  attemptUpdates: AttemptUpdate[];
  /** Runs pruned in the batch: they leave no row behind in any table but the rollups. */
  prunedRuns: string[];
}

type Handler = (fold: LedgerFold, e: FoldEvent, d: Data, run: Row | undefined) => void;

/**
 * The one fold of the ledger's events into projection rows, pure: the store loads the rows a batch
 * touches ({@link rowsNeeded}) into it, {@link LedgerFold.apply} folds the events in order in
 * memory (one handler per event type), and {@link LedgerFold.changes} says what to write back.
 * Live appends and replays run the same code.
 *
 * @example
 * ```ts
 * const fold = new LedgerFold()
 * for (const row of loadedRuns) fold.runs.add(row)
 * for (const e of events) fold.apply(e)
 * const { tables } = fold.changes()
 * ```
 */
export class LedgerFold {
  readonly datasets = new TableState("datasets");
  readonly runs = new TableState("runs");
  readonly attempts = new TableState("attempt_records");
  readonly winners = new TableState("winners");
  readonly pending = new TableState("pending_cleanup");
  readonly floors = new TableState("retention_floors");
  readonly rollups = new TableState("rollups");
  /**
   * Attempts by url, per run, for cleanup events that name a url; a run's is built on the first
   * such event of the run (a selection loads every attempt of its run and never looks one up by
   * url), and kept up to date from then on.
   */
  readonly #byUrl = new Map<string, Map<string, Row[]>>();
  readonly #prunedRuns = new Set<string>();
  /** Runs whose winner selection was cancelled in this batch: their stored winners are deleted. */
  readonly #clearedWinners = new Set<string>();
  /** Winners per run, counted once from the loaded rows and kept from then on. */
  readonly #winnerCounts = new Map<string, number>();
  /** Attempt rows created in this batch: written whole; any other dirty attempt row exists. */
  readonly #newAttempts = new Set<Row>();
  /** Columns besides a step's that a repeated report changed on an attempt row, by row key. */
  readonly #reportedColumns = new Map<Row, Set<string>>();
  /** Runs whose attempt rows the fold holds only in part: the rest are in the store. */
  readonly #attemptsInStore = new Set<string>();
  /** Steps of attempt rows the fold does not hold, in order (see {@link AttemptBulkStep}). */
  readonly #bulkSteps: PendingBulkStep[] = [];

  /**
   * Says that the store holds attempt rows of `runId` the fold has not loaded (an existing run:
   * only the rows the batch names are loaded). A step of every attempt of the run, or of one the
   * fold does not hold, then becomes an {@link AttemptBulkStep} for the store to apply. Without
   * it the fold holds every attempt of the run (a run started in the batch, or a pure fold).
   */
  attemptsInStore(runId: string): void {
    this.#attemptsInStore.add(runId);
  }

  /** The steps of attempt rows the fold does not hold, in order: the store applies them first. */
  attemptBulkSteps(): AttemptBulkStep[] {
    return this.#bulkSteps
      .filter((s) => !this.#prunedRuns.has(s.runId))
      .map((s) => ({
        runId: s.runId,
        event: s.event,
        keys: s.keys,
        held: this.#attemptsOf(s.runId).map((r) => str(r.attempt_key)),
        moves: movesOf(s.event),
        at: s.at,
      }));
  }

  /**
   * The store applied `step`: `moved` says how many rows left each phase. The run's counts move
   * as the rows did (the rows themselves are the store's).
   */
  bulkStepped(step: AttemptBulkStep, moved: ReadonlyMap<string, number>): void {
    const run = this.runs.get(step.runId);
    if (!run) return;
    for (const { from, to } of step.moves) {
      const n = moved.get(from) ?? 0;
      if (n === 0) continue;
      const before = attemptPhaseInfo(from).status;
      if (before === to.status) continue;
      this.#count(run, before, -n);
      this.#count(run, to.status, n);
    }
  }

  /**
   * Steps `eventKey` on every attempt of the run: those the fold holds here, the rest (when the
   * store holds more) as a bulk step.
   */
  #stepAll(run: Row, eventKey: string, at: Date): void {
    const runId = str(run.run_id);
    for (const a of this.#attemptsOf(runId)) this.#step(run, a, eventKey, at);
    if (this.#attemptsInStore.has(runId)) this.#bulkSteps.push({ runId, event: eventKey, keys: null, at });
  }

  /** Steps `eventKey` on one attempt the fold does not hold but the store may. */
  #stepStored(runId: string, key: string, eventKey: string, at: Date): void {
    if (!this.#attemptsInStore.has(runId)) return;
    const last = this.#bulkSteps.at(-1);
    if (
      last &&
      last.runId === runId &&
      last.event === eventKey &&
      last.keys &&
      last.at.getTime() === at.getTime()
    )
      last.keys.push(key);
    else this.#bulkSteps.push({ runId, event: eventKey, keys: [key], at });
  }

  /**
   * Lets go of every row of the runs pruned since the last call (a prune leaves no row of the run
   * in any table but the rollups) and returns their ids, for the store to delete what it holds of
   * them. A replay that keeps rows across pages calls it after each page: the rest of the page
   * skipped the pruned runs' events, later pages find no row of theirs, as a page-by-page store
   * that deleted them would.
   */
  forgetPruned(): string[] {
    const runs = [...this.#prunedRuns];
    for (const runId of runs) {
      for (const a of this.attempts.rowsOfRun(runId)) {
        this.#newAttempts.delete(a);
        this.#reportedColumns.delete(a);
      }
      this.#byUrl.delete(runId);
      for (const state of [this.runs, this.attempts, this.winners, this.pending, this.floors])
        state.forgetRun(runId);
      this.#winnerCounts.delete(runId);
      this.#clearedWinners.delete(runId);
      this.#attemptsInStore.delete(runId);
    }
    if (runs.length > 0) {
      const gone = new Set(runs);
      const kept = this.#bulkSteps.filter((s) => !gone.has(s.runId));
      this.#bulkSteps.length = 0;
      for (const s of kept) this.#bulkSteps.push(s);
    }
    this.#prunedRuns.clear();
    return runs;
  }

  /** Adds a loaded attempt row (once: the same row may come back from several reads). */
  loadAttempt(row: Row): void {
    if (!this.attempts.rows.has(this.attempts.key(row))) this.#indexAttempt(row);
  }

  /** Folds one event into the rows. */
  apply(e: FoldEvent): void {
    const d = e.data as Data;
    const runId = typeof d.runId === "string" ? d.runId : undefined;
    if (runId && this.#prunedRuns.has(runId)) return;
    const run = runId ? this.runs.get(runId) : undefined;
    if (run && e.type !== "CurrentPointerMoved") {
      run.updated_at = e.recordedAt;
      this.runs.touch(run);
    }
    HANDLERS[e.type]?.(this, e, d, run);
  }

  /** What the batch changed, for the store. */
  changes(): FoldChanges {
    const tables: TableChanges[] = [];
    const attemptUpdates = new Map<string, AttemptUpdate>();
    for (const state of [
      this.datasets,
      this.runs,
      this.attempts,
      this.winners,
      this.pending,
      this.floors,
      this.rollups,
    ]) {
      // Attempt rows that existed before the batch are updated column-wise, grouped by the
      // columns that changed; only rows created in the batch are upserted whole.
      const isAttempts = state === this.attempts;
      const upserts: Row[] = [];
      for (const r of state.dirty) {
        if (state.rows.get(state.key(r)) !== r) continue;
        if (typeof r.run_id === "string" && this.#prunedRuns.has(r.run_id) && state.table !== "rollups")
          continue;
        if (!isAttempts || this.#newAttempts.has(r)) {
          upserts.push(r);
          continue;
        }
        const reported = this.#reportedColumns.get(r);
        const extra = reported ? [...reported].sort() : [];
        const group = extra.join(",");
        let update = attemptUpdates.get(group);
        if (!update) {
          update = { columns: [...ATTEMPT_STEP_COLUMNS, ...extra], rows: [] };
          attemptUpdates.set(group, update);
        }
        update.rows.push(r);
      }
      tables.push({ table: state.table, upserts, deletes: [...state.deleted.values()] });
    }
    return {
      clearedWinners: [...this.#clearedWinners],
      tables,
      attemptUpdates: [...attemptUpdates.values()],
      prunedRuns: [...this.#prunedRuns],
    };
  }

  // --- one handler per event type ---------------------------------------------------------------

  /** DatasetRegistered and DatasetPoliciesChanged: the dataset row, its hold and its floors. */
  onDatasetPolicies(e: FoldEvent, d: Data): void {
    const at = e.recordedAt;
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
  }

  onRunStarted(e: FoldEvent, d: Data, run: Row | undefined): void {
    if (run) return;
    const at = e.recordedAt;
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
  }

  /**
   * AttemptStarted, AttemptSucceeded and AttemptFailed. The attempt's status is the attempt
   * machine's (its transition table, src/machines/attempt-machine.ts), stepped exactly as the
   * run fold steps it: the report, then SELECT_LOSER when the run's winners are already chosen.
   */
  onAttemptReported(e: FoldEvent, d: Data, run: Row | undefined): void {
    if (!run) return;
    const at = e.recordedAt;
    const runId = str(d.runId);
    const key = attemptKey(d.shard as number, d.attempt as number, strOrNull(d.taskAttemptId));
    let attempt = this.attempts.get(runId, key);
    const outcome = OUTCOME_OF_REPORT[e.type] ?? "FAILED";
    if (!attempt) {
      const initial = attemptPhaseInfo(ATTEMPT_TABLE.initial);
      attempt = {
        run_id: runId,
        attempt_key: key,
        dataset_id: run.dataset_id,
        shard: d.shard,
        attempt: d.attempt,
        task_attempt_id: strOrNull(d.taskAttemptId),
        url: strOrNull(d.url),
        outcome: initial.outcome,
        cleanup_status: null,
        error: e.type === "AttemptFailed" ? d.error : null,
        reported_at: at,
        updated_at: at,
        phase: ATTEMPT_TABLE.initial,
        status: initial.status,
      };
      this.#indexAttempt(attempt);
      this.attempts.put(attempt);
      this.#newAttempts.add(attempt);
      run.attempts_total = (run.attempts_total as number) + 1;
      this.#count(run, initial.status, 1);
      this.#step(run, attempt, REPORT_EVENT[outcome], at);
      // Reported after its run's winners were selected: a loser at once.
      if (run.winners_selected_at !== null) this.#step(run, attempt, "SELECT_LOSER", at);
      return;
    }
    // The same outcome twice is one report; STARTED after an outcome and a contradicting outcome
    // are refused by the machine (and when decided), and the first report stands.
    if (attempt.outcome === outcome || !this.#step(run, attempt, REPORT_EVENT[outcome], at)) return;
    if (d.url !== null && d.url !== undefined && attempt.url !== d.url) {
      this.#unindexAttempt(attempt);
      attempt.url = d.url;
      this.#indexAttempt(attempt);
      this.#reported(attempt, "url");
    }
    if (e.type === "AttemptFailed") {
      attempt.error = d.error;
      this.#reported(attempt, "error");
    }
  }

  /**
   * WinnerSelected names the winners of up to 1,000 shards: each named attempt steps
   * SELECT_WINNER; once every shard has its winner, every other attempt steps SELECT_LOSER.
   */
  onWinnerSelected(e: FoldEvent, d: Data, run: Row | undefined): void {
    if (!run) return;
    const at = e.recordedAt;
    const runId = str(d.runId);
    if (run.winners_selected_at === null) {
      run.winners_selected_at = at;
      run.status = "PUBLISHING";
      run.publish_progress = "winners_selected";
    }
    for (const w of d.winners as readonly Data[]) {
      if ((w.shard as number) >= (run.num_shards as number) || this.winners.get(runId, w.shard as number))
        continue;
      const taskAttemptId = strOrNull(w.taskAttemptId);
      const selected = this.#winnerCount(runId);
      this.winners.put({
        run_id: runId,
        shard: w.shard,
        dataset_id: run.dataset_id,
        attempt: w.attempt,
        task_attempt_id: taskAttemptId,
        url: strOrNull(w.url),
        selected_at: at,
      });
      this.#winnerCounts.set(runId, selected + 1);
      const key = attemptKey(w.shard as number, w.attempt as number, taskAttemptId);
      const winner = this.attempts.get(runId, key);
      if (winner) this.#step(run, winner, "SELECT_WINNER", at);
      else this.#stepStored(runId, key, "SELECT_WINNER", at);
    }
    if (this.#winnerCount(runId) < (run.num_shards as number)) return;
    this.#stepAll(run, "SELECT_LOSER", at);
  }

  onRunFailed(e: FoldEvent, d: Data, run: Row | undefined): void {
    if (!run) return;
    if (run.publish_progress === "winners_selected") this.#cancelSelection(run, e.recordedAt);
    run.status = "FAILED";
    run.failed_at = e.recordedAt;
    run.failure_cause = d.cause;
    run.failure_reason = d.reason;
    this.#protect(run, "failed_run", "", e.recordedAt);
  }

  onRunReopened(e: FoldEvent, _d: Data, run: Row | undefined): void {
    if (!run) return;
    run.status = "STARTED";
    run.failed_at = null;
    run.failure_cause = null;
    run.failure_reason = null;
    run.missing_shards = null;
    run.heartbeat_at = e.recordedAt;
    run.reopened_count = (run.reopened_count as number) + 1;
    this.#unprotect(run, "failed_run", "");
  }

  onCurrentPointerMoved(e: FoldEvent, d: Data, run: Row | undefined): void {
    const at = e.recordedAt;
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
  }

  onCleanupPlanned(e: FoldEvent, d: Data, run: Row | undefined): void {
    if (!run) return;
    const existing = this.pending.get(str(d.runId), str(d.url));
    const row: Row = existing ?? {
      run_id: d.runId,
      url: d.url,
      dataset_id: run.dataset_id,
      tries: 0,
      last_error_code: null,
      last_error_message: null,
      transient: null,
      first_failure_at: null,
      last_failure_at: null,
    };
    Object.assign(row, { reason: d.reason, state: "planned", planned_at: e.recordedAt, next_retry_at: null });
    this.pending.put(row);
  }

  onCleanupFailed(e: FoldEvent, d: Data, run: Row | undefined): void {
    if (!run) return;
    const at = e.recordedAt;
    const runId = str(d.runId);
    const row: Row = this.pending.get(runId, str(d.url)) ?? {
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
    // A winner's data is never the loser cleanup's business: the machine refuses, nothing changes.
    const step = d.exhausted ? "CLEANUP_FAILED.exhausted" : "CLEANUP_FAILED";
    for (const a of this.#attemptsAt(runId, str(d.url))) this.#step(run, a, step, at);
    if (d.exhausted) this.#protect(run, "failed_cleanup", str(d.url), at);
  }

  onCleanupRequeued(e: FoldEvent, d: Data, run: Row | undefined): void {
    if (!run) return;
    const row = this.pending.get(str(d.runId), str(d.url));
    if (row) {
      const failed = row.state === "failed" || row.state === "exhausted";
      row.state = "planned";
      row.next_retry_at = null;
      this.pending.touch(row);
      if (failed)
        for (const a of this.#attemptsAt(str(d.runId), str(d.url)))
          this.#step(run, a, "CLEANUP_REQUEUED", e.recordedAt);
    }
    this.#unprotect(run, "failed_cleanup", str(d.url));
  }

  /** CleanupSucceeded and StaleAttemptCollected: the data is gone. */
  onCleanupSucceeded(e: FoldEvent, d: Data, run: Row | undefined): void {
    if (!run) return;
    const runId = str(d.runId);
    const row = this.pending.get(runId, str(d.url)) ?? { run_id: runId, url: d.url };
    this.pending.remove(row);
    for (const a of this.#attemptsAt(runId, str(d.url)))
      this.#step(run, a, "CLEANUP_SUCCEEDED", e.recordedAt);
    this.#unprotect(run, "failed_cleanup", str(d.url));
  }

  onPruned(e: FoldEvent, d: Data): void {
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
    rollup.last_pruned_at = e.recordedAt;
    this.rollups.put(rollup);
    if (typeof d.runId === "string") this.#prunedRuns.add(d.runId);
  }

  /**
   * Archived (v2, on the dataset stream): the run's `Pruned` left the hot log with its stream, and
   * this event carries its counts on. The rollups count them here; the archive's transaction takes
   * the deleted `Pruned`'s counts back off the live rollups (src/adapters/postgres/archive-queries.ts),
   * so live rows are unchanged and a replay of the hot log, which never sees that `Pruned`, counts
   * the run once. `last_pruned_at` is the latest prune either way.
   */
  onArchived(_e: FoldEvent, d: Data): void {
    const pruned = d.pruned as {
      reason: string;
      attempts: number;
      failedItems: number;
      prunedAt: string;
    } | null;
    if (pruned === null || typeof d.datasetId !== "string") return;
    const rollup: Row = this.rollups.get(d.datasetId, pruned.reason) ?? {
      dataset_id: d.datasetId,
      reason: pruned.reason,
      pruned_runs: 0,
      pruned_attempts: 0,
      pruned_failed_items: 0,
      last_pruned_at: null,
    };
    rollup.pruned_runs = (rollup.pruned_runs as number) + 1;
    rollup.pruned_attempts = (rollup.pruned_attempts as number) + pruned.attempts;
    rollup.pruned_failed_items = (rollup.pruned_failed_items as number) + pruned.failedItems;
    const at = new Date(pruned.prunedAt);
    const last = rollup.last_pruned_at;
    if (!(last instanceof Date) || last.getTime() < at.getTime()) rollup.last_pruned_at = at;
    this.rollups.put(rollup);
  }

  onRunHeartbeat(e: FoldEvent, _d: Data, run: Row | undefined): void {
    if (run) run.heartbeat_at = e.recordedAt;
  }

  onShardCoverageFailed(_e: FoldEvent, d: Data, run: Row | undefined): void {
    if (run) run.missing_shards = d.missingShards;
  }

  onManifestPublished(_e: FoldEvent, d: Data, run: Row | undefined): void {
    if (!run) return;
    run.manifest_url = d.manifestUrl;
    run.publish_progress = "manifest_published";
  }

  onRunSucceeded(e: FoldEvent, _d: Data, run: Row | undefined): void {
    if (!run) return;
    run.status = "SUCCEEDED";
    run.succeeded_at = e.recordedAt;
    run.publish_progress = "succeeded";
  }

  // --- rows, counts and floors ------------------------------------------------------------------

  /** Notes that a repeated report changed `column` of an attempt row, so the store writes it too. */
  #reported(attempt: Row, column: string): void {
    const columns = this.#reportedColumns.get(attempt) ?? new Set<string>();
    columns.add(column);
    this.#reportedColumns.set(attempt, columns);
  }

  #unindexAttempt(row: Row): void {
    const byUrl = this.#byUrl.get(str(row.run_id));
    if (row.url === null || byUrl === undefined) return;
    const list = byUrl.get(str(row.url))?.filter((r) => r !== row);
    if (list && list.length > 0) byUrl.set(str(row.url), list);
    else byUrl.delete(str(row.url));
  }

  #indexAttempt(row: Row): void {
    this.attempts.add(row);
    const byUrl = this.#byUrl.get(str(row.run_id));
    if (byUrl !== undefined) indexUrl(byUrl, row);
  }

  /**
   * A run failed after its winners were chosen but before its manifest: the selection is void.
   * Winners go, every attempt of the run steps PUBLISH_UNDONE back to what it reported (those the
   * fold does not hold, in the store), and a reopened run selects afresh.
   */
  #cancelSelection(run: Row, at: Date): void {
    const runId = str(run.run_id);
    for (const w of this.winners.rowsOfRun(runId)) this.winners.drop(this.winners.key(w));
    this.#clearedWinners.add(runId);
    this.#winnerCounts.set(runId, 0);
    run.winners_selected_at = null;
    run.publish_progress = "none";
    this.#stepAll(run, "PUBLISH_UNDONE", at);
  }

  #attemptsAt(runId: string, url: string): Row[] {
    let byUrl = this.#byUrl.get(runId);
    if (byUrl === undefined) {
      byUrl = new Map<string, Row[]>();
      for (const row of this.attempts.rowsOfRun(runId)) indexUrl(byUrl, row);
      this.#byUrl.set(runId, byUrl);
    }
    return byUrl.get(url) ?? [];
  }

  /** Every attempt row of the run the fold holds (all of them unless {@link attemptsInStore}). */
  #attemptsOf(runId: string): Row[] {
    return this.attempts.rowsOfRun(runId);
  }

  /** How many shards of the run have their winner (the run's winners are loaded whole for WinnerSelected). */
  #winnerCount(runId: string): number {
    let n = this.#winnerCounts.get(runId);
    if (n === undefined) {
      n = this.winners.rowsOfRun(runId).length;
      this.#winnerCounts.set(runId, n);
    }
    return n;
  }

  /**
   * Steps an attempt row through the attempt machine's transition table — the same table the run
   * fold uses, so the projection cannot disagree with the machine. Writes the new phase and the
   * status it means (and `cleanup_status`, kept for readers of the table), moves the run's counts,
   * and returns false (changing nothing) when the machine refuses the event.
   */
  #step(run: Row, attempt: Row, eventKey: string, at: Date): boolean {
    const next = ATTEMPT_TABLE.next(str(attempt.phase), eventKey);
    if (next === undefined) return false;
    const before = str(attempt.status);
    // Every step column is set, even when the phase stays: a loaded row holds only the columns
    // the fold reads, and the store writes all of ATTEMPT_STEP_COLUMNS back.
    const columns = stepColumnsOf(next);
    attempt.phase = columns.phase;
    attempt.status = columns.status;
    attempt.outcome = columns.outcome;
    attempt.cleanup_status = columns.cleanup_status;
    attempt.updated_at = at;
    this.attempts.touch(attempt);
    this.#move(run, before, str(attempt.status));
    return true;
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
}

/** Adds an attempt row to its run's url index. */
function indexUrl(byUrl: Map<string, Row[]>, row: Row): void {
  if (row.url === null) return;
  const list = byUrl.get(str(row.url));
  if (list) list.push(row);
  else byUrl.set(str(row.url), [row]);
}

/** The handler of each event type the projection shows; other types change nothing but `updated_at`. */
const HANDLERS: Readonly<Record<string, Handler>> = {
  DatasetRegistered: (f, e, d) => f.onDatasetPolicies(e, d),
  DatasetPoliciesChanged: (f, e, d) => f.onDatasetPolicies(e, d),
  RunStarted: (f, e, d, run) => f.onRunStarted(e, d, run),
  RunHeartbeat: (f, e, d, run) => f.onRunHeartbeat(e, d, run),
  AttemptStarted: (f, e, d, run) => f.onAttemptReported(e, d, run),
  AttemptSucceeded: (f, e, d, run) => f.onAttemptReported(e, d, run),
  AttemptFailed: (f, e, d, run) => f.onAttemptReported(e, d, run),
  WinnerSelected: (f, e, d, run) => f.onWinnerSelected(e, d, run),
  ShardCoverageFailed: (f, e, d, run) => f.onShardCoverageFailed(e, d, run),
  ManifestPublished: (f, e, d, run) => f.onManifestPublished(e, d, run),
  RunSucceeded: (f, e, d, run) => f.onRunSucceeded(e, d, run),
  RunFailed: (f, e, d, run) => f.onRunFailed(e, d, run),
  RunReopened: (f, e, d, run) => f.onRunReopened(e, d, run),
  CurrentPointerMoved: (f, e, d, run) => f.onCurrentPointerMoved(e, d, run),
  CleanupPlanned: (f, e, d, run) => f.onCleanupPlanned(e, d, run),
  CleanupFailed: (f, e, d, run) => f.onCleanupFailed(e, d, run),
  CleanupRequeued: (f, e, d, run) => f.onCleanupRequeued(e, d, run),
  CleanupSucceeded: (f, e, d, run) => f.onCleanupSucceeded(e, d, run),
  StaleAttemptCollected: (f, e, d, run) => f.onCleanupSucceeded(e, d, run),
  Pruned: (f, e, d) => f.onPruned(e, d),
  Archived: (f, e, d) => f.onArchived(e, d),
};
