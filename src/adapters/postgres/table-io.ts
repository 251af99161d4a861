import { type CompiledQuery, sql } from "kysely";
import type { Row } from "../../projections/projection-rows.js";
import { arrayLiteral } from "./array-literal.js";
import type { LedgerDb } from "./database.js";

/** SQL type of each column; drives how rows are sent in bulk and read back. */
type ColumnType = "text" | "integer" | "bigint" | "boolean" | "timestamptz" | "jsonb";
export type Columns = Readonly<Record<string, ColumnType>>;

/**
 * The statement that writes rows with one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO UPDATE`
 * per table, whatever the number of rows: a 100,000-shard publish is one statement per table, not
 * 100,000. Null when there are no rows. Compiled for `db`, not run: the projection sends its
 * writes together (see PipelinedTransaction).
 */
export function upsertRowsStatement(
  db: LedgerDb,
  schema: string,
  table: string,
  columns: Columns,
  keys: readonly string[],
  rows: readonly Row[],
): CompiledQuery | null {
  if (rows.length === 0) return null;
  const names = Object.keys(columns);
  const values = bulkValues(rows, names, columns);
  const updates = names
    .filter((n) => !keys.includes(n))
    .map((n) => sql`${sql.id(n)} = EXCLUDED.${sql.id(n)}`);
  return sql`
    INSERT INTO ${sql.id(schema, table)} (${sql.join(names.map((n) => sql.id(n)))})
    SELECT ${sql.join(names.map(values.value))} FROM ${values.from}
    ON CONFLICT (${sql.join(keys.map((k) => sql.id(k)))})
    ${updates.length > 0 ? sql`DO UPDATE SET ${sql.join(updates)}` : sql`DO NOTHING`}`.compile(db);
}

/**
 * The statement that writes `columns` of existing rows, found by `keys`, with one `UPDATE … FROM
 * unnest(…)` whatever the number of rows: cheaper than {@link upsertRowsStatement} when a few narrow
 * columns change on many rows (a selection steps every attempt of a run), and it never needs the
 * other columns. Null when there are no rows.
 */
export function updateColumnsStatement(
  db: LedgerDb,
  schema: string,
  table: string,
  types: Columns,
  keys: readonly string[],
  columns: readonly string[],
  rows: readonly Row[],
): CompiledQuery | null {
  if (rows.length === 0) return null;
  const values = bulkValues(rows, [...keys, ...columns], types);
  return sql`
    UPDATE ${sql.id(schema, table)} AS t SET ${sql.join(columns.map((c) => sql`${sql.id(c)} = ${values.value(c)}`))}
    FROM ${values.from}
    WHERE ${sql.join(
      keys.map((k) => sql`${sql.ref(`t.${k}`)} = ${values.value(k)}`),
      sql` AND `,
    )}`.compile(db);
}

/**
 * The rows' values of `names` for one bulk statement: `from`, the rows as `unnest(…) AS u(…)`,
 * and `value(name)`, a column's value in SQL. A column whose value is the same in every row goes
 * as one parameter instead of an array of copies (a run's id, its dataset, the batch's
 * timestamps, a phase many rows share): pg writes and the server parses each element of an array,
 * and for a group of 1,000 attempt reports that was a third of the upsert (7.6 → 5.1 ms; a
 * 100,000-row one 1.07 → 0.65 s, bench/RESULTS.md). At least one column stays an array, so the
 * statement still has one row per row.
 */
