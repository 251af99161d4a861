/**
 * One stored snapshot of a run's state: the state after the first `version` events of its stream,
 * as serialised by the fold of `foldVersion` (see `serialiseRunState` and `RUN_FOLD_VERSION`).
 *
 * @example
 * ```ts
 * const snapshot: RunSnapshot = { runId: "r1", version: 20_000, foldVersion: RUN_FOLD_VERSION, state: serialiseRunState(run) }
 * ```
 */
export interface RunSnapshot {
  readonly runId: string;
  readonly version: number;
  readonly foldVersion: number;
  readonly state: string;
}

/**
 * Where run snapshots are kept (the port; PostgreSQL's `run_snapshots` table implements it in
 * `src/adapters/postgres/run-snapshot-store.ts`). Snapshots are derived data: the log stays the
 * truth, a reader trusts a snapshot only for its own fold version and folds the rest of the stream
 * on top, and anything missing or unusable means folding from the log.
 *
 * @example
 * ```ts
 * const found = await snapshots.read("r1")
 * const state = (found && restoreRunState(found.state)) ?? initialRunState()
 * ```
 */
export interface RunSnapshotStore {
  /** The run's snapshot, whatever fold version wrote it, or `null`. */
  read(runId: string): Promise<RunSnapshot | null>;
  /** Keeps `snapshot` unless one of the same fold version at a later stream version is stored. */
  write(snapshot: RunSnapshot): Promise<void>;
  /** Forgets the run's snapshot (a pruned or archived run). */
  remove(runId: string): Promise<void>;
}
