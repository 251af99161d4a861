import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import type { Command } from "commander";
import { afterAll, beforeAll, describe, type ExpectStatic, inject, test } from "vitest";
import { resolveIo } from "../../src/cli/cli-io.js";
import { CliRuntime } from "../../src/cli/command-runtime.js";
import { createProgram } from "../../src/cli/program.js";
import { builtCli } from "../support/build-cli.js";
import { BACKEND, SERVER_URL, serverClient } from "../support/database.js";

/**
 * End to end: the BUILT CLI (`node dist/bin/shardledger.js`, the package's bin, built once per run
 * by the globalSetup in vitest.config.ts) as a subprocess, as an orchestrator would drive it, on
 * the suite's backend (a fresh schema of the DATABASE_URL server, or a PGlite directory per
 * scenario).
 *
 * Made to pass on a loaded 2-core machine: scenarios run one after another, at most
 * {@link MAX_CLI_PROCESSES} CLI processes at a time, and no verdict depends on speed — a process
 * is only ever stopped by a hang watchdog ({@link HANG_WATCHDOG_MS}), which fails the test saying
 * so, and the tests' own time limit is set far beyond it.
 */

/** CLI processes this file runs at once (other test files may be running beside it). */
const MAX_CLI_PROCESSES = 2;
/** A CLI process that has not exited after this long is hung, not slow: it is killed and fails its test. */
const HANG_WATCHDOG_MS = 10 * 60_000;
/** A scenario's time limit: only a hang may reach it, and the watchdog reports a hang first. */
const SCENARIO_TIMEOUT_MS = 60 * 60_000;

interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

let cliPath = "";
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(() => {
  cliPath = inject("cliPath") ?? builtCli();
});

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

function runBuiltCli(args: readonly string[]): Promise<CliResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: "1" };
  delete env.SHARDLEDGER_DATABASE_URL;
  delete env.SHARDLEDGER_SCHEMA;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => {
      stdout += s;
    });
    child.stderr.setEncoding("utf8").on("data", (s: string) => {
      stderr += s;
    });
    let hung = false;
    const watchdog = setTimeout(() => {
      hung = true;
      child.kill("SIGKILL");
    }, HANG_WATCHDOG_MS);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(watchdog);
      if (hung) {
        reject(
          new Error(
            `shardledger ${args.join(" ")} hung: killed after ${HANG_WATCHDOG_MS / 60_000} min\n${stderr}`,
          ),
        );
      } else {
        resolve({ code, signal, stdout, stderr });
      }
    });
  });
}

/** A database for one scenario and a dataset root beside it. */
interface Scenario {
  args: string[];
  dir: string;
  root: string;
  /** The same backend, but a schema (or directory) that was never migrated. */
  unmigratedArgs: string[];
}

async function scenario(label: string): Promise<Scenario> {
  const dir = mkdtempSync(join(tmpdir(), `shardledger-cli-${label}-`));
  mkdirSync(join(dir, "root"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  if (BACKEND === "postgres") {
    const schema = `cli_${label}_${randomUUID().slice(0, 8)}`;
    cleanups.push(async () => {
      const client = serverClient();
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await client.end();
    });
    return {
      args: ["--database", SERVER_URL as string, "--schema", schema],
      dir,
      root: `file://${dir}/root`,
      unmigratedArgs: ["--database", SERVER_URL as string, "--schema", `${schema}_never`],
    };
  }
  return {
    args: ["--database", `pglite:${dir}/db`],
    dir,
    root: `file://${dir}/root`,
    unmigratedArgs: ["--database", `pglite:${dir}/never`],
  };
}

/**
 * Runs one SQL statement on a scenario's database behind the CLI's back (no CLI process is
 * running then, so a PGlite directory may be opened here). `sql` gets the quoted schema name.
 */
async function sqlOn(s: Scenario, sql: (schema: string) => string): Promise<void> {
  if (BACKEND === "postgres") {
    const client = serverClient();
    await client.connect();
    try {
      await client.query(sql(`"${s.args[3]}"`));
    } finally {
      await client.end();
    }
    return;
  }
  const pglite = new PGlite(join(s.dir, "db"));
  try {
    await pglite.query(sql('"shardledger"'));
  } finally {
    await pglite.close();
  }
}

/** Runs a command with `--json` and expects exit 0, nothing on stderr, one JSON document on stdout. */
async function ok<T = Record<string, unknown>>(
  expect: ExpectStatic,
  s: Scenario,
  ...args: string[]
): Promise<T> {
  const r = await runBuiltCli([...s.args, "--json", ...args]);
  expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code: 0, stderr: "" });
  // JSON.parse throws on anything but exactly one document.
  return JSON.parse(r.stdout) as T;
}

/** The exit code of each JSON error code (README, "Exit codes and JSON errors"). */
const EXIT_OF_ERROR: Readonly<Record<string, number>> = {
  USAGE: 2,
  VALIDATION: 2,
  NOT_FOUND: 2,
  SHARD_COVERAGE: 3,
  CONCURRENCY: 3,
  SAFETY_RAIL: 3,
  ILLEGAL_TRANSITION: 3,
  CONTRADICTING_REPORT: 3,
  LOCKED: 3,
  LEASE_LOST: 3,
  OBJECT_STORE: 1,
  INTERNAL: 1,
};

/**
 * Runs a command that must fail with `code`. Without `--json` it prints nothing on stdout; with
 * it, exactly one JSON error body whose code maps to that exit code and whose message, like
 * stderr, matches.
 */
