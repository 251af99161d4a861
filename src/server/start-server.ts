import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import type { Logger } from "pino";
import { UsageError } from "../errors.js";
import type { Ledger } from "../ledger/open-ledger.js";
import { createServerApp, type ServerApp, type ServerAppOptions } from "./app.js";
import { isLoopback } from "./auth.js";

/**
 * Where to listen: `HOST:PORT` (`127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:80`); port 0 picks a
 * free one. A malformed value is a {@link UsageError} naming `--listen`.
 *
 * @internal
 */
export function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : Number.NaN;
  if (!match || !Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new UsageError(`--listen must be HOST:PORT, e.g. 127.0.0.1:8080 (got ${JSON.stringify(text)})`, {
      field: "--listen",
    });
  }
  return { host: (match[1] ?? match[2]) as string, port };
}

/**
 * A listening server: its URL, its app, and `close()` (stop accepting, finish the requests in
 * flight, then resolve; the ledger stays open: its owner closes it).
 *
 * @internal
 */
export interface RunningServer {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly app: ServerApp;
  close(): Promise<void>;
}

/**
 * Starts the HTTP API over a ledger. Refuses (a {@link UsageError} naming `listen`) to listen on a
 * non-loopback address without tokens: an open server must not be reachable from the network.
 *
 * @internal
 */
export async function startServer(
  ledger: Ledger,
  options: ServerAppOptions & { listen: string; logger?: Logger },
): Promise<RunningServer> {
  const { host, port } = parseListen(options.listen);
  if ((options.tokens ?? []).length === 0 && !isLoopback(host)) {
    throw new UsageError(
      `refusing to listen on ${host} without tokens: configure --tokens FILE (or SHARDLEDGER_TOKENS), or listen on 127.0.0.1`,
      { field: "listen" },
    );
  }
  let stopping = false;
  const app = createServerApp(ledger, { ...options, isStopping: () => stopping });
  const server = createAdaptorServer({ fetch: app.fetch, hostname: host, port });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  let closed: Promise<void> | undefined;
  return {
    url: `http://${shownHost}:${address.port}`,
    host: address.address,
    port: address.port,
    app,
    close() {
      closed ??= new Promise<void>((resolve, reject) => {
        stopping = true;
        // Stop accepting; idle keep-alive connections are closed, requests in flight finish.
        server.close((e) => (e ? reject(e) : resolve()));
        (server as { closeIdleConnections?: () => void }).closeIdleConnections?.();
      });
      return closed;
    },
  };
}
