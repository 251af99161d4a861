import { sql } from "kysely";
import { type FoldEvent, LedgerFold, rowsNeeded } from "../../projections/ledger-fold.js";
import type { ProjectionTable, Row } from "../../projections/projection-rows.js";
import type { LedgerDb } from "./database.js";
import { PROJECTION_COLUMNS } from "./projection-schema.js";
import { storeChanges } from "./projection-store.js";
import { deleteWhereIn, normaliseRow } from "./table-io.js";

/**
 * How a replay reads and how much it holds: events per page of the log; the projection rows of
 * runs (runs, attempts, winners, pending items) it keeps in memory before it writes them all and
 * lets them go (~100,000 rows are ~50 MB of heap); whether it skips the events of a run that it
 * will see pruned (`WRITES_BEYOND_ITS_RUN` in src/projections/ledger-fold.ts). Tests lower the first two to make a small history
 * page and evict often, and switch the skip off to fold every event.
 *
 * @internal the replay's own; tests and the bench set it.
 */
export const REPLAY_LIMITS = { pageSize: 5_000, heldRows: 100_000, skipPrunedHistory: true };

/** Tables whose rows belong to one run: a pruned run leaves none behind. */
const RUN_TABLES = ["attempt_records", "winners", "pending_cleanup", "retention_floors", "runs"] as const;

/**
 * The store of a replay (rebuild, audit, a migration's rebuild in place): the inline projection's
 * fold ({@link LedgerFold}), kept in memory across pages instead of loading, folding and writing
 * back the rows each page touches. A replay writes into tables only it writes, so what it holds is
 * the truth: rows are written once, when memory is full (then every run is let go, and a run that
 * shows up again is loaded back whole) or at the end. Most runs of a long log are pruned before
 * either, and their rows are never written at all.
 *
 * The fold is the live path's own, page for page: the same events in the same order over the same
 * rows give the same rows. Datasets, rollups and retention floors are few and stay held throughout.
 *
 * @internal used by `replayInto`.
 */
export class ReplayStore {
  #fold = new LedgerFold();
  readonly #db: LedgerDb;
  readonly #schema: string;
  /**
   * The tables may hold rows this replay did not write (a tail replayed after a first replay):
   * anything not held may be in the store, and is looked for there. Otherwise the tables started
   * empty and the store holds exactly what this replay wrote.
   */
  readonly #storeMayHoldAny: boolean;
  /** Runs whose rows this replay wrote to the store (and has not deleted since). */
  readonly #storedRuns = new Set<string>();
  /** Runs pruned whose rows may be in the store: deleted there at the next write. */
  readonly #prunedStored = new Set<string>();
  /** Datasets, floors by dataset and rollups by dataset already looked for in the store. */
  readonly #loaded = { datasets: new Set<string>(), floors: new Set<string>(), rollups: new Set<string>() };

  constructor(db: LedgerDb, schema: string, options: { empty: boolean }) {
    this.#db = db;
    this.#schema = schema;
    this.#storeMayHoldAny = !options.empty;
  }

  /** Folds one page of events, in order, after loading back what it touches that is not held. */
  async apply(events: readonly FoldEvent[]): Promise<void> {
    if (events.length === 0) return;
    await this.#load(events);
    const fold = this.#fold;
    for (const e of events) fold.apply(e);
    this.#forgetUnstoredDeletions();
    for (const runId of fold.forgetPruned()) {
      if (!this.#mayBeStored(runId)) continue;
      this.#prunedStored.add(runId);
      this.#storedRuns.delete(runId);
    }
    const held =
      fold.runs.rows.size + fold.attempts.rows.size + fold.winners.rows.size + fold.pending.rows.size;
    if (held > REPLAY_LIMITS.heldRows) await this.#evict();
  }

  /** Writes everything held: the replay is complete. */
  async finish(): Promise<void> {
    await this.#write();
  }

  #mayBeStored(runId: string): boolean {
    return this.#storeMayHoldAny || this.#storedRuns.has(runId);
  }

