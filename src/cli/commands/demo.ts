import type { DemoSummary } from "../../demo/run-demo.js";
import type { RegisterCommand } from "../command-runtime.js";
import { EXIT } from "../exit-codes.js";
import { withExamples } from "../help-text.js";
import type { Style } from "../style.js";
import { renderTable } from "../table.js";
import { renderWinners } from "../views.js";

/**
 * `demo`: a simulated multi-engine write on the embedded defaults (PGlite in `./.shardledger`, a
 * filesystem dataset root under it): retries, speculative duplicates, failed attempts, a run that
 * fails its coverage check, late attempts after publish, injected transient cleanup failures that
 * land in the pending set and are drained, then the registry, one run's winners, the pending set
 * and an audit. `--json` prints the summary.
 *
 * @example `npx shardledger demo`
 */
export const registerDemo: RegisterCommand = (program, runtime) => {
  const command = program
    .command("demo")
    .description(
      "a simulated multi-engine write with retries, speculation and injected cleanup faults, on the embedded defaults",
    )
    .option("--home <dir>", "where the embedded lake lives", ".shardledger")
    .action(
      runtime.action<{ home: string }>(async (ctx, _args, options) => {
        const progress = ctx.progress({ label: "demo", total: 5, unit: "steps" });
        let summary: DemoSummary;
        try {
          // The demo pulls in the whole ledger: loaded only when it runs, not for every command.
          const { runDemo } = await import("../../demo/run-demo.js");
          summary = await runDemo({
            home: options.home,
            database: ctx.globals.database,
            schema: ctx.globals.schema,
            onProgress: (step, done, total) => {
              ctx.throwIfInterrupted();
              progress.update(done, total + 1);
              if (!progress.visible && !ctx.globals.json) ctx.warn(`demo: ${step}`);
            },
          });
        } finally {
          progress.stop();
        }
        return {
          json: summary,
          human: (style) => renderDemo(style, summary),
          ...(summary.audit.match
            ? {}
            : { exitCode: EXIT.REFUSED, message: "demo: the audit did not match" }),
        };
      }),
    );
  withExamples(
    command,
    ["npx shardledger demo", "npx shardledger demo --json | jq .audit"],
    "Run it again: every invocation writes new runs into the same embedded ledger.",
  );
};

function renderDemo(style: Style, s: DemoSummary): string {
  const out: string[] = [];
  out.push(style.bold(`dataset ${s.datasetId} at ${s.root}`), `database ${s.database}`, "");
  out.push(style.bold("run registry"));
  out.push(
    renderTable(
      style,
      ["RUN", "STATUS", "SHARDS", "CURRENT", "ATTEMPTS", "WINNERS", "DELETED"],
      s.runs.map((r) => [
        r.runId,
        style.status(r.status),
        r.numShards,
        r.current ? "yes" : "",
        r.attempts.total,
        r.attempts.winner,
        r.attempts.deleted,
      ]),
    ).trimEnd(),
  );
  const current = s.published[0];
  if (current) {
    out.push("", style.bold(`winners of ${current.runId} (first 8 of ${current.winners.length})`));
    out.push(renderWinners(style, current.winners.slice(0, 8)).trimEnd());
  }
  if (s.coverageFailure) {
    out.push(
      "",
      `${style.red("coverage failure")}: run ${s.coverageFailure.runId} is missing shard(s) ${s.coverageFailure.missingShards.join(", ")}; nothing was published`,
    );
  }
  out.push("", `late attempts after publish, classified LOSER at once: ${s.lateLosers}`);
  out.push(
    "",
    style.bold("cleanup"),
    `first pass (with injected SlowDown): deleted ${s.firstCleanup.deleted.length}, failed ${s.firstCleanup.failed.length} → pending set:`,
  );
  out.push(
    s.pendingAfterFirstCleanup.length === 0
      ? style.dim("  (empty)")
      : renderTable(
          style,
          ["URL", "STATE", "TRIES", "LAST ERROR"],
          s.pendingAfterFirstCleanup.map((p) => [p.url, p.state, p.tries, p.lastErrorCode]),
        ).trimEnd(),
  );
  out.push(
    `later pass: deleted ${s.drainingCleanup.deleted.length}, failed ${s.drainingCleanup.failed.length}; pending now ${s.pendingAtEnd}`,
  );
  out.push(
    "",
    style.bold("audit"),
    `replayed ${s.audit.events} events: ${s.audit.match ? style.green("projections match the log") : style.red(`${s.audit.differences.length} difference(s)`)}`,
  );
  return `${out.join("\n")}\n`;
}
