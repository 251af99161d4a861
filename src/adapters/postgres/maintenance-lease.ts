import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { sql } from "kysely";
import {
  isShardledgerError,
  LeaseLostError,
  LockedError,
  type ShardledgerError,
  ValidationError,
} from "../../errors.js";
import type { AppendFence } from "../../events/event-log.js";
import { advisoryLockIds } from "./advisory-keys.js";
import type { Database, LedgerDb } from "./database.js";
import { type HeldDatasetLock, withDatasetLock } from "./dataset-lock.js";

/**
 * A maintenance pass's right to act on one dataset: the epoch it was granted and the fence that
 * carries it into appends. Valid only inside the `withMaintenanceLease` callback that handed it
 * out.
 *
 * @example
 * ```ts
 * await withMaintenanceLease(database, "sales", async (lease) => {
 *   await executor.execute({ type: "planCleanup", runId, url, reason: "loser" }, { fence: lease.fence })
 *   await lease.assertHeld() // before every object-store request batch
 *   await store.deleteMany(keys)
 * })
 * ```
 */
export interface MaintenanceLease {
  readonly datasetId: string;
  /** Increases by one every time any pass acquires this dataset's lease. */
  readonly epoch: number;
  /** Who holds it, as recorded in `maintenance_leases.holder`. */
  readonly holder: string;
  /** Pass it to every append of the pass: the append commits only while this epoch is current. */
  readonly fence: AppendFence;
  /**
   * Resolves when the lease is still ours: the stored epoch is ours and, on a server, the
   * connection holding the advisory lock answers and its session still holds the lock. Throws
   * `LeaseLostError` otherwise, and from then on every time. Call it before every object-store
   * request batch: a request already sent cannot be recalled, so this is where a pass that lost
   * its lease stops. Do not call it inside an open log transaction of the same pass on PGlite (one
   * connection: it would wait for itself).
   */
  assertHeld(): Promise<void>;
}

/**
 * Options of {@link withMaintenanceLease}: `wait: false` throws `LOCKED` at once when another pass
 * holds the lease; `holder` names this pass in `maintenance_leases` (default: host, pid and a
 * random suffix).
 *
 * @example
 * ```ts
 * const options: MaintenanceLeaseOptions = { wait: false, holder: "maintain@worker-3" }
 * ```
 */
export interface MaintenanceLeaseOptions {
  wait?: boolean;
  holder?: string;
}

/**
 * Runs `fn` holding the maintenance lease of one dataset.
 *
 * Acquiring takes the dataset's maintenance advisory lock exactly as `withDatasetLock` does (it
 * is released at once when a process dies, and it keeps two live passes apart), then bumps the
 * dataset's lease epoch in a transaction of its own. The lock alone is only a hint: its session can
 * end while the pass talks to the object store (idle_session_timeout, failover,
 * pg_terminate_backend, a transaction-mode pooler) and a second pass then takes it. Because every
 * acquirer bumps the epoch, the first pass's fence is stale from that moment: its next fenced
 * append throws `LeaseLostError` and writes nothing, and so does its next `assertHeld()`.
 *
 * On PGlite (one in-process backend) the lock is an in-process queue; the epoch works the same
 * way, so bumping it from outside simulates a lost lease.
 *
 * @example
 * ```ts
 * const report = await withMaintenanceLease(database, "sales", (lease) => cleanupPass(lease), { wait: false })
 * ```
 */
export async function withMaintenanceLease<T>(
  database: Database,
  datasetId: string,
  fn: (lease: MaintenanceLease) => Promise<T>,
  options: MaintenanceLeaseOptions = {},
): Promise<T> {
  if (typeof datasetId !== "string" || datasetId.length === 0)
    throw new ValidationError("datasetId", "must be a non-empty string");
  const holder = options.holder ?? `${hostname()}/pid-${process.pid}/${randomUUID().slice(0, 8)}`;
  if (holder.length === 0 || holder.length > 200)
    throw new ValidationError("holder", "must be a string of 1 to 200 characters");
  let acquired = false;
  return withDatasetLock(
    database,
    "maintenance",
    datasetId,
    async (held) => {
      acquired = true;
      const epoch = await bumpEpoch(held.connection ?? database.db, database.schema, datasetId, holder);
      const lease = new Lease(database, held, datasetId, epoch, holder);
      try {
        return await fn(lease);
      } finally {
        lease.release();
      }
    },
    options.wait === undefined ? {} : { wait: options.wait },
  ).catch(async (e: unknown) => {
    // Only our own refusal to wait is enriched, never a LOCKED thrown from inside the pass.
    if (acquired || !isShardledgerError(e) || e.code !== "LOCKED") throw e;
    throw await lockedByHolder(database, datasetId, e);
  });
}

/**
 * A LOCKED refusal that names the pass holding the lease (the holder recorded by its acquire) and
 * says what to do, so an operator can tell a busy worker from a stuck one. Falls back to the
 * plain refusal when the lease row cannot be read.
 */