function bulkValues(rows: readonly Row[], names: readonly string[], types: Columns) {
  const first = rows[0] as Row;
  const constant = new Map<string, unknown>();
  for (const name of names) {
    const type = types[name] as ColumnType;
    const raw = first[name];
    const value = toParam(raw, type);
    // The same value (a shared Date, a run's id) is the same parameter without converting it.
    if (rows.every((r) => r[name] === raw || toParam(r[name], type) === value)) constant.set(name, value);
  }
  if (constant.size === names.length) constant.delete(names[0] as string);
  const varying = names.filter((n) => !constant.has(n));
  const arrays = varying.map((name) => {
    const type = types[name] as ColumnType;
    return sql`${arrayLiteral(rows.map((r) => toParam(r[name], type)))}::${sql.raw(sentAs(type))}[]`;
  });
  const value = (name: string) => {
    const type = types[name] as ColumnType;
    const sent = constant.has(name)
      ? sql`${constant.get(name)}::${sql.raw(sentAs(type))}`
      : sql.ref(`u.${name}`);
    return sentAs(type) === type ? sent : sql`${sent}::${sql.raw(type)}`;
  };
  const from = sql`unnest(${sql.join(arrays)}) AS u(${sql.join(varying.map((n) => sql.id(n)))})`;
  return { from, value };
}

/** The type a column's values are sent as: jsonb and timestamps as their text. */
function sentAs(type: ColumnType): string {
  return type === "jsonb" || type === "timestamptz" ? "text" : type;
}

/** Deletes rows whose `column` is one of `values`. */
export async function deleteWhereIn(
  db: LedgerDb,
  schema: string,
  table: string,
  column: string,
  values: readonly string[],
): Promise<void> {
  const query = deleteWhereInStatement(db, schema, table, column, values);
  if (query) await db.executeQuery(query);
}

/** The statement of {@link deleteWhereIn}; null when there is nothing to delete. */
export function deleteWhereInStatement(
  db: LedgerDb,
  schema: string,
  table: string,
  column: string,
  values: readonly string[],
): CompiledQuery | null {
  if (values.length === 0) return null;
  return sql`DELETE FROM ${sql.id(schema, table)} WHERE ${sql.id(column)} = ANY(${arrayLiteral(values)}::text[])`.compile(
    db,
  );
}

/** The statement that deletes rows by composite key; null when there are none. */
export function deleteByKeysStatement(
  db: LedgerDb,
  schema: string,
  table: string,
  keys: readonly string[],
  rows: readonly Row[],
): CompiledQuery | null {
  if (rows.length === 0) return null;
  const arrays = keys.map((k) => sql`${arrayLiteral(rows.map((r) => String(r[k])))}::text[]`);
  const match = keys.map((k) => sql`${sql.id(schema, table, k)}::text = ${sql.ref(`d.${k}`)}`);
  return sql`
    DELETE FROM ${sql.id(schema, table)} USING unnest(${sql.join(arrays)}) AS d(${sql.join(keys.map((k) => sql.id(k)))})
    WHERE ${sql.join(match, sql` AND `)}`.compile(db);
}

/** Converts a row as read by pg or PGlite to JS values: numbers, Dates, booleans, objects. */
export function normaliseRow(row: Row, columns: Columns): Row {
  const out: Row = {};
  for (const [name, type] of entriesOf(columns)) {
    const v = row[name];
    if (v === null || v === undefined) out[name] = null;
    else if (type === "integer" || type === "bigint") out[name] = Number(v);
    else if (type === "timestamptz") out[name] = v instanceof Date ? v : new Date(String(v));
    else out[name] = v;
  }
  return out;
}

// Rows are normalised by the tens of thousands (a selection loads every attempt of its run):
// the column list of each table is turned into entries once, not once per row.
const ENTRIES = new WeakMap<Columns, [string, ColumnType][]>();
function entriesOf(columns: Columns): [string, ColumnType][] {
  let entries = ENTRIES.get(columns);
  if (!entries) {
    entries = Object.entries(columns);
    ENTRIES.set(columns, entries);
  }
  return entries;
}

function toParam(value: unknown, type: ColumnType): unknown {
  if (value === null || value === undefined) return null;
  if (type === "timestamptz") return value instanceof Date ? value.toISOString() : String(value);
  if (type === "jsonb") return JSON.stringify(value);
  return value;
}
