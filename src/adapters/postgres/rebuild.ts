import { randomUUID } from "node:crypto";
import { sql } from "kysely";
import type { RecordedEvent } from "../../events/envelope.js";
import type { ArchiveAuditReport } from "../../maintenance/maintenance-reports.js";
import { WRITES_BEYOND_ITS_RUN } from "../../projections/ledger-fold.js";
import {
  PROJECTION_KEYS,
  PROJECTION_TABLES,
  type ProjectionTable,
  type Row,
} from "../../projections/projection-rows.js";
import type { LedgerDb } from "./database.js";
import type { PgEventLog } from "./pg-event-log.js";
import {
  createProjectionTables,
  createProjectionViews,
  dropProjectionViews,
  PROJECTION_COLUMNS,
  PROJECTION_VERSION,
} from "./projection-schema.js";
import { REPLAY_LIMITS, ReplayStore } from "./replay-store.js";
import { dropRunSnapshots } from "./run-snapshot-store.js";
import { normaliseRow } from "./table-io.js";

/**
 * One difference between a live projection row and the row a replay of the log produces.
 *
 * @example
 * ```ts
 * const { differences } = await ledger.audit()
 * const first: AuditDifference | undefined = differences[0]
 * if (first) console.log(first.table, first.key, first.column, first.live, first.replayed)
 * ```
 */
export interface AuditDifference {
  table: ProjectionTable;
  key: Record<string, unknown>;
  /** `missing_in_live`, `missing_in_replay`, or the name of the column that differs. */
  column: string;
  live: unknown;
  replayed: unknown;
}

/**
 * The result of an audit (`ledger.audit()`): `{ events, match, differences }` as the CLI prints it.
 *
 * @example
 * ```ts
 * const report: AuditReport = await ledger.audit()
 * if (!report.match) console.error(`${report.differences.length} differences after ${report.events} events`)
 * ```
 */
export interface AuditReport {
  events: number;
  /** The projections match the replay (and, in a deep audit, every archive verified). */
  match: boolean;
  differences: AuditDifference[];
  /** Only in a deep audit (`audit({ deep: true })`, `audit --deep`): every archive checked. */
  archives?: ArchiveAuditReport;
}

const MAX_DIFFERENCES = 1_000;

/**
 * Replays the log after position `from` into the projection tables of `target`, page by page, with
 * the inline projection's own fold, holding rows in memory across pages ({@link ReplayStore}).
 * `from` 0 means the tables were just created and are empty (every caller creates them first);
 * after a later position they may hold anything. Returns how many events it applied and the last
 * position.
 *
 * @internal the ledger's audit and rebuild; users call `ledger.audit()` / `ledger.rebuild()`.
 */
export async function replayInto(
  log: PgEventLog,
  db: LedgerDb,
  scratch: string,
  from: number,
  onProgress?: (events: number) => void,
  upTo: number | undefined = undefined,
  replayedPrunes: Set<string> = new Set(),
): Promise<{ events: number; position: number }> {
  const store = new ReplayStore(db, scratch, { empty: from === 0 });
  // Where each run is pruned in what this replay reads (same snapshot, same bound): its events
  // before that change nothing that outlives the prune (WRITES_BEYOND_ITS_RUN), and are counted but
  // neither sent nor folded.
  const skip = REPLAY_LIMITS.skipPrunedHistory
    ? { prunedAt: await log.prunePositions(db, from, { upTo }), keepTypes: WRITES_BEYOND_ITS_RUN }
    : undefined;
  const read = (after: number) => {
    const page = log.readFoldPage(db, after, REPLAY_LIMITS.pageSize, { upTo, skip });
    // Read ahead: awaited after the fold of the page before, or never if that fold throws.
    page.catch(() => {});
    return page;
  };
  let after = from;
  let events = 0;
  // One page at a time (memory stays bounded by a page and the rows held, never the whole log),
  // the next page's query in flight while this one folds.
  let next = read(after);
  for (;;) {
    const page = await next;
    if (page.read === 0) break;
    after = page.position;
    next = read(after);
    await store.apply(withoutRecountedPrunes(page.events, replayedPrunes));
    events += page.read;
    onProgress?.(events);
  }
  await store.finish();
  return { events, position: after };
}

