import type { Database } from "../adapters/postgres/database.js";
import { type MaintenanceLease, withMaintenanceLease } from "../adapters/postgres/maintenance-lease.js";
import { recordPass } from "../adapters/postgres/maintenance-queries.js";
import type { ProjectionQueries } from "../adapters/postgres/projection-queries.js";
import { isLeaseLostError, NotFoundError } from "../errors.js";
import type { AppendFence } from "../events/event-log.js";
import type { RunCommand } from "../machines/run-commands.js";
import type { RunState } from "../machines/run-state.js";
import { fenceRefusalAsError, fenceStore } from "../maintenance/fenced-store.js";
import type { MaintenancePolicies } from "../maintenance/maintenance-policies.js";
import type { LogRecord, MetricRecord } from "../maintenance/maintenance-reports.js";
import type { DatasetView, MaintenancePassRecord } from "../projections/views.js";
import type { ObjectStore } from "../storage/object-store.js";
import { PassGuard } from "./pass-guard.js";
import { storePointerRunId } from "./store-pointer.js";

/** What the maintenance use-cases (cleanup, gc, retry-failed) need from the ledger. @internal */
export interface MaintenanceDeps {
  database: Database;
  queries: ProjectionQueries;
  execute(
    command: RunCommand,
    context?: { failedRetentionMs?: number; fence?: AppendFence },
  ): Promise<{ state: RunState }>;
  /** Several commands of one run in one append (batched planning and outcomes). */
  executeMany?(
    runId: string,
    commands: readonly RunCommand[],
    context?: { fence?: AppendFence },
  ): Promise<unknown>;
  load(runId: string): Promise<RunState>;
  storeFor(dataset: DatasetView): ObjectStore;
  clock(): Date;
  policies: MaintenancePolicies;
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
  log?: (record: LogRecord) => void;
  metric?: (record: MetricRecord) => void;
}

/** One pass over one dataset: its lease (every append is fenced by it) and its deletion guard. @internal */
export interface Pass {
  lease: MaintenanceLease;
  guard: PassGuard;
  /** Executes a run command fenced by the pass's lease. */
  execute(command: RunCommand): Promise<{ state: RunState }>;
}

/** What a pass did, for its record. @internal */
export interface PassCounts {
  deleted: number;
  failed: number;
  pruned: number;
}

/** The pass of `lease` over `datasetId`. @internal */
function openPass(deps: MaintenanceDeps, datasetId: string, lease: MaintenanceLease): Pass {
  return {
    lease,
    guard: new PassGuard(
      {
        database: deps.database,
        queries: deps.queries,
        load: (runId) => deps.load(runId),
        clock: deps.clock,
        currentInStore: (dataset) =>
          fenceRefusalAsError(
            storePointerRunId(fenceStore(deps.storeFor(dataset), () => lease.assertHeld())),
          ),
      },
      datasetId,
    ),
    execute: (command) => deps.execute(command, { fence: lease.fence }),
  };
}

/**
 * Runs `run` as one pass under the dataset's maintenance lease (try-lock: another holder makes it
 * throw `LOCKED`) and records how it ended beside the lease (`status` shows it as the last pass),
 * unless it is a dry run. The record is written only while the lease is still this pass's
 * (`epoch` matches), so a pass fenced off midway records nothing; a pass that throws records
 * `error` and rethrows. @internal
 */
export function runRecordedPass<T extends PassCounts>(
  deps: MaintenanceDeps,
  datasetId: string,
  kind: MaintenancePassRecord["kind"],
  options: { dryRun?: boolean; signal?: AbortSignal },
  run: (pass: Pass) => Promise<T>,
): Promise<T> {
  return withMaintenanceLease(
    deps.database,
    datasetId,
    async (lease) => {
      const startedAt = deps.clock();
      const record = (outcome: MaintenancePassRecord["outcome"], counts: PassCounts, error: string | null) =>
        recordPass(deps.database, lease, {
          kind,
          startedAt,
          finishedAt: deps.clock(),
          outcome,
          ...counts,
          error,
        });
      let result: T;
      try {
        result = await run(openPass(deps, datasetId, lease));
      } catch (e) {
        if (!options.dryRun && !isLeaseLostError(e)) {
          await record("error", { deleted: 0, failed: 0, pruned: 0 }, describe(e)).catch(() => {});
        }
        throw e;
      }
      if (!options.dryRun) {
        const outcome = options.signal?.aborted ? "interrupted" : result.failed > 0 ? "failures" : "ok";
        await record(outcome, result, null);
      }
      return result;
    },
    { wait: false },
  );
}

/** The dataset's registry row, or a NotFoundError naming it. @internal */
export async function requireDataset(deps: MaintenanceDeps, datasetId: string): Promise<DatasetView> {
  const dataset = await deps.queries.dataset(datasetId);
  if (!dataset) throw new NotFoundError("dataset", datasetId);
  return dataset;
}

function describe(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).slice(0, 2000);
}
