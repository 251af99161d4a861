import { sql } from "kysely";
import type { Row } from "../../projections/projection-rows.js";
import type { LedgerDb } from "./database.js";

/** SQL type of each column; drives how rows are sent in bulk and read back. */
type ColumnType = "text" | "integer" | "bigint" | "boolean" | "timestamptz" | "jsonb";
export type Columns = Readonly<Record<string, ColumnType>>;

/**
 * Writes rows with one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO UPDATE` per table, whatever
 * the number of rows: a 100,000-shard publish is one statement per table, not 100,000.
 */
export async function upsertRows(
  db: LedgerDb,
  schema: string,
  table: string,
  columns: Columns,
  keys: readonly string[],
  rows: readonly Row[],
): Promise<void> {
  if (rows.length === 0) return;
  const names = Object.keys(columns);
  const arrays = names.map((name) => {
    const type = columns[name] as ColumnType;
    const values = rows.map((r) => toParam(r[name], type));
    const arrayType = type === "jsonb" || type === "timestamptz" ? "text" : type;
    return sql`${values}::${sql.raw(arrayType)}[]`;
  });
  const selected = names.map((name) => {
    const type = columns[name] as ColumnType;
    return type === "jsonb" || type === "timestamptz"
      ? sql`${sql.ref(`u.${name}`)}::${sql.raw(type)}`
      : sql.ref(`u.${name}`);
  });
  const updates = names
    .filter((n) => !keys.includes(n))
    .map((n) => sql`${sql.id(n)} = EXCLUDED.${sql.id(n)}`);
  await sql`
    INSERT INTO ${sql.id(schema, table)} (${sql.join(names.map((n) => sql.id(n)))})
    SELECT ${sql.join(selected)} FROM unnest(${sql.join(arrays)}) AS u(${sql.join(names.map((n) => sql.id(n)))})
    ON CONFLICT (${sql.join(keys.map((k) => sql.id(k)))})
    ${updates.length > 0 ? sql`DO UPDATE SET ${sql.join(updates)}` : sql`DO NOTHING`}`.execute(db);
}

/**
 * Writes `columns` of existing rows, found by `keys`, with one `UPDATE … FROM unnest(…)` whatever
 * the number of rows: cheaper than {@link upsertRows} when a few narrow columns change on many
 * rows (a selection steps every attempt of a run), and it never needs the other columns.
 */
export async function updateColumns(
  db: LedgerDb,
  schema: string,
  table: string,
  types: Columns,
  keys: readonly string[],
  columns: readonly string[],
  rows: readonly Row[],
): Promise<void> {
  if (rows.length === 0) return;
  const names = [...keys, ...columns];
  const arrays = names.map((name) => {
    const type = types[name] as ColumnType;
    const arrayType = type === "jsonb" || type === "timestamptz" ? "text" : type;
    return sql`${rows.map((r) => toParam(r[name], type))}::${sql.raw(arrayType)}[]`;
  });
  const value = (name: string) => {
    const type = types[name] as ColumnType;
    return type === "jsonb" || type === "timestamptz"
      ? sql`${sql.ref(`u.${name}`)}::${sql.raw(type)}`
      : sql.ref(`u.${name}`);
  };
  await sql`
    UPDATE ${sql.id(schema, table)} AS t SET ${sql.join(columns.map((c) => sql`${sql.id(c)} = ${value(c)}`))}
    FROM unnest(${sql.join(arrays)}) AS u(${sql.join(names.map((n) => sql.id(n)))})
    WHERE ${sql.join(
      keys.map((k) => sql`${sql.ref(`t.${k}`)} = ${sql.ref(`u.${k}`)}`),
      sql` AND `,
    )}`.execute(db);
}

/** Deletes rows whose `column` is one of `values`. */
export async function deleteWhereIn(
  db: LedgerDb,
  schema: string,
  table: string,
  column: string,
  values: readonly string[],
): Promise<void> {
  if (values.length === 0) return;
  await sql`DELETE FROM ${sql.id(schema, table)} WHERE ${sql.id(column)} = ANY(${[...values]}::text[])`.execute(
    db,
  );
}

/** Deletes rows by composite key. */
export async function deleteByKeys(
  db: LedgerDb,
  schema: string,
  table: string,
  keys: readonly string[],
  rows: readonly Row[],
): Promise<void> {
  if (rows.length === 0) return;
  const arrays = keys.map((k) => sql`${rows.map((r) => String(r[k]))}::text[]`);
  const match = keys.map((k) => sql`${sql.id(schema, table, k)}::text = ${sql.ref(`d.${k}`)}`);
  await sql`
    DELETE FROM ${sql.id(schema, table)} USING unnest(${sql.join(arrays)}) AS d(${sql.join(keys.map((k) => sql.id(k)))})
    WHERE ${sql.join(match, sql` AND `)}`.execute(db);
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
