import { join, resolve } from "node:path";
import { redactUrl } from "../../adapters/postgres/connection-url.js";
import type { DemoSummary } from "../../demo/run-demo.js";
import type { RegisterCommand } from "../command-runtime.js";
import { EXIT } from "../exit-codes.js";
import type { GlobalOptions } from "../global-options.js";
import { withExamples } from "../help-text.js";
import type { Style } from "../style.js";
import { renderTable } from "../table.js";
import { renderWinners } from "../views.js";

/**
 * `demo`: a simulated multi-engine write on the embedded defaults (PGlite in `./.shardledger`, a
 * filesystem dataset root under it): retries, speculative duplicates, failed attempts, a run that
 * fails its coverage check, late attempts after publish, injected transient cleanup failures that
 * land in the pending set and are drained, then the registry, one run's winners, the pending set
 * and an audit. `--json` prints the summary. The last line says how to open the dashboard on the
 * demo's database; `--serve` opens it: after the demo, the HTTP API and the dashboard are served
 * over the demo's ledger (`--listen`, default 127.0.0.1:8080; open unless `SHARDLEDGER_TOKENS`
 * is set) until SIGINT/SIGTERM.
 *
 * @example `npx shardledger demo --serve`
 */
/** The demo's home by default: the default `--database` (`pglite:./.shardledger/db`) is inside it. */
const DEFAULT_HOME = ".shardledger";

export const registerDemo: RegisterCommand = (program, runtime) => {
  const command = program
    .command("demo")
    .description(
      "a simulated multi-engine write with retries, speculation and injected cleanup faults, on the embedded defaults",
    )
    .option(
      "--home <dir>",
      "where the demo's lake lives, and its embedded database unless --database says otherwise",
      DEFAULT_HOME,
    )
    .option("--serve", "then serve the dashboard and the HTTP API over the demo's database until Ctrl-C")
    .option(
      "--listen <host:port>",
      "with --serve: the address to listen on (port 0 picks a free one)",
      "127.0.0.1:8080",
    )
    .action(
      runtime.action<DemoFlags>(async (ctx, _args, options) => {
        // A bad --listen is refused before the demo writes anything.
        const serving = options.serve === true ? await checkListen(options.listen, ctx.io.env) : undefined;
        const { home, database } = demoDatabase(ctx.globals, ctx.io.cwd, options.home);
        const progress = ctx.progress({ label: "demo", total: 5, unit: "steps" });
        let summary: DemoSummary;
        try {
          // The demo pulls in the whole ledger: loaded only when it runs, not for every command.
          const { runDemo } = await import("../../demo/run-demo.js");
          summary = await runDemo({
            home,
            database,
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
        if (!serving || !summary.audit.match) {
          return {
            json: summary,
            human: (style) =>
              `${renderDemo(style, summary)}\n${dashboardHint(ctx.globals, database, ctx.io.cwd)}\n`,
            ...(summary.audit.match
              ? {}
              : {
                  exitCode: EXIT.REFUSED,
                  message: `demo: the audit did not match${serving ? "; not serving" : ""}`,
                }),
          };
        }
        ctx.emit(summary, (style) => renderDemo(style, summary));
        // The server is loaded only now: `demo` without --serve never loads hono.
        const { startServer } = await import("../../server/start-server.js");
        const ledger = await ctx.ledger({ database });
        const server = await startServer(ledger, { listen: options.listen, tokens: serving.tokens });
        const url = `${server.url}/`;
        ctx.emit({ dashboard: url, auth: serving.tokens.length > 0 ? "tokens" : "open" }, (style) =>
          [
            "",
            `${style.bold("dashboard")}: ${url}`,
            serving.tokens.length > 0
              ? "  (give it a token from SHARDLEDGER_TOKENS with the read scope)"
              : "  (open: no tokens configured, loopback only)",
            "serving the demo's ledger; press Ctrl-C to stop",
          ].join("\n"),
        );
        await new Promise<void>((done) => {
          if (ctx.signal.aborted) done();
          else ctx.signal.addEventListener("abort", () => done(), { once: true });
        });
        await server.close();
        return undefined;
      }),
    );
  withExamples(
    command,
    [
      "npx shardledger demo",
      "npx shardledger demo --serve                        # then open http://127.0.0.1:8080/",
      "npx shardledger demo --json | jq .audit",
    ],
    "Run it again: every invocation writes new runs into the same embedded ledger.",
  );
};

interface DemoFlags {
  home: string;
  serve?: boolean;
  listen: string;
}

/**
 * Checks `--listen` and reads `SHARDLEDGER_TOKENS` before the demo starts. Without tokens the
 * server is open, so it must listen on a loopback address (the same rule as `serve`).
 */
async function checkListen(
  listen: string,
  env: Readonly<Record<string, string | undefined>>,
): Promise<{ tokens: import("../../server/auth.js").TokenEntry[] }> {
  const [{ parseListen }, { isLoopback, loadTokens }, { UsageError }] = await Promise.all([
    import("../../server/start-server.js"),
    import("../../server/auth.js"),
    import("../../errors.js"),
  ]);
  const { host } = parseListen(listen);
  const tokens = loadTokens(env.SHARDLEDGER_TOKENS !== undefined ? { env: env.SHARDLEDGER_TOKENS } : {});
  if (tokens.length === 0 && !isLoopback(host)) {
    throw new UsageError(
      `refusing to listen on ${host} without tokens: set SHARDLEDGER_TOKENS, or listen on 127.0.0.1`,
      { field: "--listen" },
    );
  }
  return { tokens };
}

/**
 * The demo's home and database. Without `--database` (or its environment variable) the database
 * lives in the home, beside the lake: `--home` moves both, and a home elsewhere than the default
 * never writes into the working directory.
 */
function demoDatabase(
  globals: GlobalOptions,
  cwd: string,
  homeFlag: string,
): { home: string; database: string } {
  const home = resolve(cwd, homeFlag);
  return {
    home,
    database: globals.databaseFrom === "default" ? `pglite:${join(home, "db")}` : globals.database,
  };
}

/**
 * The demo's last line: how to serve the dashboard on its database later, with the flags `serve`
 * needs to find it (none when the database is where `serve` looks by default).
 */
function dashboardHint(globals: GlobalOptions, database: string, cwd: string): string {
  const atDefault =
    globals.databaseFrom === "default" && database === demoDatabase(globals, cwd, DEFAULT_HOME).database;
  const flags = [
    ...(globals.databaseFrom === "--database" || !atDefault ? [`--database ${redactUrl(database)}`] : []),
    ...(globals.schema !== "shardledger" ? [`--schema ${globals.schema}`] : []),
  ];
  return `dashboard: run \`npx shardledger ${[...flags, "serve"].join(" ")}\` and open http://127.0.0.1:8080/ (or run the demo with --serve)`;
}

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
