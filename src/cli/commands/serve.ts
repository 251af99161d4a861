import { resolve } from "node:path";
import type { RegisterCommand } from "../command-runtime.js";
import { withExamples } from "../help-text.js";

/** Connections to a PostgreSQL server (PGlite is one connection whatever this says). */
const SERVER_POOL_SIZE = 16;

interface ServeOptions {
  listen: string;
  tokens?: string;
}

/**
 * `serve [--listen HOST:PORT] [--tokens FILE]`: the HTTP API (docs/http-api.md), the OpenAPI
 * document at `/openapi.json`, Prometheus `/metrics` and the dashboard at `/`, over the ledger of
 * `--database`. Logs one JSON line per request on stdout; the first line is
 * `{"msg":"listening","url":"http://HOST:PORT"}`. SIGINT/SIGTERM stop accepting, finish the
 * requests in flight, close the ledger and exit 0. Without tokens (`--tokens` or
 * `SHARDLEDGER_TOKENS`) it refuses a non-loopback `--listen`.
 *
 * Hono and the server are imported only here, so other commands never load them.
 *
 * @example `shardledger serve --listen 127.0.0.1:8080 --tokens tokens.json`
 */
export const registerServe: RegisterCommand = (program, runtime) => {
  const command = program
    .command("serve")
    .description("serve the HTTP API, its OpenAPI document, /metrics and the dashboard over the ledger")
    .option("--listen <host:port>", "address to listen on (port 0 picks a free one)", "127.0.0.1:8080")
    .option(
      "--tokens <file>",
      'bearer tokens: {"tokens":[{"token","scope":"read|write|admin","datasets":[…]|"*"}]} (env SHARDLEDGER_TOKENS holds the JSON itself)',
    )
    .action(
      runtime.action<ServeOptions>(async (ctx, _args, options) => {
        const [{ parseListen, startServer }, { isLoopback, loadTokens }, { packageVersion }, pinoModule] =
          await Promise.all([
            import("../../server/start-server.js"),
            import("../../server/auth.js"),
            import("../../server/static-files.js"),
            import("pino"),
          ]);
        // Everything is checked before the database is opened: a bad flag or tokens file starts nothing.
        const { host } = parseListen(options.listen);
        const tokens = loadTokens({
          ...(options.tokens !== undefined ? { file: resolve(ctx.io.cwd, options.tokens) } : {}),
          ...(ctx.io.env.SHARDLEDGER_TOKENS !== undefined ? { env: ctx.io.env.SHARDLEDGER_TOKENS } : {}),
        });
        if (tokens.length === 0 && !isLoopback(host)) {
          const { UsageError } = await import("../../errors.js");
          throw new UsageError(
            `refusing to listen on ${host} without tokens: configure --tokens FILE (or SHARDLEDGER_TOKENS), or listen on 127.0.0.1`,
            { field: "listen" },
          );
        }
        // pino is CommonJS: its named export is missing once bundled, the default is always there.
        const pino = pinoModule.default;
        const logger = pino(
          { base: null, timestamp: pino.stdTimeFunctions.isoTime },
          { write: (line: string) => ctx.io.stdout.write(line) },
        );
        // Concurrent requests each hold a connection while they work: more than a command's 4.
        const ledger = await ctx.ledger({ poolSize: SERVER_POOL_SIZE });
        const server = await startServer(ledger, {
          listen: options.listen,
          tokens,
          logger,
          version: packageVersion(),
        });
        logger.info({ url: server.url, auth: tokens.length > 0 ? "tokens" : "open" }, "listening");
        await new Promise<void>((done) => {
          if (ctx.signal.aborted) done();
          else ctx.signal.addEventListener("abort", () => done(), { once: true });
        });
        logger.info({ url: server.url }, "stopping: finishing the requests in flight");
        await server.close();
        logger.info({}, "stopped");
        return undefined;
      }),
    );
  withExamples(
    command,
    [
      "shardledger serve",
      "shardledger --database postgres://ledger@db/ledger serve --listen 0.0.0.0:8080 --tokens /etc/shardledger/tokens.json",
      "shardledger serve --listen 127.0.0.1:0   # a free port; the first log line says which",
    ],
    'The first stdout line is {"msg":"listening","url":"http://HOST:PORT"}. TLS is a reverse proxy\'s job.\nWithout tokens the server is open (every request is admin) and listens on loopback only.',
  );
};
