import type { CleanupReport, GcReport, RetryFailedReport } from "../maintenance/maintenance-reports.js";
import { type CleanupOptions, cleanup } from "./cleanup.js";
import { type GcOptions, gc } from "./gc.js";
import type { MaintenanceDeps } from "./maintenance-pass.js";
import { retryFailed } from "./retry-failed.js";

/**
 * Cleanup, gc and retry-failed over one set of ledger dependencies. Planning is pure
 * (src/maintenance); each use-case (ledger/cleanup.ts, gc.ts, retry-failed.ts) reads the
 * projections, takes the dataset's maintenance lease, appends the planning event before any
 * request, deletes through the object store, and records the outcome. A crash anywhere leaves a
 * `planned` item that the next pass resumes.
 *
 * @internal used through the Ledger facade.
 */
export class MaintenanceService {
  readonly #deps: MaintenanceDeps;

  constructor(deps: MaintenanceDeps) {
    this.#deps = deps;
  }

  /** See {@link cleanup}. */
  cleanup(options: CleanupOptions = {}): Promise<CleanupReport> {
    return cleanup(this.#deps, options);
  }

  /** See {@link gc}. */
  gc(datasetId: string, options: GcOptions = {}): Promise<GcReport> {
    return gc(this.#deps, datasetId, options);
  }

  /** See {@link retryFailed}. */
  retryFailed(input: { datasetId: string; runId?: string }): Promise<RetryFailedReport> {
    return retryFailed(this.#deps, input);
  }
}