async function fails(
  expect: ExpectStatic,
  code: number,
  args: readonly string[],
  stderrMatches: RegExp,
): Promise<CliResult> {
  const r = await runBuiltCli(args);
  expect(r.stderr, `stderr of ${args.join(" ")}`).toMatch(stderrMatches);
  if (!args.includes("--json")) {
    expect({ args, code: r.code, stdout: r.stdout }).toEqual({ args, code, stdout: "" });
    return r;
  }
  expect({ args, code: r.code }).toEqual({ args, code });
  // JSON.parse throws on anything but exactly one document.
  const body = JSON.parse(r.stdout) as { error: { code: string; message: string } };
  expect(keys(body)).toEqual(["error"]);
  expect({ args, exit: EXIT_OF_ERROR[body.error.code] }).toEqual({ args, exit: code });
  expect(body.error.message, `error body of ${args.join(" ")}`).toMatch(stderrMatches);
  return r;
}

/** Runs `fn` over `items`, at most {@link MAX_CLI_PROCESSES} at a time. */
async function inBatches<T>(items: readonly T[], fn: (item: T) => Promise<unknown>): Promise<void> {
  const size = MAX_CLI_PROCESSES;
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn));
}

const keys = (o: unknown) => Object.keys(o as object).sort();

const shardUrl = (root: string, runId: string, shard: number, attempt: number, task?: string) =>
  `${root}/data/${runId}/shard=${String(shard).padStart(5, "0")}/attempt=${String(attempt).padStart(2, "0")}${task ? `-${task}` : ""}`;

/** What a writer leaves under an attempt's prefix before it reports. */
function writeShard(url: string): void {
  const dir = url.replace("file://", "");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "part-00000.parquet"), "rows");
}

