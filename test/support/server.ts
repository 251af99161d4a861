import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { toJsonLine } from "../../src/cli/json-output.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { parseTokens } from "../../src/server/auth.js";
import { type RunningServer, startServer } from "../../src/server/start-server.js";

/** Tokens of the test servers: one per scope, plus a writer limited to one dataset. */
export const TOKENS = {
  read: "read-token-0123456789",
  write: "write-token-0123456789",
  writeOther: "write-other-token-0123456789",
  admin: "admin-token-0123456789",
  adminOther: "admin-other-token-0123456789",
} as const;

/**
 * The tokens file of the test servers: `write`/`admin` may change every dataset ("*"),
 * `writeOther`/`adminOther` only the dataset `other`.
 */
export const TOKENS_JSON = JSON.stringify({
  tokens: [
    { token: TOKENS.read, scope: "read", datasets: "*" },
    { token: TOKENS.write, scope: "write", datasets: "*" },
    { token: TOKENS.writeOther, scope: "write", datasets: ["other"] },
    { token: TOKENS.admin, scope: "admin", datasets: "*" },
    { token: TOKENS.adminOther, scope: "admin", datasets: ["other"] },
  ],
});

/** A real HTTP server on 127.0.0.1 (a free port) over a ledger, with a client for it. */
export async function startTestServer(
  ledger: Ledger,
  options: { tokens?: boolean; dashboardDir?: string } = {},
): Promise<TestServer> {
  const dashboardDir = options.dashboardDir ?? mkdtempSync(join(tmpdir(), "shardledger-dashboard-"));
  const server = await startServer(ledger, {
    listen: "127.0.0.1:0",
    tokens: options.tokens ? parseTokens(TOKENS_JSON, "SHARDLEDGER_TOKENS") : [],
    dashboardDir,
  });
  return new TestServer(server, () => {
    if (!options.dashboardDir) rmSync(dashboardDir, { recursive: true, force: true });
  });
}

/** A response: status, parsed JSON body (or text), headers. */
export interface Reply<T = unknown> {
  status: number;
  body: T;
  headers: Headers;
}

export class TestServer {
  constructor(
    readonly server: RunningServer,
    private readonly cleanup: () => void,
  ) {}

  get url(): string {
    return this.server.url;
  }

  async request<T = unknown>(
    method: string,
    path: string,
    options: { body?: unknown; token?: string; headers?: Record<string, string> } = {},
  ): Promise<Reply<T>> {
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
    if (options.body !== undefined) headers["content-type"] ??= "application/json";
    const response = await fetch(`${this.url}${path}`, {
      method,
      headers,
      ...(options.body !== undefined
        ? { body: typeof options.body === "string" ? options.body : JSON.stringify(options.body) }
        : {}),
    });
    const text = await response.text();
    let body: unknown = text;
    if ((response.headers.get("content-type") ?? "").includes("json")) body = JSON.parse(text);
    return { status: response.status, body: body as T, headers: response.headers };
  }

  async close(): Promise<void> {
    await this.server.close();
    this.cleanup();
  }
}

/** A library result as the API answers it: through the CLI's JSON replacer. */
export const asJson = (value: unknown): unknown => JSON.parse(toJsonLine(value));

/** How many events the log holds (to assert that a refusal wrote nothing). */
export async function eventCount(ledger: Ledger): Promise<number> {
  let count = 0;
  let after = 0;
  for (;;) {
    const page = await ledger.events({ from: after, limit: 10_000 });
    count += page.length;
    if (page.length < 10_000) return count;
    after = page.at(-1)?.globalPosition ?? after;
  }
}
