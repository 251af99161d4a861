import { sql } from "kysely";
import type { RecordedEvent } from "../../events/envelope.js";
import {
  ATTEMPT_FOLD_COLUMNS,
  type AttemptBulkStep,
  LedgerFold,
  rowsNeeded,
} from "../../projections/ledger-fold.js";
import { PROJECTION_KEYS, type ProjectionTable, type Row } from "../../projections/projection-rows.js";
import { arrayLiteral } from "./array-literal.js";
import type { LedgerDb } from "./database.js";
import type { InlineProjection } from "./inline-projection.js";
import { PROJECTION_COLUMNS } from "./projection-schema.js";
import {
  type Columns,
  deleteByKeys,
  deleteWhereIn,
  normaliseRow,
  updateColumns,
  upsertRows,
} from "./table-io.js";

/**
 * The inline projection that folds the ledger's events into the projection tables. It works in
 * batches: load the rows the events touch, fold the events over them in order in memory with the
 * one pure fold ({@link LedgerFold}), write back only what changed with one bulk statement per
 * table. Replay uses the same code.
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
  const fold = new LedgerFold();
  await loadRows(db, schema, fold, events);
  for (const e of events) fold.apply(e);
  await storeChanges(db, schema, fold);
}

/** Loads into `fold` the rows `events` touch, locking runs and the dataset rows as it goes. */
async function loadRows(
  db: LedgerDb,
  schema: string,
  fold: LedgerFold,
  events: readonly RecordedEvent[],
): Promise<void> {
  const needed = rowsNeeded(events);
  const q = (table: ProjectionTable, where: ReturnType<typeof sql>, lock: ReturnType<typeof sql> = sql``) =>
    sql<Row>`SELECT * FROM ${sql.id(schema, table)} WHERE ${where} ${lock}`
      .execute(db)
      .then((r) => r.rows.map((row) => normaliseRow(row, PROJECTION_COLUMNS[table])));
  // Attempt rows: only the columns the fold reads (a selection loads every attempt of the run).
  const attemptColumns: Columns = Object.fromEntries(
    ATTEMPT_FOLD_COLUMNS.map((c) => [c, PROJECTION_COLUMNS.attempt_records[c] as Columns[string]]),
  );
  const qAttempts = (where: ReturnType<typeof sql>) =>
    sql<Row>`SELECT ${sql.join(ATTEMPT_FOLD_COLUMNS.map((c) => sql.id(c)))} FROM ${sql.id(schema, "attempt_records")} WHERE ${where}`
      .execute(db)
      .then((r) => r.rows.map((row) => normaliseRow(row, attemptColumns)));
  // Row locks, because appends to different streams can touch the same rows (a pointer move on
  // the dataset stream rewrites run rows that a late attempt report on the run stream updates):
  // runs are locked for update in id order, then the dataset row — shared by ordinary run events
  // (so runs of one dataset still append in parallel), exclusive when this batch writes it or its
  // rollups. One lock order everywhere, so projections never deadlock each other.
  const existing = new Set<string>();
  const datasetIds = new Set(needed.datasetIds);
  for (const r of await q(
    "runs",
    sql`run_id = ANY(${needed.runIds}::text[]) ORDER BY run_id`,
    sql`FOR UPDATE`,
  )) {
    fold.runs.add(r);
    // An existing run's attempt rows stay in the store but for those the batch names.
    fold.attemptsInStore(r.run_id as string);
    existing.add(r.run_id as string);
    datasetIds.add(r.dataset_id as string);
  }
  // A run that starts in this batch and has no row yet has no attempts, cleanup items or
  // floors yet either: nothing to load for it (most runs of a replay page are such runs).
  const isNew = (runId: string) => needed.startedHere.has(runId) && !existing.has(runId);
  for (const r of await q(
    "datasets",
    sql`dataset_id = ANY(${[...datasetIds].sort()}::text[]) ORDER BY dataset_id`,
    needed.writesDataset ? sql`FOR UPDATE` : sql`FOR SHARE`,
  ))
    fold.datasets.add(r);
  // Batches of attempt rows can be hundreds of thousands long: append them with loops, never
  // with spread arguments (V8 overflows its call stack at ~125k arguments).
  const attemptRows: Row[] = [];
  const addAll = (rows: readonly Row[]) => {
    for (const r of rows) attemptRows.push(r);
  };
  // A selection (or its undoing) reads the run's winners; its steps of every attempt row of the
  // run are applied in the store, set-based (applyBulkStep), so those rows are not loaded.
  const selectionRuns = needed.selectionRuns.filter((id) => !isNew(id));
  if (selectionRuns.length > 0) {
    for (const r of await q("winners", sql`run_id = ANY(${selectionRuns}::text[])`)) fold.winners.add(r);
  }
  const loadKeys = needed.attemptKeys.filter((k) => !isNew(k[0]));
  if (loadKeys.length > 0) {
    addAll(
      await qAttempts(
        sql`(run_id, attempt_key) IN (SELECT * FROM unnest(${arrayLiteral(loadKeys.map((k) => k[0]))}::text[], ${arrayLiteral(loadKeys.map((k) => k[1]))}::text[]))`,
      ),
    );
  }
  const loadUrls = needed.urls.filter((u) => !isNew(u[0]));
  if (loadUrls.length > 0) {
    const runs = arrayLiteral(loadUrls.map((u) => u[0]));
    const us = arrayLiteral(loadUrls.map((u) => u[1]));
    const atUrls = sql`(run_id, url) IN (SELECT * FROM unnest(${runs}::text[], ${us}::text[]))`;
    addAll(await qAttempts(atUrls));
    for (const r of await q(
      "pending_cleanup",
      sql`(run_id, url) IN (SELECT * FROM unnest(${runs}::text[], ${us}::text[]))`,
    ))
      fold.pending.add(r);
  }
  for (const r of attemptRows) fold.loadAttempt(r);
  if (needed.floorDatasets.length > 0) {
    for (const r of await q("retention_floors", sql`dataset_id = ANY(${needed.floorDatasets}::text[])`))
      fold.floors.add(r);
  }
  if (needed.prunedDatasets.length > 0) {
    for (const r of await q("rollups", sql`dataset_id = ANY(${needed.prunedDatasets}::text[])`))
      fold.rollups.add(r);
  }
}