async function lockedByHolder(
  database: Database,
  datasetId: string,
  locked: ShardledgerError,
): Promise<ShardledgerError> {
  try {
    const { rows } = await sql<{ holder: string; acquired_at: Date | string; renewed_at: Date | string }>`
      SELECT holder, acquired_at, renewed_at FROM ${sql.id(database.schema, "maintenance_leases")}
      WHERE dataset_id = ${datasetId}`.execute(database.db);
    const row = rows[0];
    if (!row) return locked;
    const acquiredAt = new Date(row.acquired_at).toISOString();
    const renewedAt = new Date(row.renewed_at).toISOString();
    return new LockedError(
      `maintenance of dataset ${datasetId} is held by another pass (${row.holder}, since ${acquiredAt}, last seen ${renewedAt}); try again later — it is released when that pass ends or its process dies`,
      {
        cause: locked,
        details: { ...locked.details, datasetId, holder: row.holder, acquiredAt, renewedAt },
      },
    );
  } catch {
    return locked;
  }
}

/**
 * Takes the next epoch. On a server it runs on the lock's own connection as a single autocommit
 * statement, so it commits before the pass does anything. A fenced append of the previous holder
 * that is still in flight holds the row FOR SHARE; this statement waits for it, so that event
 * commits under the epoch it was checked against and every later one of that pass is refused.
 */
async function bumpEpoch(db: LedgerDb, schema: string, datasetId: string, holder: string): Promise<number> {
  const leases = sql.id(schema, "maintenance_leases");
  const { rows } = await sql<{ epoch: string | number }>`
    INSERT INTO ${leases} AS l (dataset_id, epoch, holder, acquired_at, renewed_at)
    VALUES (${datasetId}, 1, ${holder}, now(), now())
    ON CONFLICT (dataset_id) DO UPDATE
      SET epoch = l.epoch + 1, holder = EXCLUDED.holder, acquired_at = EXCLUDED.acquired_at,
          renewed_at = EXCLUDED.renewed_at
    RETURNING epoch`.execute(db);
  const epoch = Number(rows[0]?.epoch);
  if (!Number.isSafeInteger(epoch) || epoch < 1) throw new Error(`lease epoch of ${datasetId} is ${epoch}`);
  return epoch;
}

class Lease implements MaintenanceLease {
  readonly datasetId: string;
  readonly epoch: number;
  readonly holder: string;
  readonly fence: AppendFence;
  readonly #database: Database;
  readonly #held: HeldDatasetLock;
  #lost: LeaseLostError | null = null;

  constructor(database: Database, held: HeldDatasetLock, datasetId: string, epoch: number, holder: string) {
    this.#database = database;
    this.#held = held;
    this.datasetId = datasetId;
    this.epoch = epoch;
    this.holder = holder;
    this.fence = Object.freeze({ datasetId, epoch });
  }

  /** Called when the callback returns: a lease that escaped its scope authorises nothing. */
  release(): void {
    this.#lost ??= new LeaseLostError(this.datasetId, this.epoch, null, "the lease was released");
  }

  async assertHeld(): Promise<void> {
    if (this.#lost) throw this.#lost;
    let row: { held: boolean; epoch: string | number | null; holder: string | null } | undefined;
    try {
      row = await this.#probe();
    } catch (e) {
      // Any failure of the lock's own connection means we cannot show the lock still exists.
      throw this.#lose(null, "the connection holding the maintenance lock is gone", e, null);
    }
    const current = row?.epoch === null || row?.epoch === undefined ? null : Number(row.epoch);
    if (current !== this.epoch)
      throw this.#lose(
        current,
        current === null ? "no lease is recorded for the dataset" : "another pass acquired the lease",
        undefined,
        row?.holder ?? null,
      );
    if (!row?.held)
      throw this.#lose(
        current,
        "the session of the lock connection no longer holds the advisory lock (a pooler in transaction mode?)",
        undefined,
        null,
      );
  }

  /**
   * One statement on the lock's connection: does this session still hold the advisory lock, what
   * epoch is stored, and, while both are ours, a `renewed_at` stamp operators can read. The stamp
   * skips a row that an in-flight fenced append holds FOR SHARE rather than wait for it: a pass
   * calling this from inside its own open transaction must not wait for itself.
   */
  async #probe() {
    const leases = sql.id(this.#database.schema, "maintenance_leases");
    const connection = this.#held.connection;
    const { classid, objid } = advisoryLockIds(this.#held.key);
    const holdsLock = connection
      ? sql`EXISTS (SELECT 1 FROM pg_locks
          WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid() AND objsubid = 1
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND classid = ${classid}::bigint::oid AND objid = ${objid}::bigint::oid)`
      : sql`true`;
    const { rows } = await sql<{ held: boolean; epoch: string | number | null; holder: string | null }>`
      WITH lock AS (SELECT ${holdsLock} AS held),
      renewed AS (
        UPDATE ${leases} SET renewed_at = now()
        WHERE dataset_id = (
          SELECT dataset_id FROM ${leases}
          WHERE dataset_id = ${this.datasetId} AND epoch = ${this.epoch} AND (SELECT held FROM lock)
          FOR NO KEY UPDATE SKIP LOCKED)
        RETURNING 1
      )
      SELECT (SELECT held FROM lock) AS held, l.epoch, l.holder
      FROM (SELECT count(*) FROM renewed) AS r
      LEFT JOIN ${leases} AS l ON l.dataset_id = ${this.datasetId}`.execute(connection ?? this.#database.db);
    return rows[0];
  }

  #lose(current: number | null, reason: string, cause: unknown, holder: string | null): LeaseLostError {
    this.#lost = new LeaseLostError(this.datasetId, this.epoch, current, reason, { cause, holder });
    return this.#lost;
  }
}
