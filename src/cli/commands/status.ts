import { type StatusJson, statusJson } from "../../ledger/json-shapes.js";
import type { RegisterCommand } from "../command-runtime.js";
import { idArgument } from "../flags.js";
import { withExamples } from "../help-text.js";
import type { Style } from "../style.js";
import { renderPairs, renderTable } from "../table.js";
import { heading, when } from "../views.js";

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/**
 * One dataset's status as key/value lines, then the floor items.
 *
 * @example `io.stdout.write(renderStatus(style, statusJson(await ledger.status("events"))))`
 */
function renderStatus(style: Style, s: StatusJson): string {
  const runs = s.runs;
  const byStatus = (
    [
      ["started", runs.started],
      ["publishing", runs.publishing],
      ["succeeded", runs.succeeded],
      ["failed", runs.failed],
    ] as const
  )
    .filter(([, n]) => n > 0)
    .map(([label, n]) => `${n} ${label}`);
  const pending = s.pending;
  const pendingText =
    pending.total === 0
      ? "none"
      : [
          `${pending.total}: ${pending.dueNow} due now`,
          `${pending.waiting} waiting${pending.nextRetryAt ? ` (next retry ${when(pending.nextRetryAt)})` : ""}`,
          `${pending.exhausted} exhausted${pending.exhausted > 0 ? " (retry-failed)" : ""}`,
        ].join(", ");
  const m = s.lastMaintenance;
  const a = s.lastAudit;
  const pairs: [string, string | null][] = [
    ["dataset", style.bold(s.datasetId)],
    ["root", s.root],
    [
      "policies",
      `keep ${s.policies.keepRuns}, retention ${s.policies.retention}, failed retention ${s.policies.failedRetention}, stale after ${s.policies.staleAfter}, safety window ${s.policies.safetyWindow}`,
    ],
  ];
  if (s.safetyWindowHold) {
    pairs.push([
      "safety window held",
      `${s.safetyWindowHold.window} until ${when(s.safetyWindowHold.until)}`,
    ]);
  }
  pairs.push(
    [
      "current run",
      s.current === null
        ? style.dim("none yet")
        : `${style.cyan(s.current.runId)} since ${when(s.current.since) ?? "?"}`,
    ],
    [
      "runs",
      `${runs.total}${byStatus.length > 0 ? `: ${byStatus.join(", ")}` : ""}${runs.pruned > 0 ? `; ${runs.pruned} pruned` : ""}`,
    ],
    ["pending cleanup", pendingText],
    [
      "failed floor",
      s.floor.total === 0
        ? "empty"
        : `${plural(s.floor.total, "item")}, next leaves ${when(s.floor.nextLeavesAt)}`,
    ],
    [
      "last maintenance",
      m === null
        ? style.dim("none recorded")
        : `${m.kind} ${when(m.startedAt)} → ${when(m.finishedAt)}: ${m.outcome === "ok" ? style.green("ok") : style.yellow(m.outcome)} (deleted ${m.deleted}, failed ${m.failed}, pruned ${m.pruned})${m.error ? ` ${m.error}` : ""}`,
    ],
    [
      "last audit",
      a === null
        ? style.dim("none recorded")
        : `${when(a.at)}: ${a.match ? style.green("match") : style.red(auditProblems(a))} (${a.events} events${a.deep ? ", archives checked" : ", archives not checked: audit --deep"})`,
    ],
  );
  let out = renderPairs(style, pairs);
  if (s.floor.items.length > 0) {
    out +=
      heading(style, "failed-retention floor") +
      renderTable(
        style,
        ["KIND", "RUN", "URL", "FAILED", "PROTECTED UNTIL"],
        s.floor.items.map((f) => [f.kind, f.runId, f.url, when(f.failedAt), when(f.protectedUntil)]),
      );
    if (s.floor.total > s.floor.items.length) {
      out += style.dim(
        `… and ${s.floor.total - s.floor.items.length} more (shardledger floors ${s.datasetId})\n`,
      );
    }
  }
  return out;
}

/**
 * `status [<datasetId>]`: one view per dataset — the current run and since when, runs by status,
 * pending cleanup (due now, waiting with the next retry, exhausted), the failed-retention floor
 * and when its items leave it, the last maintenance pass and its outcome, the last audit. `--json`
 * prints one {@link StatusJson} for a named dataset, an array of them (by id) without one.
 *
 * @example `shardledger status events --json | jq .pending`
 */
export const registerStatus: RegisterCommand = (program, runtime) => {
  const command = program
    .command("status")
    .description(
      "one view per dataset: current run, runs, pending cleanup, floor, last maintenance and audit",
    )
    .argument("[datasetId]", "the dataset (default: every dataset)")
    .action(
      runtime.action(async (ctx, [datasetId]) => {
        const id = datasetId === undefined ? undefined : idArgument("<datasetId>", datasetId);
        const ledger = await ctx.ledger();
        if (id !== undefined) {
          const one = statusJson(await ledger.status(id));
          return { json: one, human: (style) => renderStatus(style, one) };
        }
        const all = (await ledger.status()).map(statusJson);
        return {
          json: all,
          human: (style) =>
            all.length === 0 ? style.dim("no datasets\n") : all.map((s) => renderStatus(style, s)).join("\n"),
        };
      }),
    );
  withExamples(
    command,
    ["shardledger status", "shardledger status events --json | jq '.pending, .lastMaintenance'"],
    "The last maintenance pass is recorded by each cleanup or gc pass that did work (dry runs are\nnot); the last audit by `audit`. Both are null until there is one.",
  );
};

/** What a failed audit found: its differences, and the archive problems of a deep one. */
function auditProblems(a: { differences: number; archiveProblems: number | null }): string {
  const parts = [`${a.differences} difference(s)`];
  if (a.archiveProblems) parts.push(`${a.archiveProblems} archive problem(s)`);
  return `did not match: ${parts.join(", ")}`;
}
