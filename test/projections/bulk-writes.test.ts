import { type CompiledQuery, sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Columns,
  normaliseRow,
  updateColumnsStatement,
  upsertRowsStatement,
} from "../../src/adapters/postgres/table-io.js";
import type { Row } from "../../src/projections/projection-rows.js";
import { BACKEND, openTestDatabase } from "../support/database.js";

// The bulk writers send a column whose value is the same in every row as one parameter and the
// others as arrays. Whatever mix of the two a batch has — nothing varying but the key, everything
// equal (one row), a constant null, a constant timestamp or jsonb — the table must end holding
// exactly the rows written.

type TestDb = Awaited<ReturnType<typeof openTestDatabase>>;

const COLUMNS: Columns = {
  id: "text",
  part: "integer",
  big: "bigint",
  note: "text",
  flag: "boolean",
  at: "timestamptz",
  doc: "jsonb",
};
const KEYS = ["id", "part"];
const T0 = new Date("2026-01-01T00:00:00.000Z");

function row(i: number, overrides: Partial<Row> = {}): Row {
  return {
    id: "same-id",
    part: i,
    big: 2 ** 40,
    note: null,
    flag: true,
    at: T0,
    doc: { tags: ["a", 'quote"d'], n: 1 },
    ...overrides,
  };
}

describe(`bulk writes with constant columns (${BACKEND})`, () => {
  let database: TestDb;
  const table = "bulk_rows";
  const read = async (): Promise<Row[]> => {
    const { rows } =
      await sql<Row>`SELECT * FROM ${sql.id(database.schema, table)} ORDER BY id, part`.execute(database.db);
    return rows.map((r) => normaliseRow(r, COLUMNS));
  };
  beforeAll(async () => {
    database = await openTestDatabase("bulkwrites");
    await sql`CREATE TABLE ${sql.id(database.schema, table)} (id text, part integer, big bigint, note text,
      flag boolean, at timestamptz, doc jsonb, PRIMARY KEY (id, part))`.execute(database.db);
  });
  afterAll(() => database.close());
  const run = async (statement: CompiledQuery | null) => {
    expect(statement).not.toBeNull();
    if (statement) await database.db.executeQuery(statement);
  };

  it("upserts and updates whatever mix of constant and varying columns a batch has", async () => {
    const schema = database.schema;
    const expected = new Map<string, Row>();
    const upsert = async (rows: Row[]) => {
      await run(upsertRowsStatement(database.db, schema, table, COLUMNS, KEYS, rows));
      for (const r of rows) expected.set(`${r.id}/${r.part}`, r);
    };
    // Only the key's second column varies.
    await upsert([0, 1, 2].map((i) => row(i)));
    // One row: every column is "constant".
    await upsert([row(10, { id: "alone", note: "n", flag: false, doc: null })]);
    // Every column varies, nulls among them.
    await upsert(
      [20, 21].map((i) =>
        row(i, {
          id: `id-${i}`,
          big: i,
          note: i === 20 ? null : "x",
          flag: i === 21,
          at: new Date(T0.getTime() + i),
          doc: i === 20 ? null : { i },
        }),
      ),
    );
    // Overwrites existing rows with new constants.
    await upsert([0, 1].map((i) => row(i, { note: "updated", at: new Date(T0.getTime() + 5) })));
    const byKey = (rows: Row[]) =>
      [...rows].sort((a, b) => `${a.id}/${a.part}`.localeCompare(`${b.id}/${b.part}`));
    expect(byKey(await read())).toEqual(byKey([...expected.values()]));

    // Updates by key: a constant column, a varying one, a constant key column.
    const changed: Row[] = [0, 1, 2].map((i) => ({ ...row(i), note: `n${i}`, flag: false }));
    await run(updateColumnsStatement(database.db, schema, table, COLUMNS, KEYS, ["note", "flag"], changed));
    for (const r of changed) {
      const key = `${r.id}/${r.part}`;
      expected.set(key, { ...expected.get(key), note: r.note, flag: r.flag });
    }
    // One row, every column constant.
    await run(
      updateColumnsStatement(
        database.db,
        schema,
        table,
        COLUMNS,
        KEYS,
        ["doc"],
        [{ id: "alone", part: 10, doc: [1] }],
      ),
    );
    expected.set("alone/10", { ...expected.get("alone/10"), doc: [1] });
    expect(byKey(await read())).toEqual(byKey([...expected.values()]));
  });
});