/**
 * Applies one of the fold's steps of attempt rows it does not hold: one `UPDATE` of the rows of
 * the run (or of the named keys) in the phases the step moves, to the columns the fold computed
 * for each phase (SQL only applies the fold's mapping), leaving alone the rows the fold holds.
 * Answers how many rows left each phase.
 */
async function applyBulkStep(
  db: LedgerDb,
  schema: string,
  step: AttemptBulkStep,
): Promise<Map<string, number>> {
  const moved = new Map<string, number>();
  if (step.moves.length === 0) return moved;
  const m = step.moves;
  const { rows } = await sql<{ from_phase: string; n: number }>`
    WITH m(from_phase, phase, status, outcome, cleanup_status) AS (
      SELECT * FROM unnest(
        ${m.map((x) => x.from)}::text[], ${m.map((x) => x.to.phase)}::text[],
        ${m.map((x) => x.to.status)}::text[], ${m.map((x) => x.to.outcome)}::text[],
        ${m.map((x) => x.to.cleanup_status)}::text[])
    ), stepped AS (
      UPDATE ${sql.id(schema, "attempt_records")} AS a
      SET phase = m.phase, status = m.status, outcome = m.outcome, cleanup_status = m.cleanup_status,
        updated_at = ${step.at}::timestamptz
      FROM m
      WHERE a.run_id = ${step.runId} AND a.phase = m.from_phase
        ${step.keys === null ? sql`` : sql`AND a.attempt_key = ANY(${step.keys}::text[])`}
        ${step.held.length === 0 ? sql`` : sql`AND NOT (a.attempt_key = ANY(${step.held}::text[]))`}
      RETURNING m.from_phase
    )
    SELECT from_phase, count(*)::int AS n FROM stepped GROUP BY from_phase`.execute(db);
  for (const r of rows) moved.set(r.from_phase, Number(r.n));
  return moved;
}

/**
 * Writes back what the fold changed: first its steps of attempt rows it did not load (set-based,
 * see {@link applyBulkStep}; their counts go back into the run rows), then one bulk upsert and one
 * bulk delete per table, and for attempt rows that existed, one bulk update of just the columns
 * that changed. A replay (ReplayStore, replay-store.ts) writes what it held with it too.
 */
export async function storeChanges(db: LedgerDb, schema: string, fold: LedgerFold): Promise<void> {
  for (const step of fold.attemptBulkSteps()) fold.bulkStepped(step, await applyBulkStep(db, schema, step));
  const changes = fold.changes();
  await deleteWhereIn(db, schema, "winners", "run_id", changes.clearedWinners);
  for (const { table, upserts, deletes } of changes.tables) {
    await upsertRows(db, schema, table, PROJECTION_COLUMNS[table], PROJECTION_KEYS[table], upserts);
    await deleteByKeys(db, schema, table, PROJECTION_KEYS[table], deletes);
  }
  for (const { columns, rows } of changes.attemptUpdates) {
    await updateColumns(
      db,
      schema,
      "attempt_records",
      PROJECTION_COLUMNS.attempt_records,
      PROJECTION_KEYS.attempt_records,
      columns,
      rows,
    );
  }
  // A pruned run leaves no row behind in any table (the rollups keep its counts).
  for (const table of [
    "attempt_records",
    "winners",
    "pending_cleanup",
    "retention_floors",
    "runs",
  ] as const) {
    await deleteWhereIn(db, schema, table, "run_id", changes.prunedRuns);
  }
}
