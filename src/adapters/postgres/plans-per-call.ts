import { sql } from "kysely";
import type { SchemaMigration } from "./schema-migration.js";

/**
 * Migration 0014: the append functions plan their statements for each call
 * (`plan_cache_mode = force_custom_plan`).
 *
 * A PL/pgSQL function's statements are prepared once per connection, and after five calls the
 * server may keep the GENERIC plan: one plan for every later call, made without the call's values.
 * Made while the events table was small and had never been analysed (every new database, and any
 * server whose autovacuum is off or behind), the lookup of stored event ids (`event_id =
 * ANY(p_lookup)`) was a sequential scan, and it stayed one for the connection's life while the log
 * grew: every append of a report group read the whole log. On a new database 64 concurrent HTTP
 * reports of one run fell to a third of their rate, and further with every report
 * (test/eventlog/plans-without-statistics.test.ts, bench/RESULTS.md). A plan per call sees the
 * table's size at that moment; it costs planning each statement again, small beside an append.
 *
 * No argument list: each function name is unique in the schema.
 */
export const plansPerCall: SchemaMigration = {
  name: "0014_append_plans_per_call",
  async up(db, schema) {
    for (const fn of ["append_events", "append_events_chained"]) {
      await sql`ALTER FUNCTION ${sql.id(schema, fn)} SET plan_cache_mode = force_custom_plan`.execute(db);
    }
  },
};