describe(`shardledger CLI end to end (built, ${BACKEND})`, { timeout: SCENARIO_TIMEOUT_MS }, () => {
  test("a whole lifecycle: every command prints the contract's JSON", async ({ expect }) => {
    const s = await scenario("life");

    const migrated = await ok(expect, s, "migrate");
    expect(keys(migrated)).toEqual(["version"]);
    expect(migrated.version).toMatch(/^\d{4}_/);

    const dataset = await ok<Record<string, unknown> & { policies: Record<string, unknown> }>(
      expect,
      s,
      "dataset",
      "create",
      "events",
      "--root",
      s.root,
      "--keep-runs",
      "3",
      "--retention",
      "14d",
      "--safety-window",
      "0s",
    );
    expect(dataset).toMatchObject({ datasetId: "events", root: s.root, currentRunId: null });
    expect(dataset.policies).toMatchObject({
      keepRuns: 3,
      retention: "14d",
      failedRetention: "7d",
      retentionMs: 14 * 86_400_000,
      safetyWindow: "0s",
      safetyWindowMs: 0,
      staleAfter: "1h",
    });
    expect(Number.isNaN(Date.parse(String(dataset.registeredAt)))).toBe(false);

    const started = await ok(
      expect,
      s,
      "--actor",
      "e2e-orchestrator",
      "run",
      "start",
      "events",
      "--shards",
      "3",
      "--run-id",
      "r1",
    );
    expect(started).toEqual({ runId: "r1", datasetId: "events", numShards: 3, status: "STARTED" });

    // Shard 0: attempt 0 fails, its retry succeeds. Shard 1: a speculative duplicate of attempt 0
    // (two task attempts); the smaller taskAttemptId wins, compared as 64-bit integers.
    const big = "9223372036854775806";
    const u00 = shardUrl(s.root, "r1", 0, 0);
    const u01 = shardUrl(s.root, "r1", 0, 1);
    const u10big = shardUrl(s.root, "r1", 1, 0, big);
    const u10 = shardUrl(s.root, "r1", 1, 0, "17");
    const u20 = shardUrl(s.root, "r1", 2, 0);
    for (const url of [u00, u01, u10big, u10, u20]) writeShard(url);

    const a00 = await ok(expect, s, "attempt", "start", "r1", "--shard", "0", "--attempt", "0", "--url", u00);
    expect(keys(a00)).toEqual(["attempt", "runId", "shard", "status", "taskAttemptId", "url"]);
    expect(a00).toEqual({
      runId: "r1",
      shard: 0,
      attempt: 0,
      taskAttemptId: null,
      url: u00,
      status: "STARTED",
    });
    const f00 = await ok(
      expect,
      s,
      "attempt",
      "fail",
      "r1",
      "--shard",
      "0",
      "--attempt",
      "0",
      "--error",
      "executor lost",
    );
    expect(f00).toMatchObject({ shard: 0, attempt: 0, status: "FAILED" });
    expect(
      await ok(expect, s, "attempt", "succeed", "r1", "--shard", "0", "--attempt", "1", "--url", u01),
    ).toMatchObject({
      shard: 0,
      attempt: 1,
      status: "SUCCEEDED",
    });
    const spec = await ok(
      expect,
      s,
      "attempt",
      "succeed",
      "r1",
      "--shard",
      "1",
      "--attempt",
      "0",
      "--task-attempt-id",
      big,
      "--url",
      u10big,
    );
    expect(spec).toMatchObject({ taskAttemptId: big, status: "SUCCEEDED" });
    await ok(
      expect,
      s,
      "attempt",
      "succeed",
      "r1",
      "--shard",
      "1",
      "--attempt",
      "0",
      "--task-attempt-id",
      "17",
      "--url",
      u10,
    );
    await ok(expect, s, "attempt", "succeed", "r1", "--shard", "2", "--attempt", "0", "--url", u20);

    const alive = await ok(expect, s, "run", "heartbeat", "r1");
    expect(alive).toMatchObject({
      runId: "r1",
      datasetId: "events",
      status: "STARTED",
      numShards: 3,
      current: false,
    });

    const published = await ok<{ winners: unknown[]; manifestUrl: string }>(expect, s, "publish", "r1");
    expect(keys(published)).toEqual(["manifestUrl", "runId", "status", "winners"]);
    for (const w of published.winners) expect(keys(w)).toEqual(["attempt", "shard", "taskAttemptId", "url"]);
    const winners = [
      { shard: 0, attempt: 1, taskAttemptId: null, url: u01 },
      { shard: 1, attempt: 0, taskAttemptId: "17", url: u10 },
      { shard: 2, attempt: 0, taskAttemptId: null, url: u20 },
    ];
    expect(published).toEqual({
      runId: "r1",
      status: "SUCCEEDED",
      winners,
      manifestUrl: `${s.root}/manifests/r1.json`,
    });
    // Marker last: the manifest exists and _CURRENT points at it.
    const manifestPath = join(s.dir, "root", "manifests", "r1.json");
    expect(existsSync(manifestPath)).toBe(true);
    expect(JSON.parse(readFileSync(manifestPath, "utf8"))).toMatchObject({
      runId: "r1",
      numShards: 3,
      winners,
    });
    const current = JSON.parse(readFileSync(join(s.dir, "root", "_CURRENT"), "utf8"));
    expect(current).toMatchObject({ runId: "r1", manifestUrl: published.manifestUrl });
    // 3: a run publishes at most once.
    await fails(expect, 3, [...s.args, "--json", "publish", "r1"], /already published/);

    // A second run, aborted by its writer.
    await ok(expect, s, "run", "start", "events", "--shards", "1", "--run-id", "r2");
    const failed = await ok(expect, s, "run", "fail", "r2", "--reason", "writer gave up");
    expect(failed).toMatchObject({
      runId: "r2",
      status: "FAILED",
      failureReason: "writer gave up",
      current: false,
    });

    const runs = await ok<Record<string, unknown>[]>(expect, s, "runs", "events");
    for (const run of runs) {
      expect(keys(run)).toEqual(
        expect.arrayContaining(["runId", "status", "numShards", "current", "startedAt", "updatedAt"]),
      );
    }
    // Newest first; only the published run is current.
    expect(runs.map((r) => [r.runId, r.status, r.numShards, r.current])).toEqual([
      ["r2", "FAILED", 1, false],
      ["r1", "SUCCEEDED", 3, true],
    ]);
    expect(String(runs[1]?.startedAt)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

    const shown = await ok<{
      run: Record<string, unknown>;
      attempts: Record<string, unknown>[];
      winners: unknown[];
    }>(expect, s, "show", "r1");
    expect(keys(shown)).toEqual(["attempts", "run", "winners"]);
    expect(shown.run).toMatchObject({ runId: "r1", status: "SUCCEEDED", current: true });
    expect(shown.winners).toEqual(winners);
    expect(shown.attempts).toHaveLength(5);
    for (const a of shown.attempts) {
      expect(keys(a)).toEqual(expect.arrayContaining(["shard", "attempt", "taskAttemptId", "url", "status"]));
    }
    const statusOf = (shard: number, attempt: number, task: string | null) =>
      shown.attempts.find((a) => a.shard === shard && a.attempt === attempt && a.taskAttemptId === task)
        ?.status;
    expect(statusOf(0, 1, null)).toBe("WINNER");
    expect(statusOf(1, 0, "17")).toBe("WINNER");
    expect(statusOf(2, 0, null)).toBe("WINNER");
    // The losers are classified (and possibly already cleaned), never left unclassified.
    expect(["LOSER", "CLEANUP_PENDING", "DELETED"]).toContain(statusOf(0, 0, null));
    expect(["LOSER", "CLEANUP_PENDING", "DELETED"]).toContain(statusOf(1, 0, big));

    const all = await ok<Record<string, unknown>[]>(expect, s, "events");
    for (const e of all) {
      expect(keys(e)).toEqual(
        [
          "data",
          "eventId",
          "globalPosition",
          "metadata",
          "recordedAt",
          "schemaVersion",
          "streamId",
          "streamVersion",
          "type",
        ].sort(),
      );
    }
    const positions = all.map((e) => e.globalPosition as number);
    expect(positions).toEqual([...positions].sort((a, b) => a - b));
    const types = all.map((e) => e.type);
    for (const type of [
      "RunStarted",
      "AttemptStarted",
      "AttemptFailed",
      "AttemptSucceeded",
      "WinnerSelected",
      "ManifestPublished",
      "RunSucceeded",
      "CurrentPointerMoved",
    ]) {
      expect(types).toContain(type);
    }
    expect(all.find((e) => e.type === "RunStarted")?.metadata).toMatchObject({ actor: "e2e-orchestrator" });
    expect(all.find((e) => e.type === "AttemptSucceeded")?.metadata).toMatchObject({
      actor: expect.stringMatching(/^cli/),
    });

    // --stream with --from (a stream version, inclusive) and --limit.
    const stream = await ok<Record<string, unknown>[]>(
      expect,
      s,
      "events",
      "--stream",
      "run-r1",
      "--from",
      "2",
      "--limit",
      "3",
    );
    expect(stream.map((e) => [e.streamId, e.streamVersion])).toEqual([
      ["run-r1", 2],
      ["run-r1", 3],
      ["run-r1", 4],
    ]);
    // The global log with --from (a position, inclusive) and --limit.
    const from = all[3]?.globalPosition as number;
    const page = await ok<Record<string, unknown>[]>(
      expect,
      s,
      "events",
      "--from",
      String(from),
      "--limit",
      "2",
    );
    expect(page).toEqual(all.slice(3, 5));

    const audit = await ok(expect, s, "audit");
    expect(audit).toEqual({ events: all.length, match: true, differences: [] });

    // A live projection that no longer matches the log: audit prints the differences and exits 3.
    await sqlOn(s, (schema) => `UPDATE ${schema}.runs SET num_shards = 99 WHERE run_id = 'r1'`);
    const drifted = await runBuiltCli([...s.args, "--json", "audit"]);
    expect(drifted.code).toBe(3);
    expect(drifted.stderr).toMatch(/differ from a replay of the log \(1 difference\(s\)\)/);
    expect(JSON.parse(drifted.stdout)).toMatchObject({
      match: false,
      differences: [{ table: "runs", column: "num_shards", live: 99, replayed: 3 }],
    });
  });

  test("exit codes: 2 for bad input (nothing written), 3 for refusals; human output", async ({ expect }) => {
    const s = await scenario("rules");
    const db = s.args;
    await ok(expect, s, "migrate");
    await ok(expect, s, "dataset", "create", "ds", "--root", s.root, "--safety-window", "0s");

    // 3: the same dataset id with another root is refused.
    await fails(
      expect,
      3,
      [...db, "dataset", "create", "ds", "--root", `${s.root}-other`],
      /already registered/,
    );

    // Without --run-id, the run id is generated: sortable by start time, unique by a random tail.
    const c1 = (await ok(expect, s, "run", "start", "ds", "--shards", "2")).runId as string;
    expect(c1).toMatch(/^run-\d{8}T\d{6}Z-[0-9a-f]{6}$/);

    // Input errors: none opens the database, each names what was wrong, and nothing is written.
    const before = await ok<unknown[]>(expect, s, "events", "--limit", "1000");
    const usage: [string[], RegExp][] = [
      [["run", "start", "ds", "--shards", "abc"], /--shards: must be a positive integer \(got "abc"\)/],
      [["run", "start", "ds", "--shards", "0"], /--shards: must be a positive integer/],
      [["run", "start", "ds"], /--shards/],
      [["run", "start", "ds", "--shards", "2", "--run-id", "../escape"], /--run-id/],
      [["run", "fail", c1], /--reason/],
      [
        ["dataset", "create", "ds2", "--root", `${s.root}2`, "--retention", "5 parsecs"],
        /--retention: must be a positive duration/,
      ],
      [["dataset", "create", "ds2", "--root", `${s.root}2`, "--keep-runs", "0"], /--keep-runs/],
      [["dataset", "create", "ds2", "--root", "http://example.com/x"], /--root/],
      [["dataset", "create", "ds2"], /--root/],
      [["dataset", "create", "bad/id", "--root", `${s.root}2`], /<id>/],
      [
        ["attempt", "succeed", c1, "--shard", "x", "--attempt", "0"],
        /--shard: must be a non-negative integer/,
      ],
      [["attempt", "succeed", c1, "--shard", "0"], /--attempt/],
      [
        ["attempt", "succeed", c1, "--shard", "0", "--attempt", "0", "--task-attempt-id", "12x"],
        /--task-attempt-id/,
      ],
      [
        ["attempt", "succeed", c1, "--shard", "0", "--attempt", "0", "--error", "boom"],
        /unknown option '--error'/,
      ],
      [["events", "--limit", "0"], /--limit/],
      [["events", "--from", "abc"], /--from/],
      [["runs", "ds", "--bogus"], /unknown option '--bogus'/],
      [["frobnicate"], /unknown command 'frobnicate'/],
      [["show"], /missing required argument 'runId'/],
      [["runs", "ds", "extra"], /too many arguments/],
      [["--schema", "Bad-Name", "runs", "ds"], /--schema/],
      [["--connect-timeout", "soon", "runs", "ds"], /--connect-timeout/],
      [["--database", "mysql://db/x", "runs", "ds"], /--database/],
    ];
    await inBatches(usage, ([args, pattern]) => fails(expect, 2, [...db, "--json", ...args], pattern));
    // Invalid input only the ledger can see, and a safety rail: refused, and nothing written.
    await fails(expect, 2, [...db, "--json", "show", "no-such-run"], /run no-such-run does not exist/);
    await fails(
      expect,
      2,
      [...db, "--json", "run", "start", "nope", "--shards", "2"],
      /dataset nope does not exist/,
    );
    await fails(
      expect,
      2,
      [...db, "--json", "attempt", "succeed", c1, "--shard", "2", "--attempt", "0"],
      /--shard: must be < numShards \(2\)/,
    );
    await fails(
      expect,
      3,
      [
        ...db,
        "--json",
        "attempt",
        "succeed",
        c1,
        "--shard",
        "0",
        "--attempt",
        "0",
        "--url",
        `${s.root}/../elsewhere/x`,
      ],
      /outside the root|not under the dataset root/,
    );
    const after = await ok<unknown[]>(expect, s, "events", "--limit", "1000");
    expect(after).toEqual(before);

    // 3: publish with a missing shard is a coverage error; the run fails and nothing is published.
    await ok(
      expect,
      s,
      "attempt",
      "succeed",
      c1,
      "--shard",
      "0",
      "--attempt",
      "0",
      "--url",
      shardUrl(s.root, c1, 0, 0),
    );
    await fails(expect, 3, [...db, "--json", "publish", c1], /shard\(s\) 1\b.*nothing was published/);
    expect(existsSync(join(s.dir, "root", "manifests", `${c1}.json`))).toBe(false);
    expect(existsSync(join(s.dir, "root", "_CURRENT"))).toBe(false);

    // Human output: aligned key/value lines and tables, no colour off a terminal.
    const human = await runBuiltCli([...db, "show", c1]);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^status\s+FAILED$/m);
    expect(human.stdout).toMatch(/^missing shards\s+1$/m);
    expect(human.stdout).toMatch(/^SHARD\s+ATTEMPT\s+TASK ATTEMPT\s+STATUS\s+URL/m);
    expect(human.stdout).not.toContain("\u001b[");

    // The failed run is protected by the failed-retention floor.
    const floors = await ok<Record<string, unknown>[]>(expect, s, "floors", "ds");
    expect(floors.map((f) => [f.kind, f.runId])).toEqual([["failed_run", c1]]);

    // A database that was never migrated: exit 2, pointing at `migrate`, and nothing created.
    await fails(expect, 2, [...s.unmigratedArgs, "--json", "runs", "ds"], /shardledger migrate/);
    if (BACKEND === "pglite") expect(existsSync(join(s.dir, "never"))).toBe(false);
  });

  test("not found: every command that names a run, dataset or stream exits 2 with one NOT_FOUND body", async ({
    expect,
  }) => {
    const s = await scenario("notfound");
    await ok(expect, s, "migrate");
    await ok(expect, s, "dataset", "create", "ds", "--root", s.root);
    // Every command and filter that names something: [args, kind, the argument that named it].
    const cases: [string[], string, string][] = [
      [["run", "start", "nosuch", "--shards", "1"], "dataset", "<datasetId>"],
      [["run", "heartbeat", "nosuch"], "run", "<runId>"],
      [["run", "fail", "nosuch", "--reason", "gave up"], "run", "<runId>"],
      [["attempt", "start", "nosuch", "--shard", "0", "--attempt", "0"], "run", "<runId>"],
      [["attempt", "succeed", "nosuch", "--shard", "0", "--attempt", "0"], "run", "<runId>"],
      [["attempt", "fail", "nosuch", "--shard", "0", "--attempt", "0"], "run", "<runId>"],
      [["publish", "nosuch"], "run", "<runId>"],
      [["show", "nosuch"], "run", "<runId>"],
      [["runs", "nosuch"], "dataset", "<datasetId>"],
      [["events", "--stream", "nosuch"], "stream", "--stream"],
      [["pending", "--dataset", "nosuch"], "dataset", "--dataset"],
      [["floors", "nosuch"], "dataset", "<datasetId>"],
      [["rollups", "nosuch"], "dataset", "<datasetId>"],
      [["cleanup", "--dataset", "nosuch"], "dataset", "--dataset"],
      [["gc", "nosuch"], "dataset", "<datasetId>"],
      [["gc", "nosuch", "--dry-run"], "dataset", "<datasetId>"],
      [["retry-failed", "nosuch"], "dataset", "<datasetId>"],
      [["retry-failed", "ds", "--run", "nosuch"], "run", "--run"],
      [["maintain", "--dataset", "nosuch", "--every", "1h"], "dataset", "--dataset"],
    ];
    const before = await ok<unknown[]>(expect, s, "events", "--limit", "1000");
    await inBatches(cases, async ([args, kind, field]) => {
      const r = await runBuiltCli([...s.args, "--json", ...args]);
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      // JSON.parse throws on anything but exactly one document.
      const body = JSON.parse(r.stdout) as { error: Record<string, unknown> };
      expect(keys(body), args.join(" ")).toEqual(["error"]);
      expect(body.error, args.join(" ")).toEqual({
        code: "NOT_FOUND",
        message: expect.stringContaining("nosuch"),
        kind,
        id: "nosuch",
        field,
      });
      expect(r.stderr, args.join(" ")).toMatch(/^shardledger: .*nosuch/);
    });
    expect(await ok<unknown[]>(expect, s, "events", "--limit", "1000")).toEqual(before);
  });

  test("every command: a failure with --json is one error body, with the exit code of its code", async ({
    expect,
  }) => {
    const s = await scenario("every");
    await ok(expect, s, "migrate");
    await ok(expect, s, "dataset", "create", "ds", "--root", s.root);
    await ok(expect, s, "run", "start", "ds", "--shards", "2", "--run-id", "c1");
    await ok(expect, s, "run", "start", "ds", "--shards", "1", "--run-id", "s1");
    await ok(expect, s, "run", "start", "ds", "--shards", "1", "--run-id", "f1");
    await ok(expect, s, "run", "fail", "f1", "--reason", "gave up");
    const u0 = shardUrl(s.root, "c1", 0, 0);
    writeShard(u0);
    await ok(expect, s, "attempt", "succeed", "c1", "--shard", "0", "--attempt", "0", "--url", u0);
    // [command, its arguments, exit code, what the error body holds], in order (publish fails c1).
    const cases: [string, string[], number, Record<string, unknown>][] = [
      ["migrate", ["extra"], 2, { code: "USAGE", reason: "excessArguments" }],
      [
        "dataset create",
        ["ds", "--root", `${s.root}-moved`],
        3,
        { code: "ILLEGAL_TRANSITION", message: expect.stringContaining("shardledger dataset update ds") },
      ],
      ["dataset update", ["ds", "--keep-runs", "0"], 2, { code: "VALIDATION", field: "--keep-runs" }],
      ["datasets", ["extra"], 2, { code: "USAGE", reason: "excessArguments" }],
      ["run start", ["ds", "--shards", "0"], 2, { code: "VALIDATION", field: "--shards" }],
      [
        "run heartbeat",
        ["f1"],
        3,
        {
          code: "ILLEGAL_TRANSITION",
          state: "FAILED",
          message: expect.stringContaining("shardledger retry-failed ds --run f1"),
        },
      ],
      ["run fail", ["nosuch", "--reason", "x"], 2, { code: "NOT_FOUND", kind: "run", field: "<runId>" }],
      [
        "attempt start",
        ["c1", "--shard", "1", "--attempt", "0", "--url", `${s.root}/../x`],
        3,
        { code: "SAFETY_RAIL" },
      ],
      [
        "attempt succeed",
        ["c1", "--shard", "0", "--attempt", "0", "--url", shardUrl(s.root, "c1", 0, 1)],
        3,
        { code: "CONTRADICTING_REPORT", recordedUrl: u0 },
      ],
      ["attempt fail", ["c1", "--shard", "9", "--attempt", "0"], 2, { code: "VALIDATION", field: "--shard" }],
      ["rollback", ["ds", "--to", "s1"], 3, { code: "ILLEGAL_TRANSITION", state: "STARTED" }],
      [
        "publish",
        ["c1"],
        3,
        {
          code: "SHARD_COVERAGE",
          missingShards: [1],
          message: expect.stringContaining("shardledger retry-failed ds --run c1"),
        },
      ],
      ["status", ["nosuch"], 2, { code: "NOT_FOUND", kind: "dataset", field: "<datasetId>" }],
      ["runs", ["nosuch"], 2, { code: "NOT_FOUND", kind: "dataset", field: "<datasetId>" }],
      ["show", ["nosuch"], 2, { code: "NOT_FOUND", kind: "run", field: "<runId>" }],
      ["events", ["--stream", "nosuch"], 2, { code: "NOT_FOUND", kind: "stream", field: "--stream" }],
      ["audit", ["extra"], 2, { code: "USAGE", reason: "excessArguments" }],
      ["pending", ["--dataset", "nosuch"], 2, { code: "NOT_FOUND", field: "--dataset" }],
      ["floors", ["nosuch"], 2, { code: "NOT_FOUND", field: "<datasetId>" }],
      ["rollups", ["nosuch"], 2, { code: "NOT_FOUND", field: "<datasetId>" }],
      ["cleanup", ["--dataset", "nosuch"], 2, { code: "NOT_FOUND", field: "--dataset" }],
      ["gc", ["nosuch", "--dry-run"], 2, { code: "NOT_FOUND", field: "<datasetId>" }],
      ["retry-failed", ["ds", "--run", "nosuch"], 2, { code: "NOT_FOUND", kind: "run", field: "--run" }],
      ["archive", ["--dataset", "nosuch"], 2, { code: "NOT_FOUND", field: "--dataset" }],
      ["maintain", ["--every", "0s"], 2, { code: "VALIDATION", field: "--every" }],
      ["serve", ["--listen", "nowhere"], 2, { code: "USAGE", field: "--listen" }],
      ["demo", ["--home"], 2, { code: "USAGE", field: "--home", reason: "optionMissingArgument" }],
    ];
    for (const [command, args, exit, error] of cases) {
      const argv = [...command.split(" "), ...args];
      const r = await runBuiltCli([...s.args, "--json", ...argv]);
      expect({ argv, code: r.code }).toEqual({ argv, code: exit });
      // JSON.parse throws on anything but exactly one document.
      const body = JSON.parse(r.stdout) as { error: Record<string, unknown> };
      expect(keys(body), command).toEqual(["error"]);
      expect(body.error, command).toMatchObject({ message: expect.any(String), ...error });
      expect(EXIT_OF_ERROR[body.error.code as string], command).toBe(exit);
      expect(r.stderr, command).toMatch(/^shardledger: /);
    }

    // The table covers every command the CLI has (so a new command cannot go without one).
    const leaves = (command: Command, path: string[] = []): string[] =>
      command.commands.length === 0
        ? [path.join(" ")]
        : command.commands.filter((c) => c.name() !== "help").flatMap((c) => leaves(c, [...path, c.name()]));
    const program = createProgram(new CliRuntime(resolveIo()));
    expect(cases.map(([command]) => command).sort()).toEqual(leaves(program).sort());
  });

  test("exit 1 for an unexpected error: a database that cannot be reached, without hanging", async ({
    expect,
  }) => {
    // Without hanging: a CLI that waited forever would be killed by the watchdog and fail here.
    await fails(
      expect,
      1,
      ["--database", "postgres://shardledger@127.0.0.1:1/x", "--connect-timeout", "2s", "--json", "events"],
      /cannot reach the database postgres:\/\/shardledger@127\.0\.0\.1:1\/x/,
    );
  });

  test("--help of the root and of every command says what it does, its flags and an example", async ({
    expect,
  }) => {
    const root = await runBuiltCli(["--help"]);
    expect(root.code).toBe(0);
    expect(root.stdout).toContain("Usage: shardledger");
    expect(root.stdout).toMatch(/Examples?:\n\s+\$ shardledger /);
    expect(root.stdout).toMatch(/Exit codes: 0 done; 1 unexpected error; 2 bad usage/);
    // Without a command, or a group without its subcommand, the help goes to stderr as a usage error.
    const bare = await runBuiltCli([]);
    const group = await runBuiltCli(["run"]);
    const helpRun = await runBuiltCli(["help", "run"]);
    const version = await runBuiltCli(["--version"]);
    expect([bare?.code, bare?.stdout, group?.code, group?.stdout]).toEqual([2, "", 2, ""]);
    expect(group?.stderr).toContain("Usage: shardledger run");
    expect([helpRun?.code, helpRun?.stdout]).toEqual([0, expect.stringContaining("Usage: shardledger run")]);
    expect([version?.code, version?.stdout]).toEqual([0, expect.stringMatching(/^\d+\.\d+\.\d+\n$/)]);

    const commandsOf = (help: string): string[] => {
      const section = help.split(/^Commands:\n/m)[1]?.split(/\n\n/)[0] ?? "";
      return section
        .split("\n")
        .map((line) => /^ {2}(\S+)/.exec(line)?.[1])
        .filter((name): name is string => name !== undefined && name !== "help");
    };
    const top = commandsOf(root.stdout);
    expect(top).toEqual(
      expect.arrayContaining([
        "migrate",
        "dataset",
        "run",
        "attempt",
        "publish",
        "runs",
        "show",
        "events",
        "audit",
      ]),
    );

    const visited: string[] = [];
    let queue = top.map((name) => [name]);
    while (queue.length > 0) {
      const results: { path: string[]; r: CliResult }[] = [];
      await inBatches(queue, async (path) =>
        results.push({ path, r: await runBuiltCli([...path, "--help"]) }),
      );
      queue = [];
      for (const { path, r } of results) {
        visited.push(path.join(" "));
        expect({ path, code: r.code }).toEqual({ path, code: 0 });
        expect(r.stdout).toContain(`Usage: shardledger ${path.join(" ")}`);
        expect(r.stdout, `${path.join(" ")} --help`).toMatch(/Examples?:\n\s+\$ /);
        // The description line sits between the usage and the first section.
        expect(r.stdout.split("\n")[2]?.length ?? 0, `${path.join(" ")} describes itself`).toBeGreaterThan(
          10,
        );
        for (const sub of commandsOf(r.stdout)) queue.push([...path, sub]);
      }
    }
    expect(visited).toEqual(
      expect.arrayContaining([
        "dataset create",
        "run start",
        "run heartbeat",
        "run fail",
        "attempt start",
        "attempt succeed",
        "attempt fail",
      ]),
    );
    const start = await runBuiltCli(["run", "start", "--help"]);
    expect(start.stdout).toMatch(/--shards <n>/);
    expect(start.stdout).toMatch(/--run-id <id>/);
    expect(start.stdout).toMatch(/--database <url>/);
  });
});

