import type { LedgerDb } from "./database.js";

/**
 * A migration that knows which schema it runs in. Migrations are append-only: a released one is
 * never edited; a change is a new migration.
 */
export interface SchemaMigration {
  name: string;
  up(db: LedgerDb, schema: string): Promise<void>;
}
