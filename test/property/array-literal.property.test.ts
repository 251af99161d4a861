import { createRequire } from "node:module";
import fc from "fast-check";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { arrayLiteral } from "../../src/adapters/postgres/array-literal.js";
import type { Database } from "../../src/adapters/postgres/database.js";
import { BACKEND, openTestDatabase } from "../support/database.js";

// pg's own conversion of a list parameter (what every list was sent as before): `pg/lib/utils`
// is pg's CommonJS module for turning parameters into text.
const pgUtils = createRequire(import.meta.url)("pg/lib/utils.js") as {
  prepareValue(value: unknown): unknown;
};

const element = fc.oneof(
  fc.string({ unit: "binary", maxLength: 12 }).map((s) => s.replaceAll("\u0000", "")),
  fc.constantFrom("", "\\", '"', '\\"', "a,b", "{x}", "NULL", "null", " lead", "ünï ✓", "'"),
  fc.integer(),
  fc.double({ noNaN: true }),
  fc.bigInt(),
  fc.boolean(),
  fc.constant(null),
);

describe("array literals", () => {
  it("are exactly the text pg makes of the same list", () => {
    fc.assert(
      fc.property(fc.array(element, { maxLength: 20 }), (values) => {
        expect(arrayLiteral(values)).toBe(pgUtils.prepareValue(values));
      }),
      { numRuns: 2000 },
    );
  });

  it("leave a list holding anything else to pg, as it is", () => {
    const values = ["a", { b: 1 }, new Date(0)];
    expect(arrayLiteral(values)).toBe(values);
  });
});

describe(`array literals read back by ${BACKEND}`, () => {
  let database: Database;
  beforeAll(async () => {
    database = await openTestDatabase("arr", { migrate: false });
  });
  afterAll(() => database.close());

  it("as text[], every element comes back as it was sent", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            element.filter((e) => typeof e === "string"),
            fc.constant(null),
          ),
          { maxLength: 20 },
        ),
        async (values) => {
          const { rows } = await sql<{
            a: (string | null)[];
          }>`SELECT ${arrayLiteral(values)}::text[] AS a`.execute(database.db);
          expect(rows[0]?.a ?? []).toEqual(values);
        },
      ),
      { numRuns: 150 },
    );
  });

  it("as bigint[], every number comes back as it was sent", async () => {
    const values = [0, -1, 2 ** 53 - 1, null, 7];
    const { rows } = await sql<{
      a: string[];
    }>`SELECT ${arrayLiteral(values)}::bigint[]::text[] AS a`.execute(database.db);
    expect(rows[0]?.a).toEqual(["0", "-1", String(2 ** 53 - 1), null, "7"]);
  });
});