/**
 * Starts the built CLI; `firstLine` resolves with stdout once it holds a line. A process still
 * running after the hang watchdog is killed, and `firstLine` and `exited` then reject.
 */
function startBuiltCli(args: readonly string[]) {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: "1" };
  delete env.SHARDLEDGER_DATABASE_URL;
  const child = spawn(process.execPath, [cliPath, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  let hung = false;
  const watchdog = setTimeout(() => {
    hung = true;
    child.kill("SIGKILL");
  }, HANG_WATCHDOG_MS);
  const hangError = () =>
    new Error(`shardledger ${args.join(" ")} hung: killed after ${HANG_WATCHDOG_MS / 60_000} min\n${stderr}`);
  child.stdout.setEncoding("utf8");
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  const exited = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    child.on("close", (code) => {
      clearTimeout(watchdog);
      if (hung) reject(hangError());
      else resolve({ code, stdout, stderr });
    });
  });
  const firstLine = new Promise<string>((resolve, reject) => {
    child.stdout.on("data", (d: string) => {
      stdout += d;
      if (stdout.includes("\n")) resolve(stdout);
    });
    exited.then(
      () => reject(new Error(`shardledger ${args.join(" ")} exited before printing a line\n${stderr}`)),
      reject,
    );
  });
  return { child, firstLine, exited };
}

