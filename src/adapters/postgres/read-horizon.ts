import { sql } from "kysely";
import { ValidationError } from "../../errors.js";
import type { LedgerDb } from "./database.js";

/**
 * How long a reader waits for the appends in flight when it asks for a new horizon, and how often
 * it looks. Appends are short; a transaction that keeps its id for longer (anywhere on the
 * cluster: the bound is the cluster's oldest running transaction) holds readers back at the last
 * horizon that was settled, exactly as the xmin bound it replaces did.
 */
const HORIZON_WAIT = { maxMs: 2_000, firstPollMs: 1, maxPollMs: 50 };

interface Candidate {
  horizon: number;
  xid: string;
}

/**
 * The position up to which `readAll` may read: every event at or below it that will ever exist is
 * committed and visible (see migration 0012, src/adapters/postgres/lock-free-positions.ts, for why
 * `read_horizon` gives that once a snapshot's xmin passes its transaction id). One per log: the
 * settled horizon only grows, and a candidate not yet settled is kept for the next call.
 *
 * @example
 * ```ts
 * const horizon = new ReadHorizon("shardledger")
 * const upTo = await horizon.settled(db) // read positions ≤ upTo
 * ```
 */
export class ReadHorizon {
  readonly #schema: string;
  readonly #maxWaitMs: number;
  #settled = 0;
  #pending: Candidate[] = [];

  constructor(schema: string, maxWaitMs: number = HORIZON_WAIT.maxMs) {
    if (!Number.isFinite(maxWaitMs) || maxWaitMs < 0)
      throw new ValidationError("readAllWaitMs", "must be a non-negative number of milliseconds");
    this.#schema = schema;
    this.#maxWaitMs = maxWaitMs;
  }

  /** The last horizon known settled, without asking the database. */
  get known(): number {
    return this.#settled;
  }

  /**
   * Asks for a new horizon and waits (at most `maxWaitMs`, by default the log's) until the appends in flight
   * when it was read have ended. Answers the newest settled horizon: the new one, or an older one
   * if the wait ran out (then the new one is kept and settles on a later call).
   */
  async settled(db: LedgerDb, options: { maxWaitMs?: number } = {}): Promise<number> {
    const { rows } = await sql<{ horizon: string | number; horizon_xid: string }>`
      SELECT horizon, horizon_xid::text AS horizon_xid FROM ${sql.id(this.#schema, "read_horizon")}()`.execute(
      db,
    );
    const row = rows[0];
    if (row) this.#pending.push({ horizon: Number(row.horizon), xid: row.horizon_xid });
    // Only the newest few matter: each one settles no later than the ones before it.
    if (this.#pending.length > 16) this.#pending.splice(0, this.#pending.length - 16);
    const maxWait = options.maxWaitMs ?? this.#maxWaitMs;
    const started = Date.now();
    let pause = HORIZON_WAIT.firstPollMs;
    for (;;) {
      await this.#settle(db);
      if (this.#pending.length === 0 || Date.now() - started >= maxWait) return this.#settled;
      await new Promise((r) => setTimeout(r, pause));
      pause = Math.min(pause * 2, HORIZON_WAIT.maxPollMs);
    }
  }

  /** Moves every candidate whose transaction id is below the current xmin into the settled horizon. */
  async #settle(db: LedgerDb): Promise<void> {
    const checked = [...this.#pending];
    if (checked.length === 0) return;
    const { rows } = await sql<{ passed: (boolean | string)[] | null }>`
      SELECT array_agg(x < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY o) AS passed
      FROM unnest(${checked.map((c) => c.xid)}::xid8[]) WITH ORDINALITY AS c(x, o)`.execute(db);
    const passed = rows[0]?.passed ?? [];
    // By identity: another call may have added a candidate meanwhile.
    const done = new Set(checked.filter((_, i) => passed[i] === true || passed[i] === "t"));
    for (const c of done) this.#settled = Math.max(this.#settled, c.horizon);
    this.#pending = this.#pending.filter((c) => !done.has(c));
  }
}