/**
 * A rebuild replays in two snapshots (the bulk, then the tail under a lock). A run archived in
 * between had its `Pruned` replayed in the first and its `Archived` (which carries the prune's
 * counts on, for a log whose `Pruned` is gone) arrives in the second: its counts are taken once.
 * Within one snapshot a run has one or the other, never both. Remembers the prunes replayed.
 */
function withoutRecountedPrunes<E extends Pick<RecordedEvent, "type" | "data">>(
  page: E[],
  replayed: Set<string>,
): E[] {
  let out = page;
  for (const [i, e] of page.entries()) {
    const d = e.data as { runId?: unknown; pruned?: unknown };
    if (e.type === "Pruned" && typeof d.runId === "string") replayed.add(d.runId);
    else if (e.type === "Archived" && typeof d.runId === "string" && d.pruned && replayed.has(d.runId)) {
      if (out === page) out = [...page];
      out[i] = { ...e, data: { ...d, pruned: null } };
    }
  }
  return out;
}

/**
 * Replays the whole log into a scratch schema with the same projection code and compares every
 * projection table with the live one, row by row, naming the table, key and column of each
 * difference. Runs in one REPEATABLE READ transaction, so the live tables and the log it replays
 * are the same instant; the scratch schema is dropped afterwards.
 *
 * @example
 * ```ts
 * const { match, differences } = await auditProjections(log)
 * ```
 *
 * @internal users call `ledger.audit()`.
 */
export async function auditProjections(
  log: PgEventLog,
  options: { onProgress?: (events: number) => void } = {},
): Promise<AuditReport> {
  const scratch = `${log.schema}_audit_${randomUUID().slice(0, 8)}`;
  try {
    return await log.db
      .transaction()
      .setIsolationLevel("repeatable read")
      .execute(async (trx) => {
        await sql`CREATE SCHEMA ${sql.id(scratch)}`.execute(trx);
        await createProjectionTables(trx, scratch);
        const { events } = await replayInto(log, trx, scratch, 0, options.onProgress);
        const differences: AuditDifference[] = [];
        for (const table of PROJECTION_TABLES) {
          if (differences.length >= MAX_DIFFERENCES) break;
          differences.push(
            ...(await compareTable(trx, table, log.schema, scratch, MAX_DIFFERENCES - differences.length)),
          );
        }
        // Nothing of the audit is kept: the scratch tables live and die in this transaction.
        await sql`DROP SCHEMA ${sql.id(scratch)} CASCADE`.execute(trx);
        return { events, match: differences.length === 0, differences };
      });
  } finally {
    await sql`DROP SCHEMA IF EXISTS ${sql.id(scratch)} CASCADE`.execute(log.db).catch(() => {});
  }
}

