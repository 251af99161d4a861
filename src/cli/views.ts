import type { DatasetJson } from "../ledger/json-shapes.js";
import type { AttemptView, RunView, WinnerView } from "../projections/views.js";
import type { Style } from "./style.js";
import { type CellText, renderPairs, renderTable } from "./table.js";

/**
 * Shapes and renderings shared by several commands.
 */

/**
 * A date for tables: ISO to the second.
 *
 * @example `when(new Date("2026-11-23T10:00:00.123Z")) // "2026-11-23T10:00:00Z"`
 */
export function when(date: Date | null): string | null {
  return date === null ? null : date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** @example `renderDataset(style, datasetJson(view))` */
export function renderDataset(style: Style, d: DatasetJson): string {
  return renderPairs(style, [
    ["dataset", style.bold(d.datasetId)],
    ["root", d.root],
    ["keep runs", d.policies.keepRuns],
    ["retention", d.policies.retention],
    ["failed retention", d.policies.failedRetention],
    ["stale after", d.policies.staleAfter],
    ["safety window", d.policies.safetyWindow],
    ...(d.safetyWindowHold
      ? [
          [
            "safety window held",
            `${d.safetyWindowHold.window} until ${when(d.safetyWindowHold.until)} (what the longer window promised)`,
          ] as [string, CellText],
        ]
      : []),
    ["current run", d.currentRunId],
    ["current manifest", d.currentManifestUrl],
    ["registered", when(d.registeredAt)],
  ]);
}

/** @example `renderDatasets(style, views.map(datasetJson))` */
export function renderDatasets(style: Style, datasets: readonly DatasetJson[]): string {
  if (datasets.length === 0) return style.dim("no datasets\n");
  return renderTable(
    style,
    ["DATASET", "ROOT", "KEEP", "RETENTION", "FAILED RET.", "STALE AFTER", "SAFETY", "CURRENT RUN"],
    datasets.map((d) => [
      d.datasetId,
      d.root,
      d.policies.keepRuns,
      d.policies.retention,
      d.policies.failedRetention,
      d.policies.staleAfter,
      d.policies.safetyWindow,
      d.currentRunId,
    ]),
  );
}

const attemptCounts = (run: RunView): string => {
  const a = run.attempts;
  const parts = [`${a.total} total`];
  for (const [key, label] of [
    ["succeeded", "succeeded"],
    ["failed", "failed"],
    ["winner", "winners"],
    ["loser", "losers"],
    ["cleanupPending", "cleanup pending"],
    ["deleted", "deleted"],
  ] as const) {
    if (a[key] > 0) parts.push(`${a[key]} ${label}`);
  }
  return parts.join(", ");
};

/**
 * One run as key/value lines.
 *
 * @example `io.stdout.write(renderRun(style, await ledger.heartbeat(runId)))`
 */
export function renderRun(style: Style, run: RunView): string {
  const pairs: [string, CellText][] = [
    ["run", style.bold(run.runId)],
    ["dataset", run.datasetId],
    ["status", style.status(run.status) + (run.current ? ` ${style.cyan("(current)")}` : "")],
    ["shards", run.numShards],
    ["attempts", attemptCounts(run)],
    ["started", when(run.startedAt)],
    ["heartbeat", when(run.heartbeatAt)],
    ["updated", when(run.updatedAt)],
  ];
  if (run.manifestUrl !== null) pairs.push(["manifest", run.manifestUrl]);
  if (run.succeededAt !== null) pairs.push(["succeeded", when(run.succeededAt)]);
  if (run.failedAt !== null) {
    pairs.push(["failed", when(run.failedAt)]);
    pairs.push(["failure", [run.failureCause, run.failureReason].filter(Boolean).join(": ")]);
  }
  if (run.missingShards !== null && run.missingShards.length > 0)
    pairs.push(["missing shards", run.missingShards.join(", ")]);
  if (run.replacedAt !== null) pairs.push(["replaced", when(run.replacedAt)]);
  if (run.reopenedCount > 0) pairs.push(["reopened", run.reopenedCount]);
  return renderPairs(style, pairs);
}

/**
 * The run registry of a dataset.
 *
 * @example `io.stdout.write(renderRuns(style, await ledger.runs("events")))`
 */
export function renderRuns(style: Style, runs: readonly RunView[]): string {
  if (runs.length === 0) return style.dim("no runs\n");
  return renderTable(
    style,
    ["RUN", "STATUS", "SHARDS", "CURRENT", "ATTEMPTS", "STARTED", "UPDATED"],
    runs.map((r) => [
      r.runId,
      style.status(r.status),
      r.numShards,
      r.current ? style.cyan("yes") : "",
      r.attempts.total,
      when(r.startedAt),
      when(r.updatedAt),
    ]),
  );
}

/**
 * The attempts of a run.
 *
 * @example `io.stdout.write(renderAttempts(style, (await ledger.run(runId)).attempts))`
 */
export function renderAttempts(style: Style, attempts: readonly AttemptView[]): string {
  if (attempts.length === 0) return style.dim("no attempts\n");
  return renderTable(
    style,
    ["SHARD", "ATTEMPT", "TASK ATTEMPT", "STATUS", "URL", "ERROR"],
    attempts.map((a) => [a.shard, a.attempt, a.taskAttemptId, style.status(a.status), a.url, a.error]),
  );
}

/**
 * The winners of a run.
 *
 * @example `io.stdout.write(renderWinners(style, result.winners))`
 */
export function renderWinners(style: Style, winners: readonly WinnerView[]): string {
  if (winners.length === 0) return style.dim("no winners\n");
  return renderTable(
    style,
    ["SHARD", "ATTEMPT", "TASK ATTEMPT", "URL"],
    winners.map((w) => [w.shard, w.attempt, w.taskAttemptId, w.url]),
  );
}

/**
 * A heading line above a section of human output.
 *
 * @example `heading(style, "winners")`
 */
export function heading(style: Style, text: string): string {
  return `\n${style.bold(text)}\n`;
}
