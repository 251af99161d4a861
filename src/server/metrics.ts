import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Ledger } from "../ledger/open-ledger.js";
import type { CleanupReport, GcReport, RetryFailedReport } from "../maintenance/maintenance-reports.js";

/**
 * The Prometheus metrics of one server app, in a registry of its own (two apps in one process,
 * as in tests, never share counters). Counted from what the ledger's results say.
 *
 * @internal
 */
export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: "shardledger_http_requests_total",
    help: "HTTP requests answered, by method, route and status",
    labelNames: ["method", "route", "status"] as const,
    registers: [this.registry],
  });
  readonly latency = new Histogram({
    name: "shardledger_http_request_duration_seconds",
    help: "HTTP request latency, by method, route and status",
    labelNames: ["method", "route", "status"] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly attemptReports = new Counter({
    name: "shardledger_attempt_reports_total",
    help: "Attempt reports handled (single and batched), by kind and outcome (ok or the error code)",
    labelNames: ["kind", "outcome"] as const,
    registers: [this.registry],
  });
  readonly writes = new Counter({
    name: "shardledger_write_operations_total",
    help: "Write requests the ledger accepted, by operation (each appends at most one batch of events; a repeated idempotent report is accepted and appends nothing)",
    labelNames: ["operation"] as const,
    registers: [this.registry],
  });
  readonly deletions = new Counter({
    name: "shardledger_deletions_total",
    help: "Objects deleted or failed to delete by cleanup and gc requests (from their reports)",
    labelNames: ["operation", "result"] as const,
    registers: [this.registry],
  });
  readonly retries = new Counter({
    name: "shardledger_retries_total",
    help: "Failed runs reopened and exhausted cleanup items re-queued by retry-failed requests",
    registers: [this.registry],
  });
  readonly pending: Gauge;

  constructor(ledger: Ledger) {
    this.pending = new Gauge({
      name: "shardledger_pending_cleanup_items",
      help: "Items in the pending-cleanup set, by dataset (read from the ledger at each scrape)",
      labelNames: ["dataset"] as const,
      registers: [this.registry],
      async collect() {
        const items = await ledger.pendingCleanup();
        const byDataset = new Map<string, number>();
        for (const item of items) byDataset.set(item.datasetId, (byDataset.get(item.datasetId) ?? 0) + 1);
        this.reset();
        for (const [dataset, n] of byDataset) this.set({ dataset }, n);
      },
    });
  }

  cleanup(report: CleanupReport): void {
    if (report.dryRun) return;
    this.deletions.inc({ operation: "cleanup", result: "deleted" }, report.deleted.length);
    this.deletions.inc({ operation: "cleanup", result: "failed" }, report.failed.length);
  }

  gc(report: GcReport): void {
    if (report.dryRun) return;
    const urls = report.actions.reduce((n, a) => n + a.urls.length, 0);
    this.deletions.inc({ operation: "gc", result: "deleted" }, Math.max(0, urls - report.failed.length));
    this.deletions.inc({ operation: "gc", result: "failed" }, report.failed.length);
  }

  retryFailed(report: RetryFailedReport): void {
    this.retries.inc(report.retried);
  }
}