async function compareTable(
  db: LedgerDb,
  table: ProjectionTable,
  live: string,
  replay: string,
  limit: number,
): Promise<AuditDifference[]> {
  const keys = PROJECTION_KEYS[table];
  const columns = PROJECTION_COLUMNS[table];
  const names = Object.keys(columns);
  const on = sql.join(
    keys.map((k) => sql`l.${sql.id(k)} = r.${sql.id(k)}`),
    sql` AND `,
  );
  const tuple = (alias: string) => sql.join(names.map((n) => sql`${sql.raw(alias)}.${sql.id(n)}`));
  const { rows } = await sql<{ l: Row | null; r: Row | null }>`
    SELECT to_jsonb(l) AS l, to_jsonb(r) AS r
    FROM ${sql.id(live, table)} l FULL OUTER JOIN ${sql.id(replay, table)} r ON ${on}
    WHERE l.${sql.id(keys[0] as string)} IS NULL OR r.${sql.id(keys[0] as string)} IS NULL
       OR (${tuple("l")}) IS DISTINCT FROM (${tuple("r")})
    LIMIT ${limit}`.execute(db);
  const out: AuditDifference[] = [];
  for (const { l, r } of rows) {
    const any = (l ?? r) as Row;
    const key = Object.fromEntries(keys.map((k) => [k, any[k]]));
    if (!l || !r) {
      out.push({ table, key, column: l ? "missing_in_replay" : "missing_in_live", live: l, replayed: r });
      continue;
    }
    const ln = normaliseRow(l, columns);
    const rn = normaliseRow(r, columns);
    for (const name of names) {
      if (JSON.stringify(ln[name]) !== JSON.stringify(rn[name])) {
        out.push({ table, key, column: name, live: ln[name], replayed: rn[name] });
      }
    }
  }
  return out;
}

/**
 * Rebuilds the projections from the log without downtime: replays into a scratch schema while
 * appends go on, then, in one transaction that briefly blocks appends, replays what arrived
 * meanwhile and swaps the scratch tables in for the live ones, recording the projection version.
 *
 * @example
 * ```ts
 * const { events } = await rebuildProjections(log)
 * ```
 *
 * @internal users call `ledger.rebuild()`.
 */
export async function rebuildProjections(
  log: PgEventLog,
  options: { onProgress?: (events: number) => void } = {},
): Promise<{ events: number; version: number }> {
  const scratch = `${log.schema}_rebuild_${randomUUID().slice(0, 8)}`;
  const db = log.db;
  try {
    await sql`CREATE SCHEMA ${sql.id(scratch)}`.execute(db);
    await createProjectionTables(db, scratch);
    // Phase 1, concurrent with appends, in one snapshot taken after a horizon settled and bounded
    // by it: every event up to the horizon is in the snapshot, so the last position read is a
    // checkpoint below which no event can still commit. (A horizon that does not settle in time
    // leaves phase 1 less to do and phase 2 more, never a gap.)
    const replayedPrunes = new Set<string>();
    const upTo = await log.settledHorizon();
    const first = await db
      .transaction()
      .setIsolationLevel("repeatable read")
      .execute((trx) => replayInto(log, trx, scratch, 0, options.onProgress, upTo, replayedPrunes));
    // Phase 2, appends blocked: the tail, then the swap. EXCLUSIVE mode waits for in-flight appends
    // to commit and keeps new ones out, so no inline projection writes to a table being replaced.
    const events = await db.transaction().execute(async (trx) => {
      await sql`LOCK TABLE ${sql.id(log.schema, "events")} IN EXCLUSIVE MODE`.execute(trx);
      const tail = await replayInto(log, trx, scratch, first.position, undefined, undefined, replayedPrunes);
      // The live views read the tables being replaced: drop them first, recreate them on the new.
      await dropProjectionViews(trx, log.schema);
      for (const table of PROJECTION_TABLES) {
        await sql`DROP TABLE IF EXISTS ${sql.id(log.schema, table)}`.execute(trx);
        await sql`ALTER TABLE ${sql.id(scratch, table)} SET SCHEMA ${sql.id(log.schema)}`.execute(trx);
      }
      await createProjectionViews(trx, log.schema);
      // Run snapshots are derived too: none written by an older fold outlives a rebuild.
      await dropRunSnapshots(trx, log.schema);
      await sql`
        INSERT INTO ${sql.id(log.schema, "projection_state")} (name, version, built_at) VALUES ('ledger', ${PROJECTION_VERSION}, now())
        ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, built_at = EXCLUDED.built_at`.execute(
        trx,
      );
      return first.events + tail.events;
    });
    return { events, version: PROJECTION_VERSION };
  } finally {
    await sql`DROP SCHEMA IF EXISTS ${sql.id(scratch)} CASCADE`.execute(db).catch(() => {});
  }
}
