import type { Database } from "../adapters/postgres/database.js";
import { attemptUrlsOutsideRunArea } from "../adapters/postgres/maintenance-queries.js";
import type { ProjectionQueries } from "../adapters/postgres/projection-queries.js";
import { isLeaseLostError } from "../errors.js";
import type { RunState } from "../machines/run-state.js";
import {
  type DeletionPurpose,
  deletionRefusal,
  type ForeignUrl,
  type GuardFacts,
} from "../maintenance/deletion-guard.js";
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
    const pointer = isPrune(purpose) ? await this.#pointer(dataset) : undefined;
    return deletionRefusal(
      { runId, key, purpose, ...(options.decisionConfirmed ? { decisionConfirmed: true } : {}) },
      {
        now: this.#deps.clock(),
        dataset,
        runs,
        floors,
        states,
        foreign: this.#foreign,
        ...(pointer ? { pointer } : {}),
      },
    );
  }

  /**
   * {@link refusal} for many keys on one read of fresh state: the registry rows, floors and run
   * states are read once, right before the batch is planned, then each key is judged by the same
   * pure rule. A concurrent pass plans a batch of prefixes at a time; the facts are as fresh for
   * each of them as a per-key read taken at the same moment.
   */
  async refusals(
    requests: readonly {
      runId: string;
      key: string;
      purpose: DeletionPurpose;
      decisionConfirmed?: boolean;
    }[],
  ): Promise<(string | null)[]> {
    if (requests.length === 0) return [];
    const dataset = await this.#deps.queries.dataset(this.#datasetId);
    if (!dataset) return requests.map(() => `dataset ${this.#datasetId} no longer exists`);
    this.#foreign ??= await this.#readForeign(dataset);
    const [runs, floors] = await Promise.all([
      this.#deps.queries.runs(this.#datasetId),
      this.#deps.queries.retentionFloors(this.#datasetId),
    ]);
    const states = new Map<string, RunState>();
    for (const r of requests) {
      const owner = runOfDataKey(r.key) ?? /^data\/([^/]+)$/.exec(r.key)?.[1] ?? null;
      for (const id of owner !== null && owner !== r.runId ? [r.runId, owner] : [r.runId]) {
        if (!states.has(id)) states.set(id, await this.#deps.load(id));
      }
    }
    const pointer = requests.some((r) => isPrune(r.purpose)) ? await this.#pointer(dataset) : undefined;
    const now = this.#deps.clock();
    const foreign = this.#foreign;
    return requests.map((r) =>
      deletionRefusal(
        {
          runId: r.runId,
          key: r.key,
          purpose: r.purpose,
          ...(r.decisionConfirmed ? { decisionConfirmed: true } : {}),
        },
        { now, dataset, runs, floors, states, foreign, ...(pointer ? { pointer } : {}) },
      ),
    );
  }

  /**
   * The store's `_CURRENT`, read now for a prune. A failed read makes the prune wait (it is
   * judged again when due); a lost lease stops the pass, as on any request.
   */
  async #pointer(dataset: DatasetView): Promise<NonNullable<GuardFacts["pointer"]>> {
    try {
      return { runId: await this.#deps.currentInStore(dataset) };
    } catch (e) {
      if (isLeaseLostError(e)) throw e;
      return { unreadable: e instanceof Error ? e.message : String(e) };
    }
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
  /** The run the dataset's `_CURRENT` names in the store, read through the pass's fence. */
  currentInStore(dataset: DatasetView): Promise<string | null>;
}

/** Whether a deletion takes a run's data or manifest away (a prune), not a loser or an orphan. */
function isPrune(purpose: DeletionPurpose): boolean {
  return purpose !== "loser" && purpose !== "orphan";
}
