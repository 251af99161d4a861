import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { builtCli } from "../support/build-cli.js";
import { BACKEND, SERVER_URL, serverClient } from "../support/database.js";
import { TOKENS, TOKENS_JSON } from "../support/server.js";

/**
 * `shardledger serve` as the package's bin runs it: the first stdout line says where it listens,
 * requests are logged one JSON line each (never a token), SIGTERM stops it with exit 0, and bad
 * flags or a bad tokens file stop it before it listens.
 */
describe(`shardledger serve (the built CLI) on ${BACKEND}`, () => {
  let cli = "";
  let dir = "";
  let db: string[] = [];
  beforeAll(() => {
    cli = inject("cliPath") ?? builtCli();
    dir = mkdtempSync(join(tmpdir(), "shardledger-serve-"));
    db =
      BACKEND === "postgres"
        ? ["--database", SERVER_URL as string, "--schema", `t_serve_${randomUUID().slice(0, 8)}`]
        : ["--database", `pglite:${join(dir, "db")}`];
    const migrated = spawnSync(process.execPath, [cli, ...db, "migrate"], { encoding: "utf8" });
    expect(migrated.status, migrated.stderr).toBe(0);
  });
  afterAll(async () => {
    if (BACKEND === "postgres" && db[3]) {
      const client = serverClient();
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS "${db[3]}" CASCADE`);
      await client.end();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  const run = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    spawnSync(process.execPath, [cli, ...db, ...args], {
      encoding: "utf8",
      env: { ...process.env, ...env },
      timeout: 60_000,
    });

  it("listens, logs a JSON line per request, and stops on SIGTERM with exit 0", async () => {
    const child = spawn(process.execPath, [cli, ...db, "serve", "--listen", "127.0.0.1:0"], {
      env: { ...process.env, SHARDLEDGER_TOKENS: TOKENS_JSON },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const out = collect(child);
    const first = JSON.parse(await out.firstLine) as { msg: string; url: string };
    expect(first).toMatchObject({
      msg: "listening",
      url: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/),
    });
    const health = await fetch(`${first.url}/healthz`);
    expect(health.status).toBe(200);
    const refused = await fetch(`${first.url}/v1/datasets`);
    expect(refused.status).toBe(401);
    const created = await fetch(`${first.url}/v1/datasets`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKENS.admin}`, "content-type": "application/json" },
      body: JSON.stringify({ datasetId: "cli", root: `file://${dir}/cli` }),
    });
    expect(created.status).toBe(201);
    child.kill("SIGTERM");
    const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
    expect(code).toBe(0);
    const lines = out.stdout().trim().split("\n");
    const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(records.filter((r) => r.msg === "request").map((r) => [r.method, r.path, r.status])).toEqual([
      ["GET", "/healthz", 200],
      ["GET", "/v1/datasets", 401],
      ["POST", "/v1/datasets", 201],
    ]);
    for (const r of records.filter((r) => r.msg === "request")) {
      expect(r).toMatchObject({ ms: expect.any(Number), requestId: expect.any(String) });
    }
    expect(records.at(-1)?.msg).toBe("stopped");
    for (const token of Object.values(TOKENS)) expect(out.stdout() + out.stderr()).not.toContain(token);
  });

  it("refuses a bad --listen, a bad tokens file and an open non-loopback address before listening", () => {
    const badListen = run(["--json", "serve", "--listen", "nowhere"]);
    expect(badListen.status).toBe(2);
    expect(JSON.parse(badListen.stdout)).toMatchObject({ error: { code: "USAGE", field: "--listen" } });

    const tokensFile = join(dir, "tokens.json");
    writeFileSync(
      tokensFile,
      JSON.stringify({ tokens: [{ token: "x", scope: "superuser", datasets: "*" }] }),
    );
    const badTokens = run(["--json", "serve", "--listen", "127.0.0.1:0", "--tokens", tokensFile]);
    expect(badTokens.status).toBe(2);
    expect(JSON.parse(badTokens.stdout)).toMatchObject({
      error: { code: "VALIDATION", field: "--tokens: tokens.0.scope" },
    });
    const badEnv = run(["--json", "serve", "--listen", "127.0.0.1:0"], { SHARDLEDGER_TOKENS: "{" });
    expect(badEnv.status).toBe(2);
    expect(JSON.parse(badEnv.stdout)).toMatchObject({
      error: { code: "VALIDATION", field: "SHARDLEDGER_TOKENS" },
    });

    const open = run(["--json", "serve", "--listen", "0.0.0.0:0"], { SHARDLEDGER_TOKENS: "" });
    expect(open.status).toBe(2);
    expect(JSON.parse(open.stdout)).toMatchObject({ error: { code: "USAGE", field: "listen" } });
  });
});

function collect(child: ChildProcess) {
  let stdout = "";
  let stderr = "";
  let resolveFirst!: (line: string) => void;
  let rejectFirst!: (e: Error) => void;
  const firstLine = new Promise<string>((resolve, reject) => {
    resolveFirst = resolve;
    rejectFirst = reject;
  });
  child.stdout?.setEncoding("utf8").on("data", (s: string) => {
    stdout += s;
    const newline = stdout.indexOf("\n");
    if (newline >= 0) resolveFirst(stdout.slice(0, newline));
  });
  child.stderr?.setEncoding("utf8").on("data", (s: string) => {
    stderr += s;
  });
  child.on("close", (code) => rejectFirst(new Error(`serve exited (${code}) before listening:\n${stderr}`)));
  return { firstLine, stdout: () => stdout, stderr: () => stderr };
}
