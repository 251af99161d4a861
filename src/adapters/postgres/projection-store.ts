import { type CompiledQuery, sql } from "kysely";
import type { RecordedEvent } from "../../events/envelope.js";
import {
  ATTEMPT_FOLD_COLUMNS,
  type AttemptBulkStep,
  type FoldEvent,
  LedgerFold,
  type RowsNeeded,
  rowsNeeded,
} from "../../projections/ledger-fold.js";
import { PROJECTION_KEYS, type ProjectionTable, type Row } from "../../projections/projection-rows.js";
import { arrayLiteral } from "./array-literal.js";
import type { LedgerDb } from "./database.js";
import type { InlineProjection } from "./inline-projection.js";
import { handled, type SendStatement, sequentialSender } from "./pipelined-transaction.js";
import { PROJECTION_COLUMNS } from "./projection-schema.js";
import {
  type Columns,
  deleteByKeysStatement,
  deleteWhereInStatement,
  normaliseRow,
  updateColumnsStatement,
  upsertRowsStatement,
} from "./table-io.js";

/**
 * The inline projection that folds the ledger's events into the projection tables. It works in
 * batches: load the rows the events touch, fold the events over them in order in memory with the
 * one pure fold ({@link LedgerFold}), write back only what changed with one bulk statement per
 * table. Replay uses the same code. Its reads can be sent before the events are stored and its
 * writes with the COMMIT ({@link foldAhead}).
 *
 * @example
 * ```ts
 * const log = createPgEventLog({ db, schema, projections: [ledgerProjection] })
 * ```
 */
export const ledgerProjection: InlineProjection = {
  name: "ledger",
  apply: (trx, events, schema) => applyLedgerEvents(trx, schema, events),
  ahead: (send, db, schema, events) => foldAhead(send, db, schema, events),
};

/** Folds `events` into the projection tables of `schema`, one statement after another. */
export async function applyLedgerEvents(
  db: LedgerDb,
  schema: string,
  events: readonly RecordedEvent[],
): Promise<void> {
  if (events.length === 0) return;
  const { done } = await foldAhead(executing(db), db, schema, events)(events);
  await done;
}

/** A sender that runs each statement on `db` once the one before it has answered. */
function executing(db: LedgerDb): SendStatement {
  return sequentialSender((query) => db.executeQuery<Row>(query).then((r) => r.rows));
}

/**
 * Sends, through `send`, the reads of every row `events` may touch, and answers the step that
 * folds the events actually written (`events`, or those of them the log did not hold already)
 * once those reads have answered, then sends the writes of what changed, answering as soon as
 * they are sent (`done` settles with them). The reads may be sent before the events are stored,
 * behind the append in the same transaction: they only depend on what the events name.
 */
function foldAhead(
  send: SendStatement,
  db: LedgerDb,
  schema: string,
  events: readonly FoldEvent[],
): (written: readonly FoldEvent[]) => Promise<{ done: Promise<unknown> }> {
  const loaded = sendLoads(send, db, schema, rowsNeeded(events));
  return async (written) => {
    const fold = new LedgerFold();
    await loaded(fold);
    for (const e of written) fold.apply(e);
    return sendChanges(send, db, schema, fold);
  };
}

/**
 * Sends the reads of the rows `needed` names, locking runs and the dataset rows as it goes, and
 * answers the step that puts their answers into a fold. Every read is sent at once: none depends
 * on another's answer (a run's dataset row is found by a subquery on the run row, which the
 * statement before has locked).
 */