describe(`shardledger maintenance commands end to end (built, ${BACKEND})`, {
  timeout: SCENARIO_TIMEOUT_MS,
}, () => {
  test("cleanup, gc, retry-failed and maintain print the contract's JSON and act on the files", async ({
    expect,
  }) => {
    const s = await scenario("maint");
    await ok(expect, s, "migrate");
    await ok(
      expect,
      s,
      "dataset",
      "create",
      "ds",
      "--root",
      s.root,
      "--keep-runs",
      "1",
      "--safety-window",
      "0s",
    );
    const files = (url: string) => existsSync(url.replace("file://", ""));
    // r1: published; a late attempt after publish is a loser that cleanup must delete.
    await ok(expect, s, "run", "start", "ds", "--shards", "1", "--run-id", "r1");
    writeShard(shardUrl(s.root, "r1", 0, 0));
    await ok(
      expect,
      s,
      "attempt",
      "succeed",
      "r1",
      "--shard",
      "0",
      "--attempt",
      "0",
      "--url",
      shardUrl(s.root, "r1", 0, 0),
    );
    await ok(expect, s, "publish", "r1");
    writeShard(shardUrl(s.root, "r1", 0, 1));
    await ok(
      expect,
      s,
      "attempt",
      "succeed",
      "r1",
      "--shard",
      "0",
      "--attempt",
      "1",
      "--url",
      shardUrl(s.root, "r1", 0, 1),
    );

    const dry = await ok<{ deleted: string[]; failed: unknown[]; planned: string[] }>(
      expect,
      s,
      "cleanup",
      "--dry-run",
    );
    expect(keys(dry)).toEqual([
      "deleted",
      "dryRun",
      "failed",
      "leaseLost",
      "nextDueAt",
      "pending",
      "planned",
      "skipped",
    ]);
    expect(dry).toMatchObject({ pending: 0, nextDueAt: null, dryRun: true });
    expect(dry.planned).toEqual([shardUrl(s.root, "r1", 0, 1)]);
    expect(files(shardUrl(s.root, "r1", 0, 1))).toBe(true);
    const done = await ok<{ deleted: string[]; failed: unknown[] }>(expect, s, "cleanup", "--dataset", "ds");
    expect(done.deleted).toEqual([shardUrl(s.root, "r1", 0, 1)]);
    expect(done.failed).toEqual([]);
    expect(files(shardUrl(s.root, "r1", 0, 1))).toBe(false);
    expect(files(shardUrl(s.root, "r1", 0, 0))).toBe(true);

    // r2 replaces r1; keepRuns 1 lets gc prune r1, never the current r2.
    await ok(expect, s, "run", "start", "ds", "--shards", "1", "--run-id", "r2");
    writeShard(shardUrl(s.root, "r2", 0, 0));
    await ok(
      expect,
      s,
      "attempt",
      "succeed",
      "r2",
      "--shard",
      "0",
      "--attempt",
      "0",
      "--url",
      shardUrl(s.root, "r2", 0, 0),
    );
    await ok(expect, s, "publish", "r2");
    const plan = await ok<{ actions: { kind: string; runId: string; urls: string[] }[]; dryRun: boolean }>(
      expect,
      s,
      "gc",
      "ds",
      "--dry-run",
    );
    expect(keys(plan)).toEqual(["actions", "dryRun", "failed", "protected"]);
    expect(plan.dryRun).toBe(true);
    expect(plan.actions.map((a) => [a.kind, a.runId])).toEqual([["keep_runs", "r1"]]);
    expect(files(shardUrl(s.root, "r1", 0, 0))).toBe(true);
    const gc = await ok<{ actions: { kind: string; runId: string }[]; dryRun: boolean }>(
      expect,
      s,
      "gc",
      "ds",
    );
    expect(gc.dryRun).toBe(false);
    expect(gc.actions.map((a) => [a.kind, a.runId])).toEqual([["keep_runs", "r1"]]);
    expect(files(shardUrl(s.root, "r1", 0, 0))).toBe(false);
    expect(files(shardUrl(s.root, "r2", 0, 0))).toBe(true);
    const runs = await ok<{ runId: string; current: boolean }[]>(expect, s, "runs", "ds");
    expect(runs.map((r) => [r.runId, r.current])).toEqual([["r2", true]]);

    // r3 fails its coverage check; retry-failed reopens it (inside the 7-day default floor).
    await ok(expect, s, "run", "start", "ds", "--shards", "2", "--run-id", "r3");
    await fails(expect, 3, [...s.args, "publish", "r3"], /shard\(s\) 0, 1/);
    expect(await ok(expect, s, "retry-failed", "ds", "--run", "r3")).toEqual({
      matched: 1,
      retried: 1,
      prunedPastRetention: 0,
    });
    expect(await ok(expect, s, "retry-failed", "ds")).toEqual({
      matched: 0,
      retried: 0,
      prunedPastRetention: 0,
    });
    await fails(expect, 2, [...s.args, "maintain", "--every", "0s"], /--every/);

    // maintain: one JSON line per pass; SIGTERM stops it cleanly after the current batch.
    const worker = startBuiltCli([...s.args, "--json", "maintain", "--every", "1h"]);
    const line = JSON.parse((await worker.firstLine).split("\n")[0] as string);
    expect(line).toMatchObject({ datasetId: "ds", skipped: false, error: null });
    worker.child.kill("SIGTERM");
    const exit = await worker.exited;
    expect(exit.code).toBe(0); // a signal is how a worker is meant to stop: a graceful stop is success
    for (const l of exit.stdout.trim().split("\n")) expect(JSON.parse(l).datasetId).toBe("ds");
  });

  test("demo runs to completion on its own ledger and its audit matches", async ({ expect }) => {
    const s = await scenario("demo");
    const summary = await ok<{
      audit: { match: boolean };
      pendingAfterFirstCleanup: { lastErrorCode: string | null; state: string }[];
      drainingCleanup: { deleted: string[] };
      pendingAtEnd: number;
      coverageFailure: unknown;
      runs: unknown[];
    }>(expect, s, "demo", "--home", join(s.dir, "home"));
    expect(summary.audit.match).toBe(true);
    // What the demo says it shows: injected failures outlast the pass's own retries, stay pending
    // with their error, and a later pass deletes them.
    expect(summary.pendingAfterFirstCleanup.length).toBeGreaterThan(0);
    for (const item of summary.pendingAfterFirstCleanup) {
      expect(item).toMatchObject({ lastErrorCode: "SlowDown", state: "failed" });
    }
    expect(summary.drainingCleanup.deleted.length).toBeGreaterThanOrEqual(
      summary.pendingAfterFirstCleanup.length,
    );
    expect(summary.pendingAtEnd).toBe(0);
    expect(summary.coverageFailure).not.toBeNull();
    expect(summary.runs).toHaveLength(4);
  });
});

describe("shardledger output piped into a reader that stops early", { timeout: SCENARIO_TIMEOUT_MS }, () => {
  test("exits quietly when the pipe closes (as with `| head -1`)", async ({ expect }) => {
    const child = spawn(process.execPath, [cliPath, "--help"], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    // The reader is gone before the first write, so every write hits a closed pipe.
    child.stdout.destroy();
    const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
    expect(stderr).not.toContain("EPIPE");
    expect(code).toBe(0);
  });
});
