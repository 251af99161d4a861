import { hostname } from "node:os";
import { withDatasetLock } from "../adapters/postgres/dataset-lock.js";
import { withMaintenanceLease } from "../adapters/postgres/maintenance-lease.js";
import { IllegalTransitionError, NotFoundError, SafetyRailError } from "../errors.js";
import type { EventMetadata } from "../events/envelope.js";
import { urlForKey } from "../storage/dataset-url.js";
import { manifestKey } from "../storage/object-layout.js";
import { assertManifestPresent, assertWinnersPresent, movePointer, type PublishDeps } from "./publish.js";
import { storePointerRunId } from "./store-pointer.js";

/**
 * The result of a rollback, as `rollback --json` prints it: the run `_CURRENT` now names, the run
 * it named before, and the manifest readers now follow.
 *
 * @example
 * ```ts
 * const { runId, previousRunId } = await ledger.rollback("events", "2026-11-22")
 * ```
 */
export interface RollbackResult {
  datasetId: string;
  runId: string;
  previousRunId: string | null;
  manifestUrl: string;
}

/**
 * Moves a dataset's `_CURRENT` back (or forward again) to a retained SUCCEEDED run of it.
 *
 * Serialised with publish under the dataset's publish lock, and with maintenance under its
 * maintenance lease: no gc pass can prune the target between the checks and the pointer write
 * (taking the lease also fences off a pass that lost its lock). Then, marker rule: the manifest
 * (`store.get`) and every winner's data (one listing of `data/<runId>/`) are checked, `_CURRENT` is
 * written last, and the move is recorded as CurrentPointerMoved with reason `rollback` on the
 * dataset stream at its expected version. The run it moved from gets `replacedAt`: kept for the
 * safety window, then ordinary retained data (keepRuns, retention). A crash after the write and
 * before the record is finished by running the rollback again; meanwhile gc keeps the run the
 * store's `_CURRENT` names.
 *
 * Refused, changing nothing: an unknown dataset or run (NotFoundError); a run of another dataset
 * (SafetyRailError); a run that is not SUCCEEDED — STARTED, PUBLISHING, FAILED, PRUNED — or is the
 * current run already, or whose manifest or winner data is missing (IllegalTransitionError).
 *
 * @internal use `ledger.rollback`.
 * @example
 * ```ts
 * const { previousRunId } = await rollbackRun(deps, "events", "2026-11-22")
 * ```
 */
export async function rollbackRun(
  deps: PublishDeps & { metadata?: Partial<EventMetadata> },
  datasetId: string,
  toRunId: string,
): Promise<RollbackResult> {
  if (!(await deps.queries.dataset(datasetId))) throw new NotFoundError("dataset", datasetId);
  return withDatasetLock(deps.database, "publish", datasetId, () =>
    withMaintenanceLease(
      deps.database,
      datasetId,
      async (lease) => {
        const dataset = await deps.queries.dataset(datasetId);
        if (!dataset) throw new NotFoundError("dataset", datasetId);
        const state = await deps.executor.load(toRunId);
        if (state.runId === null || state.datasetId === null) {
          // An archived run is pruned too: refused as such, not as an id that names nothing.
          throw (
            (await deps.executor.archivedRefusal(toRunId, "rollback")) ?? new NotFoundError("run", toRunId)
          );
        }
        if (state.datasetId !== datasetId) {
          throw new SafetyRailError(
            `run ${toRunId} belongs to dataset ${state.datasetId}, not ${datasetId}; _CURRENT of ${datasetId} names only its own runs`,
            {
              rule: "a dataset's _CURRENT names only its own runs",
              datasetId,
              runId: toRunId,
              runDatasetId: state.datasetId,
            },
          );
        }
        if (state.status === "PRUNED") {
          throw new IllegalTransitionError(
            "rollback",
            state.status,
            `run ${toRunId} was pruned (${state.pruneReason ?? "pruned"}); its data and manifest are gone, so _CURRENT will not point to it`,
            { runId: toRunId, datasetId },
          );
        }
        if (state.status !== "SUCCEEDED") {
          throw new IllegalTransitionError(
            "rollback",
            state.status,
            `run ${toRunId} is ${state.status}; _CURRENT rolls back only to a SUCCEEDED run`,
            { runId: toRunId, datasetId },
          );
        }
        const store = deps.storeFor(dataset);
        // The store is what readers follow: the log's current run may not be the one `_CURRENT`
        // names (a move whose record never landed), and rolling back to it is then a real move.
        if (dataset.currentRunId === toRunId && (await storePointerRunId(store)) === toRunId) {
          throw new IllegalTransitionError(
            "rollback",
            state.status,
            `run ${toRunId} is already the current run of dataset ${datasetId}; nothing to roll back`,
            { runId: toRunId, datasetId },
          );
        }
        const manifestUrl = urlForKey(dataset.root, manifestKey(toRunId));
        await lease.assertHeld();
        await assertManifestPresent(store, state, manifestUrl, "rollback");
        await assertWinnersPresent(store, dataset, state, "rollback");
        // The last check before the marker: a lease that was lost meanwhile authorises nothing.
        await lease.assertHeld();
        const previousRunId = await movePointer(deps, store, dataset, state, manifestUrl, "rollback");
        return { datasetId, runId: toRunId, previousRunId, manifestUrl };
      },
      { holder: `rollback to ${toRunId} by ${hostname()}/pid-${process.pid}`.slice(0, 200) },
    ),
  );
}