function sendLoads(
  send: SendStatement,
  db: LedgerDb,
  schema: string,
  needed: RowsNeeded,
): (fold: LedgerFold) => Promise<void> {
  const q = (table: ProjectionTable, where: ReturnType<typeof sql>, lock: ReturnType<typeof sql> = sql``) =>
    handled(
      send(sql`SELECT * FROM ${sql.id(schema, table)} WHERE ${where} ${lock}`.compile(db)).then((rows) =>
        rows.map((row) => normaliseRow(row, PROJECTION_COLUMNS[table])),
      ),
    );
  // Attempt rows: only the columns the fold reads (a selection loads every attempt of the run).
  const attemptColumns: Columns = Object.fromEntries(
    ATTEMPT_FOLD_COLUMNS.map((c) => [c, PROJECTION_COLUMNS.attempt_records[c] as Columns[string]]),
  );
  const qAttempts = (where: ReturnType<typeof sql>) =>
    handled(
      send(
        sql`SELECT ${sql.join(ATTEMPT_FOLD_COLUMNS.map((c) => sql.id(c)))} FROM ${sql.id(schema, "attempt_records")} WHERE ${where}`.compile(
          db,
        ),
      ).then((rows) => rows.map((row) => normaliseRow(row, attemptColumns))),
    );
  // Row locks, because appends to different streams can touch the same rows (a pointer move on
  // the dataset stream rewrites run rows that a late attempt report on the run stream updates):
  // runs are locked for update in id order, then the dataset rows — shared by ordinary run events
  // (so runs of one dataset still append in parallel), exclusive when this batch writes one or its
  // rollups. One lock order everywhere, so projections never deadlock each other.
  const runs = q("runs", sql`run_id = ANY(${needed.runIds}::text[]) ORDER BY run_id`, sql`FOR UPDATE`);
  const datasets = q(
    "datasets",
    sql`(dataset_id = ANY(${[...needed.datasetIds].sort()}::text[])
      OR dataset_id IN (SELECT r.dataset_id FROM ${sql.id(schema, "runs")} r WHERE r.run_id = ANY(${needed.runIds}::text[])))
      ORDER BY dataset_id`,
    needed.writesDataset ? sql`FOR UPDATE` : sql`FOR SHARE`,
  );
  // A selection (or its undoing) reads the run's winners; its steps of every attempt row of the
  // run are applied in the store, set-based (applyBulkStep), so those rows are not loaded.
  const winners =
    needed.selectionRuns.length > 0
      ? q("winners", sql`run_id = ANY(${needed.selectionRuns}::text[])`)
      : undefined;
  // A run that starts in this batch has no rows anywhere yet: what is read for it comes back empty.
  const { attemptKeys, urls } = needed;
  const byKey =
    attemptKeys.length > 0
      ? qAttempts(
          sql`(run_id, attempt_key) IN (SELECT * FROM unnest(${arrayLiteral(attemptKeys.map((k) => k[0]))}::text[], ${arrayLiteral(attemptKeys.map((k) => k[1]))}::text[]))`,
        )
      : undefined;
  let byUrl: Promise<Row[]> | undefined;
  let pending: Promise<Row[]> | undefined;
  if (urls.length > 0) {
    const atUrls = sql`(run_id, url) IN (SELECT * FROM unnest(${arrayLiteral(urls.map((u) => u[0]))}::text[], ${arrayLiteral(urls.map((u) => u[1]))}::text[]))`;
    byUrl = qAttempts(atUrls);
    pending = q("pending_cleanup", atUrls);
  }
  const floors =
    needed.floorDatasets.length > 0
      ? q("retention_floors", sql`dataset_id = ANY(${needed.floorDatasets}::text[])`)
      : undefined;
  const rollups =
    needed.prunedDatasets.length > 0
      ? q("rollups", sql`dataset_id = ANY(${needed.prunedDatasets}::text[])`)
      : undefined;
  return async (fold) => {
    for (const r of await runs) {
      fold.runs.add(r);
      // An existing run's attempt rows stay in the store but for those the batch names.
      fold.attemptsInStore(r.run_id as string);
    }
    for (const r of await datasets) fold.datasets.add(r);
    for (const r of (await winners) ?? []) fold.winners.add(r);
    // Batches of attempt rows can be hundreds of thousands long: taken with loops, never with
    // spread arguments (V8 overflows its call stack at ~125k arguments).
    const attemptRows = [(await byKey) ?? [], (await byUrl) ?? []];
    for (const r of (await pending) ?? []) fold.pending.add(r);
    for (const rows of attemptRows) for (const r of rows) fold.loadAttempt(r);
    for (const r of (await floors) ?? []) fold.floors.add(r);
    for (const r of (await rollups) ?? []) fold.rollups.add(r);
  };
}

/**
 * The statement of one of the fold's steps of attempt rows it does not hold: one `UPDATE` of the
 * rows of the run (or of the named keys) in the phases the step moves, to the columns the fold
 * computed for each phase (SQL only applies the fold's mapping), leaving alone the rows the fold
 * holds. It answers how many rows left each phase (see {@link movedByPhase}).
 */
function bulkStepStatement(db: LedgerDb, schema: string, step: AttemptBulkStep): CompiledQuery | null {
  if (step.moves.length === 0) return null;
  const m = step.moves;
  return sql`
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
    SELECT from_phase, count(*)::int AS n FROM stepped GROUP BY from_phase`.compile(db);
}

/** How many rows left each phase, from a bulk step's answer. */
function movedByPhase(rows: readonly Row[]): Map<string, number> {
  const moved = new Map<string, number>();
  for (const r of rows) moved.set(r.from_phase as string, Number(r.n));
  return moved;
}

/**
 * Writes back what the fold changed, one statement after another on `db` (see {@link sendChanges}).
 * A replay (ReplayStore, replay-store.ts) writes what it held with it too.
 */
export async function storeChanges(db: LedgerDb, schema: string, fold: LedgerFold): Promise<void> {
  const { done } = await sendChanges(executing(db), db, schema, fold);
  await done;
}

/**
 * Sends the writes of what the fold changed: first its steps of attempt rows it did not load
 * (set-based, see {@link bulkStepStatement}; each awaited, since their counts go back into the run
 * rows), then one bulk upsert and one bulk delete per table, and for attempt rows that existed,
 * one bulk update of just the columns that changed. Answers once the last is sent; `done` settles
 * when all have answered.
 */
async function sendChanges(
  send: SendStatement,
  db: LedgerDb,
  schema: string,
  fold: LedgerFold,
): Promise<{ done: Promise<unknown> }> {
  for (const step of fold.attemptBulkSteps()) {
    const statement = bulkStepStatement(db, schema, step);
    fold.bulkStepped(step, statement ? movedByPhase(await send(statement)) : new Map());
  }
  const changes = fold.changes();
  const sent: Promise<unknown>[] = [];
  const write = (statement: CompiledQuery | null) => {
    if (statement) sent.push(send(statement));
  };
  write(deleteWhereInStatement(db, schema, "winners", "run_id", changes.clearedWinners));
  for (const { table, upserts, deletes } of changes.tables) {
    write(upsertRowsStatement(db, schema, table, PROJECTION_COLUMNS[table], PROJECTION_KEYS[table], upserts));
    write(deleteByKeysStatement(db, schema, table, PROJECTION_KEYS[table], deletes));
  }
  for (const { columns, rows } of changes.attemptUpdates) {
    write(
      updateColumnsStatement(
        db,
        schema,
        "attempt_records",
        PROJECTION_COLUMNS.attempt_records,
        PROJECTION_KEYS.attempt_records,
        columns,
        rows,
      ),
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
    write(deleteWhereInStatement(db, schema, table, "run_id", changes.prunedRuns));
  }
  return { done: handled(Promise.all(sent)) };
}
