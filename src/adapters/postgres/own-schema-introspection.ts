import { type DatabaseIntrospector, sql, type TableMetadata } from "kysely";
import type { LedgerDb } from "./database.js";

/**
 * `db` as kysely's Migrator should see it: its `introspection` reads the catalog of `schema` only.
 *
 * The Migrator asks two questions, "does my schema exist" and "does my table exist in it", and
 * kysely's PostgreSQL introspector answers the second by listing every column of every schema in
 * the database, calling `has_schema_privilege(name, …)` on each. A schema dropped while that query
 * runs (an audit's scratch schema, another ledger's, another application's) fails it with
 * "schema … does not exist" (3F000), so opening a ledger failed while an audit ran elsewhere on
 * the same server; and every open scanned the whole catalog. The tables listed here carry no
 * columns: the Migrator reads only their names.
 */
export function withOwnSchemaIntrospection(db: LedgerDb, schema: string): LedgerDb {
  const getTables = async (): Promise<TableMetadata[]> => {
    const { rows } = await sql<{ relname: string; relkind: string }>`
      SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = ${schema} AND c.relkind IN ('r', 'v', 'p')
      ORDER BY c.relname`.execute(db);
    return rows.map((r) => ({ name: r.relname, schema, isView: r.relkind === "v", columns: [] }));
  };
  const introspection: DatabaseIntrospector = {
    async getSchemas() {
      const { rows } = await sql<{ nspname: string }>`
        SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = ${schema}`.execute(db);
      return rows.map((r) => ({ name: r.nspname }));
    },
    getTables,
    async getMetadata() {
      return { tables: await getTables() };
    },
  };
  return new Proxy(db, {
    get(target, property) {
      if (property === "introspection") return introspection;
      // Kysely's methods read its private fields, so they run on the instance itself.
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
