import type { Database } from "../adapters/postgres/database.js";
import { attemptUrlsOutsideRunArea } from "../adapters/postgres/maintenance-queries.js";
import type { ProjectionQueries } from "../adapters/postgres/projection-queries.js";
import type { RunState } from "../machines/run-state.js";
import { type DeletionPurpose, deletionRefusal, type ForeignUrl } from "../maintenance/deletion-guard.js";
import type { DatasetView } from "../projections/views.js";
import { keyUnderRoot } from "../storage/dataset-url.js";
import { runDataPrefix, runOfDataKey } from "../storage/object-layout.js";

/**
 * Gathers fresh facts right before each deletion of a maintenance pass and asks the pure
 * {@link deletionRefusal} whether the key may still go. The registry rows, floors and the run
 * states involved are read anew every time (the states incrementally, through the executor's
 * cache); only the URLs runs recorded outside their own area are read once per pass, since a new
 * report can only add URLs inside its own run's area.
 *
 * @internal
 */
export class PassGuard {
  readonly #deps: GuardDeps;
  readonly #datasetId: string;
  #foreign: ForeignUrl[] | null = null;

  constructor(deps: GuardDeps, datasetId: string) {
    this.#deps = deps;
    this.#datasetId = datasetId;
  }

  /** Why `key` must not be deleted for `runId` now, or null. */
  async refusal(
    runId: string,
    key: string,
    purpose: DeletionPurpose,
    options: { decisionConfirmed?: boolean } = {},
  ): Promise<string | null> {
    const dataset = await this.#deps.queries.dataset(this.#datasetId);
    if (!dataset) return `dataset ${this.#datasetId} no longer exists`;
    this.#foreign ??= await this.#readForeign(dataset);
    const [runs, floors] = await Promise.all([
      this.#deps.queries.runs(this.#datasetId),
      this.#deps.queries.retentionFloors(this.#datasetId),
    ]);
    const states = new Map<string, RunState>();
    states.set(runId, await this.#deps.load(runId));
    const owner = runOfDataKey(key) ?? /^data\/([^/]+)$/.exec(key)?.[1] ?? null;
    if (owner !== null && owner !== runId) states.set(owner, await this.#deps.load(owner));
    return deletionRefusal(
      { runId, key, purpose, ...(options.decisionConfirmed ? { decisionConfirmed: true } : {}) },
      { now: this.#deps.clock(), dataset, runs, floors, states, foreign: this.#foreign },
    );
  }

  /** Attempt URLs of the dataset's runs that lie outside their own run's data area (legacy). */
  async #readForeign(dataset: DatasetView): Promise<ForeignUrl[]> {
    const rows = await attemptUrlsOutsideRunArea(this.#deps.database, dataset.datasetId, dataset.root);
    const out: ForeignUrl[] = [];
    for (const r of rows) {
      let key: string;
      try {
        key = keyUnderRoot(dataset.root, r.url);
      } catch {
        continue;
      }
      // A non-canonical spelling of a url inside its own area is not foreign.
      if (key.startsWith(runDataPrefix(r.runId))) continue;
      out.push({ runId: r.runId, key, winner: r.winner });
    }
    return out;
  }
}

/** What a {@link PassGuard} reads through. @internal */
export interface GuardDeps {
  database: Database;
  queries: ProjectionQueries;
  load(runId: string): Promise<RunState>;
  clock(): Date;
}