  /**
   * A row removed from the fold is deleted from the store at the next write; one the store never
   * had (its run was never written) needs no deleting, and is not remembered (a replay of a long
   * log removes every pending item its cleanup finishes).
   */
  #forgetUnstoredDeletions(): void {
    if (this.#storeMayHoldAny) return;
    const f = this.#fold;
    for (const state of [f.attempts, f.winners, f.pending, f.floors, f.runs]) {
      for (const [k, row] of state.deleted)
        if (!this.#storedRuns.has(row.run_id as string)) state.deleted.delete(k);
    }
  }

  /** Writes everything held and lets go of every run; datasets, rollups and floors stay held. */
  async #evict(): Promise<void> {
    await this.#write();
    const next = new LedgerFold();
    for (const row of this.#fold.datasets.rows.values()) next.datasets.add(row);
    for (const row of this.#fold.rollups.rows.values()) next.rollups.add(row);
    for (const row of this.#fold.floors.rows.values()) next.floors.add(row);
    this.#fold = next;
  }

  async #write(): Promise<void> {
    if (this.#prunedStored.size > 0) {
      const runs = [...this.#prunedStored];
      for (const table of RUN_TABLES) await deleteWhereIn(this.#db, this.#schema, table, "run_id", runs);
      this.#prunedStored.clear();
    }
    await storeChanges(this.#db, this.#schema, this.#fold);
    for (const runId of this.#fold.runs.rows.keys()) this.#storedRuns.add(runId);
  }

  async #select(table: ProjectionTable, where: ReturnType<typeof sql>): Promise<Row[]> {
    const { rows } = await sql<Row>`SELECT * FROM ${sql.id(this.#schema, table)} WHERE ${where}`.execute(
      this.#db,
    );
    return rows.map((row) => normaliseRow(row, PROJECTION_COLUMNS[table]));
  }

  /**
   * Loads back what the page touches, is not held and may be in the store: a run written out
   * comes back whole (its row, every attempt, winner, pending item and floor), so the fold holds
   * every row of every run it folds. A row the fold holds, or has removed, is newer than the
   * store's and stays.
   */
  async #load(events: readonly FoldEvent[]): Promise<void> {
    // Nothing written yet, in a store that started empty: nothing to look for (most of a replay).
    if (!this.#storeMayHoldAny && this.#storedRuns.size === 0) return;
    const fold = this.#fold;
    const needed = rowsNeeded(events);
    const revive = needed.runIds.filter(
      (id) => fold.runs.get(id) === undefined && !this.#prunedStored.has(id) && this.#mayBeStored(id),
    );
    if (revive.length > 0) {
      const ofRuns = sql`run_id = ANY(${revive}::text[])`;
      for (const r of await this.#select("runs", ofRuns)) keepLoaded(fold.runs, r);
      for (const r of await this.#select("attempt_records", ofRuns)) fold.loadAttempt(r);
      for (const r of await this.#select("winners", ofRuns)) keepLoaded(fold.winners, r);
      for (const r of await this.#select("pending_cleanup", ofRuns)) keepLoaded(fold.pending, r);
      for (const r of await this.#select("retention_floors", ofRuns)) keepLoaded(fold.floors, r);
    }
    // Datasets, floors and rollups this replay did not write can only be in a store it did not
    // start empty; each is looked for once.
    if (!this.#storeMayHoldAny) return;
    const datasets = new Set(needed.datasetIds);
    for (const id of needed.runIds) {
      const run = fold.runs.get(id);
      if (run) datasets.add(run.dataset_id as string);
    }
    const lookFor = async (
      table: ProjectionTable,
      ids: Iterable<string>,
      loaded: Set<string>,
      hold: (row: Row) => void,
      held: (id: string) => boolean = () => false,
    ) => {
      const missing = [...ids].filter((id) => !loaded.has(id) && !held(id));
      if (missing.length === 0) return;
      for (const r of await this.#select(table, sql`dataset_id = ANY(${missing}::text[])`)) hold(r);
      for (const id of missing) loaded.add(id);
    };
    await lookFor(
      "datasets",
      datasets,
      this.#loaded.datasets,
      (r) => keepLoaded(fold.datasets, r),
      (id) => fold.datasets.get(id) !== undefined,
    );
    await lookFor("retention_floors", needed.floorDatasets, this.#loaded.floors, (r) =>
      keepLoaded(fold.floors, r),
    );
    await lookFor("rollups", needed.prunedDatasets, this.#loaded.rollups, (r) => keepLoaded(fold.rollups, r));
  }
}

/** Holds a row loaded from the store unless the fold holds (or removed) a newer one. */
function keepLoaded(state: LedgerFold["runs"], row: Row): void {
  const k = state.key(row);
  if (!state.rows.has(k) && !state.deleted.has(k)) state.add(row);
}
