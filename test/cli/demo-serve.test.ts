import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { EXIT } from "../../src/cli/exit-codes.js";
import { runCli } from "../../src/cli/program.js";
import { capture, scratchRemovedAfterAll } from "../support/cli-capture.js";
import { BACKEND, SERVER_URL } from "../support/database.js";

/**
 * `demo` ends with something to look at: without `--serve` its last line says how to open the
 * dashboard on the demo's database; with `--serve` it serves the dashboard and the API over that
 * database until a signal.
 */

const { dirs, schemas } = scratchRemovedAfterAll();

/** The demo's home, and database flags for a fresh ledger on the suite's backend. */
function fresh(): { home: string; db: string[] } {
  const dir = mkdtempSync(join(tmpdir(), "shardledger-demo-serve-"));
  dirs.push(dir);
  if (BACKEND === "postgres") {
    const schema = `demo_serve_${randomUUID().slice(0, 8)}`;
    schemas.push(schema);
    return { home: join(dir, "home"), db: ["--database", SERVER_URL as string, "--schema", schema] };
  }
  return { home: join(dir, "home"), db: ["--database", `pglite:${dir}/db`] };
}

/**
 * A whole demo takes about a minute in process on a busy 2-core machine: the limit is a hang
 * guard, far beyond it, not a speed verdict.
 */
const HANG_GUARD_MS = 10 * 60_000;

describe(`demo and the dashboard (${BACKEND})`, { timeout: HANG_GUARD_MS }, () => {
  it("with --serve serves the dashboard and the API over the demo's ledger until SIGINT, then exits 0", async () => {
    const { home, db } = fresh();
    const signals = new EventEmitter();
    const out = capture();
    const err = capture();
    const running = runCli([...db, "--json", "demo", "--home", home, "--serve", "--listen", "127.0.0.1:0"], {
      stdout: out.stream,
      stderr: err.stream,
      signals: signals as never,
      env: {},
    });
    // One JSON line for the demo's summary, then one naming the dashboard (the demo takes a while).
    let exited: number | undefined;
    void running.then((code) => {
      exited = code;
    });
    while (out.text().split("\n").filter(Boolean).length < 2) {
      if (exited !== undefined) throw new Error(`demo --serve exited ${exited}: ${out.text()}${err.text()}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const lines = out
      .text()
      .split("\n")
      .filter(Boolean)
      .map((x) => JSON.parse(x));
    expect(lines[0].audit.match).toBe(true);
    const url: string = lines[1].dashboard;
    expect(lines[1]).toEqual({
      dashboard: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+\/$/),
      auth: "open",
    });

    const page = await fetch(url);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain("<title>shardledger</title>");
    const status = (await (await fetch(`${url}v1/status`)).json()) as {
      datasetId: string;
      current: { runId: string } | null;
    }[];
    expect(status.map((s) => s.datasetId)).toEqual(["clickstream"]);
    expect(status[0]?.current?.runId).toBe(lines[0].published.at(-1).runId);

    signals.emit("SIGINT", "SIGINT");
    expect(await running).toBe(EXIT.OK);
    await expect(fetch(url)).rejects.toThrow();
    expect(signals.listenerCount("SIGINT")).toBe(0);
  });

  it("refuses a non-loopback --listen without tokens before the demo writes anything", async () => {
    const { home, db } = fresh();
    const out = capture();
    const err = capture();
    const code = await runCli([...db, "--json", "demo", "--home", home, "--serve", "--listen", "0.0.0.0:0"], {
      stdout: out.stream,
      stderr: err.stream,
      env: {},
    });
    expect(code).toBe(EXIT.USAGE);
    expect(JSON.parse(out.text())).toMatchObject({ error: { code: "USAGE", field: "--listen" } });
  });

  it("without --serve ends with how to open the dashboard on the demo's database", async () => {
    const { home, db } = fresh();
    const out = capture();
    const err = capture();
    expect(
      await runCli([...db, "--no-color", "demo", "--home", home], {
        stdout: out.stream,
        stderr: err.stream,
        env: {},
      }),
    ).toBe(EXIT.OK);
    const last = out.text().trimEnd().split("\n").at(-1);
    const schema = BACKEND === "postgres" ? ` --schema ${db[3]}` : "";
    expect(last).toBe(
      `dashboard: run \`npx shardledger --database ${db[1]}${schema} serve\` and open http://127.0.0.1:8080/ (or run the demo with --serve)`,
    );
  });

  // The default database is PGlite whatever the suite's backend: once is enough.
  it.runIf(BACKEND === "pglite")(
    "with --home and no --database keeps its database in that home, and the hint names it",
    async () => {
      const cwd = mkdtempSync(join(tmpdir(), "shardledger-demo-home-"));
      dirs.push(cwd);
      const home = join(cwd, "elsewhere", "home");
      const out = capture();
      const err = capture();
      const code = await runCli(["--no-color", "demo", "--home", home], {
        stdout: out.stream,
        stderr: err.stream,
        env: {},
        cwd,
      });
      expect({ code, err: err.text() }).toMatchObject({ code: EXIT.OK });
      expect(existsSync(join(home, "db", "PG_VERSION"))).toBe(true);
      expect(existsSync(join(cwd, ".shardledger"))).toBe(false);
      const last = out.text().trimEnd().split("\n").at(-1);
      expect(last).toBe(
        `dashboard: run \`npx shardledger --database pglite:${home}/db serve\` and open http://127.0.0.1:8080/ (or run the demo with --serve)`,
      );
      // The database the hint names is the demo's: its runs are there.
      const runs = capture();
      expect(
        await runCli(["--database", `pglite:${home}/db`, "--json", "runs", "clickstream"], {
          stdout: runs.stream,
          stderr: capture().stream,
          env: {},
          cwd,
        }),
      ).toBe(EXIT.OK);
      expect(JSON.parse(runs.text())).toHaveLength(4);
    },
  );
});
