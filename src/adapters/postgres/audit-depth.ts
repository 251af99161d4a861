import { sql } from "kysely";
import type { SchemaMigration } from "./schema-migration.js";

/**
 * Migration 0015: the last audit recorded for `status` says whether it was deep and how many
 * archive problems it found. Without them a deep audit that failed only on an archive showed as
 * "0 difference(s)", and a plain audit after it as a match, with nothing to tell the two apart.
 */
export const auditDepth: SchemaMigration = {
  name: "0015_audit_depth",
  async up(db, schema) {
    await sql`ALTER TABLE ${sql.id(schema, "projection_state")}
      ADD COLUMN IF NOT EXISTS last_audit_deep boolean,
      ADD COLUMN IF NOT EXISTS last_audit_archive_problems integer`.execute(db);
  },
};
