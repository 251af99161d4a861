import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CommanderError } from "commander";
import { describe, expect, it } from "vitest";
import { openObjectStore } from "../../src/adapters/objectstore/open-object-store.js";
import { cliExitCode, EXIT, InterruptedError } from "../../src/cli/exit-codes.js";
import { acquireDirLock } from "../../src/cli/pglite-dir-lock.js";
import { runCli } from "../../src/cli/program.js";
import { createProgress } from "../../src/cli/progress.js";
import { createStyle } from "../../src/cli/style.js";
import {
  ConcurrencyError,
  errorBody,
  exitCodeFor,
  NotFoundError,
  SafetyRailError,
  ShardCoverageError,
  ShardledgerError,
  ValidationError,
} from "../../src/errors.js";
import { openLedger } from "../../src/ledger/open-ledger.js";
import type { PendingCleanupItem } from "../../src/projections/views.js";
import { capture, scratchRemovedAfterAll } from "../support/cli-capture.js";
import { BACKEND, SERVER_URL } from "../support/database.js";
import { failingStore } from "../support/ledger.js";

/**
 * `runCli` in process, with injected io: what the end-to-end suite cannot observe from outside
 * (signals at an exact moment, the forced exit, progress on a terminal, colour decisions).
 */

const { dirs, schemas } = scratchRemovedAfterAll();

/** Database flags for a fresh ledger on the suite's backend. */
function freshDatabase(): string[] {
  if (BACKEND === "postgres") {
    const schema = `cli_inproc_${randomUUID().slice(0, 8)}`;
    schemas.push(schema);
    return ["--database", SERVER_URL as string, "--schema", schema];
  }
  const dir = mkdtempSync(join(tmpdir(), "shardledger-cli-inproc-"));
  dirs.push(dir);
  return ["--database", `pglite:${dir}/db`];
}

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setImmediate(resolve));
}

describe("runCli with injected io", () => {
  it("writes usage errors to the injected stderr, nothing to stdout without --json, and returns 2", async () => {
    const out = capture();
    const err = capture();
    const code = await runCli(["run", "start", "ds", "--shards", "-1x"], {
      stdout: out.stream,
      stderr: err.stream,
      env: { SHARDLEDGER_DATABASE_URL: "pglite:/nonexistent/never-opened" },
    });
    expect(code).toBe(EXIT.USAGE);
    expect(out.text()).toBe("");
    expect(err.text()).toBe('shardledger: --shards: must be a positive integer (got "-1x")\n');
    expect(existsSync("/nonexistent/never-opened")).toBe(false);
  });

  it("reads the database from SHARDLEDGER_DATABASE_URL and validates it before opening anything", async () => {
    const err = capture();
    const code = await runCli(["runs", "ds"], {
      stdout: capture().stream,
      stderr: err.stream,
      env: { SHARDLEDGER_DATABASE_URL: "sqlite:///tmp/x.db" },
    });
    expect(code).toBe(EXIT.USAGE);
    expect(err.text()).toMatch(/^shardledger: SHARDLEDGER_DATABASE_URL: must be a postgres:\/\/ URL/);
  });

  it("on SIGINT stops after the current step, closes the ledger and returns 130; the database opens again", async () => {
    const db = freshDatabase();
    expect(await runCli([...db, "migrate"], { stdout: capture().stream })).toBe(EXIT.OK);

    const signals = new EventEmitter();
    const out = capture();
    const err = capture();
    const running = runCli([...db, "--json", "events"], {
      stdout: out.stream,
      stderr: err.stream,
      signals: signals as never,
    });
    // The handler is installed when the command starts; the ledger is still opening then.
    await until(() => signals.listenerCount("SIGINT") > 0);
    signals.emit("SIGINT", "SIGINT");
    expect(await running).toBe(EXIT.SIGINT);
    // --json: the interruption is the one document on stdout.
    expect(JSON.parse(out.text())).toEqual({
      error: {
        code: "INTERRUPTED",
        message: "interrupted by SIGINT; the ledger was closed cleanly",
        signal: "SIGINT",
      },
    });
    expect(err.text()).toMatch(/SIGINT received; stopping after the current step/);
    expect(err.text()).toMatch(/interrupted by SIGINT; the ledger was closed cleanly/);
    expect(signals.listenerCount("SIGINT")).toBe(0);
    if (BACKEND === "pglite") expect(existsSync(`${db[1]?.slice("pglite:".length)}.lock`)).toBe(false);

    // Closed cleanly: the same database opens and answers.
    const again = capture();
    expect(await runCli([...db, "--json", "events"], { stdout: again.stream })).toBe(EXIT.OK);
    expect(JSON.parse(again.text())).toEqual([]);
  });

  it("a second signal exits at once with 143 for SIGTERM", async () => {
    const db = freshDatabase();
    expect(await runCli([...db, "migrate"], { stdout: capture().stream })).toBe(EXIT.OK);
    const signals = new EventEmitter();
    const exits: number[] = [];
    const running = runCli([...db, "events"], {
      stdout: capture().stream,
      stderr: capture().stream,
      signals: signals as never,
      exit: (code) => exits.push(code),
    });
    await until(() => signals.listenerCount("SIGTERM") > 0);
    signals.emit("SIGTERM", "SIGTERM");
    signals.emit("SIGTERM", "SIGTERM");
    await until(() => exits.length > 0);
    expect(exits).toEqual([EXIT.SIGTERM]);
    await running;
  });
});

describe("exit codes", () => {
  it("maps every kind of failure to the contract's code", () => {
    expect(cliExitCode(new CommanderError(0, "commander.helpDisplayed", "(outputHelp)"))).toBe(0);
    expect(cliExitCode(new CommanderError(0, "commander.help", "(outputHelp)"))).toBe(0);
    expect(cliExitCode(new CommanderError(1, "commander.help", "(outputHelp)"))).toBe(2);
    expect(cliExitCode(new CommanderError(1, "commander.unknownOption", "unknown option"))).toBe(2);
    expect(cliExitCode(new CommanderError(1, "commander.missingArgument", "missing"))).toBe(2);
    expect(cliExitCode(new ValidationError("--shards", "must be a positive integer"))).toBe(2);
    expect(cliExitCode(new NotFoundError("run", "r1"))).toBe(2);
    expect(cliExitCode(new ShardCoverageError("r1", [1]))).toBe(3);
    expect(cliExitCode(new SafetyRailError("outside the root"))).toBe(3);
    expect(cliExitCode(new ConcurrencyError("run-r1", 3, 4))).toBe(3);
    expect(cliExitCode(new ShardledgerError("LOCKED", "busy"))).toBe(3);
    expect(cliExitCode(new ShardledgerError("INTERNAL", "cannot reach the database"))).toBe(1);
    expect(cliExitCode(new TypeError("a bug"))).toBe(1);
    expect(cliExitCode(new InterruptedError("SIGINT"))).toBe(130);
    expect(cliExitCode(new InterruptedError("SIGTERM"))).toBe(143);
  });
});

describe("progress and colour", () => {
  it("draws a bar only on a terminal and never in --json", () => {
    const pipe = capture({ isTTY: false });
    const quiet = createProgress(pipe.stream, true, { label: "audit", unit: "events" });
    quiet.update(10);
    quiet.stop();
    expect(quiet.visible).toBe(false);
    expect(pipe.text()).toBe("");

    const tty = capture({ isTTY: true });
    const json = createProgress(tty.stream, false, { label: "audit" });
    json.update(10);
    json.stop();
    expect(json.visible).toBe(false);
    expect(tty.text()).toBe("");

    const shown = createProgress(tty.stream, true, { label: "gc", total: 4, unit: "actions" });
    shown.update(2);
    shown.increment();
    shown.stop();
    shown.stop();
    expect(shown.visible).toBe(true);
    expect(tty.text()).toContain("gc [");
  });

  it("colours only a terminal without NO_COLOR or --no-color", () => {
    const tty = { isTTY: true, write: () => true };
    expect(createStyle({ stdout: tty, env: {} }, { color: true }).green("ok")).toContain("\u001b[");
    expect(createStyle({ stdout: tty, env: { NO_COLOR: "1" } }, { color: true }).green("ok")).toBe("ok");
    expect(createStyle({ stdout: tty, env: {} }, { color: false }).green("ok")).toBe("ok");
    expect(createStyle({ stdout: { write: () => true }, env: {} }, { color: true }).green("ok")).toBe("ok");
  });
});

describe("PGlite directory lock", () => {
  it("makes a second opener wait, then fail with LOCKED; a dead holder's lock is taken over", async () => {
    const dir = mkdtempSync(join(tmpdir(), "shardledger-lock-"));
    dirs.push(dir);
    const first = await acquireDirLock(join(dir, "db"), 1_000);
    const started = Date.now();
    await expect(acquireDirLock(join(dir, "db"), 300)).rejects.toMatchObject({ code: "LOCKED" });
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    first.release();
    expect(existsSync(join(dir, "db.lock"))).toBe(false);

    // A pid that cannot be running: the lock of a process that died.
    writeFileSync(join(dir, "db.lock"), "2147483646\n");
    const taken = await acquireDirLock(join(dir, "db"), 1_000);
    taken.release();
    expect(existsSync(join(dir, "db.lock"))).toBe(false);
  });
});

/** Runs one command in process on `db` and returns its exit code and output. */
async function cli(db: string[], ...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out = capture();
  const err = capture();
  const code = await runCli([...db, ...args], { stdout: out.stream, stderr: err.stream });
  return { code, out: out.text(), err: err.text() };
}

describe("rule refusals exit 3", () => {
  it("dataset create refuses a root inside another dataset's, naming it", async () => {
    const db = freshDatabase();
    const root = `file://${mkdtempSync(join(tmpdir(), "shardledger-roots-"))}`;
    dirs.push(root.slice("file://".length));
    expect((await cli(db, "migrate")).code).toBe(EXIT.OK);
    expect(await cli(db, "--json", "dataset", "create", "a", "--root", root)).toMatchObject({
      code: EXIT.OK,
      err: "",
    });
    const nested = await cli(db, "--json", "dataset", "create", "b", "--root", `${root}/data`);
    expect(nested.code).toBe(EXIT.REFUSED);
    expect(nested.err).toMatch(/dataset a\b/);
    expect(errorOf(nested.out)).toMatchObject({
      code: "SAFETY_RAIL",
      otherDatasetId: "a",
      relation: "inside",
    });
  });

  it("run start of a published run's id is refused, naming its status; a STARTED run's retry is not", async () => {
    const db = freshDatabase();
    const dir = mkdtempSync(join(tmpdir(), "shardledger-rerun-"));
    dirs.push(dir);
    const root = `file://${dir}`;
    expect((await cli(db, "migrate")).code).toBe(EXIT.OK);
    expect((await cli(db, "dataset", "create", "ds", "--root", root)).code).toBe(EXIT.OK);
    const start = ["--json", "run", "start", "ds", "--shards", "1", "--run-id", "r1"];
    const first = await cli(db, ...start);
    expect(first.code).toBe(EXIT.OK);
    const again = await cli(db, ...start);
    expect(again).toMatchObject({ code: EXIT.OK, err: "" });
    expect(JSON.parse(again.out)).toEqual({ runId: "r1", datasetId: "ds", numShards: 1, status: "STARTED" });
    const url = `${root}/data/r1/shard=00000/attempt=00`;
    expect(
      (await cli(db, "attempt", "succeed", "r1", "--shard", "0", "--attempt", "0", "--url", url)).code,
    ).toBe(EXIT.OK);
    expect((await cli(db, "publish", "r1")).code).toBe(EXIT.OK);
    const rerun = await cli(db, ...start);
    expect(rerun.code).toBe(EXIT.REFUSED);
    expect(rerun.err).toMatch(/r1.*SUCCEEDED/);
    expect(errorOf(rerun.out)).toMatchObject({ code: "ILLEGAL_TRANSITION", state: "SUCCEEDED", runId: "r1" });
  });

  it("attempt succeed of a recorded attempt at another url is refused as contradicting", async () => {
    const db = freshDatabase();
    const dir = mkdtempSync(join(tmpdir(), "shardledger-contradict-"));
    dirs.push(dir);
    const root = `file://${dir}`;
    expect((await cli(db, "migrate")).code).toBe(EXIT.OK);
    expect((await cli(db, "dataset", "create", "ds", "--root", root)).code).toBe(EXIT.OK);
    expect((await cli(db, "run", "start", "ds", "--shards", "1", "--run-id", "r1")).code).toBe(EXIT.OK);
    const report = (url: string) =>
      cli(db, "--json", "attempt", "succeed", "r1", "--shard", "0", "--attempt", "0", "--url", url);
    const first = `${root}/data/r1/shard=00000/attempt=00`;
    const second = `${root}/data/r1/shard=00000/attempt=00-retry`;
    expect((await report(first)).code).toBe(EXIT.OK);
    const contradicting = await report(second);
    expect(contradicting.code).toBe(EXIT.REFUSED);
    expect(contradicting.err).toContain(second);
    expect(errorOf(contradicting.out)).toMatchObject({ code: "CONTRADICTING_REPORT", reportedUrl: second });
    expect(JSON.parse((await report(first)).out)).toMatchObject({ url: first, status: "SUCCEEDED" });
  });
});

describe("cleanup exit 4", () => {
  /**
   * A migrated ledger where a library ledger whose store refuses deletes left one loser pending:
   * waiting for its next retry (an hour away), or exhausted when `pendingMaxTries` is 1.
   */
  async function pendingLoser(pendingMaxTries: number) {
    const db = freshDatabase();
    const dir = mkdtempSync(join(tmpdir(), "shardledger-pending-"));
    dirs.push(dir);
    const root = `file://${dir}`;
    expect((await cli(db, "migrate")).code).toBe(EXIT.OK);
    const ledger = await openLedger({
      database: db[1] as string,
      ...(db[3] !== undefined ? { schema: db[3] } : {}),
      cleanupAfterPublish: false,
      sleep: async () => {},
      // The longest backoff, an hour: the item is certainly not due when the CLI runs.
      random: () => 1,
      maintenance: {
        deletion: { maxTries: 1, baseDelayMs: 1, maxDelayMs: 1 },
        pending: { maxTries: pendingMaxTries, baseDelayMs: 3_600_000, maxDelayMs: 3_600_000 },
      },
      objectStore: (r) =>
        failingStore(openObjectStore(r), (op) => {
          if (op === "deleteMany") throw new Error("connection reset");
          return false;
        }),
    });
    let item: PendingCleanupItem | undefined;
    try {
      await ledger.createDataset({ datasetId: "ds", root, safetyWindow: "0s" });
      await ledger.startRun({ datasetId: "ds", numShards: 1, runId: "r1" });
      for (const attempt of [0, 1]) {
        const rel = `data/r1/shard=00000/attempt=0${attempt}`;
        mkdirSync(join(dir, rel), { recursive: true });
        writeFileSync(join(dir, rel, "part-0"), "x");
        await ledger.attemptSucceeded({ runId: "r1", shard: 0, attempt, url: `${root}/${rel}` });
      }
      await ledger.publish("r1");
      expect((await ledger.cleanup({ datasetId: "ds" })).failed).toHaveLength(1);
      item = (await ledger.pendingCleanup({ datasetId: "ds" }))[0];
    } finally {
      await ledger.close();
    }
    return { db, dir, root, item: item as PendingCleanupItem };
  }

  it("exits 4 while the pending set is not empty, due or not; --retry-now tries the waiting items at once", async () => {
    const { db, dir, root, item } = await pendingLoser(5);
    const due = item.nextRetryAt?.toISOString();
    const loser = `${root}/data/r1/shard=00000/attempt=01`;

    const waiting = await cli(db, "--json", "cleanup", "--dataset", "ds");
    expect(waiting.code).toBe(EXIT.PENDING);
    expect(waiting.err).toMatch(/1 item\(s\) pending/);
    expect(waiting.err).toContain("--retry-now");
    expect(due).toBeDefined();
    expect(JSON.parse(waiting.out)).toMatchObject({ deleted: [], failed: [], pending: 1, nextDueAt: due });

    const forced = await cli(db, "--json", "cleanup", "--retry-now");
    expect(forced).toMatchObject({ code: EXIT.OK, err: "" });
    expect(JSON.parse(forced.out)).toMatchObject({ deleted: [loser], pending: 0, nextDueAt: null });
    expect(existsSync(join(dir, "data/r1/shard=00000/attempt=01"))).toBe(false);
  });

  it("with only exhausted items, says that retry-failed requeues them (--retry-now does not)", async () => {
    const { db, dir, item } = await pendingLoser(1);
    expect(item.state).toBe("exhausted");

    const stuck = await cli(db, "--json", "cleanup", "--dataset", "ds");
    expect(stuck.code).toBe(EXIT.PENDING);
    expect(JSON.parse(stuck.out)).toMatchObject({ pending: 1, nextDueAt: null });
    expect(stuck.err).toMatch(/1 item\(s\) pending/);
    expect(stuck.err).toContain("shardledger retry-failed ds");
    expect(stuck.err).not.toContain("--retry-now");

    // As it says: --retry-now leaves it, retry-failed requeues it, and the next pass deletes it.
    expect((await cli(db, "--json", "cleanup", "--retry-now")).code).toBe(EXIT.PENDING);
    expect((await cli(db, "--json", "retry-failed", "ds")).code).toBe(EXIT.OK);
    expect((await cli(db, "--json", "cleanup", "--dataset", "ds")).code).toBe(EXIT.OK);
    expect(existsSync(join(dir, "data/r1/shard=00000/attempt=01"))).toBe(false);
  });
});

/** The one JSON document a `--json` failure prints on stdout. */
function errorOf(out: string): Record<string, unknown> {
  const doc = JSON.parse(out) as { error?: Record<string, unknown> };
  expect(Object.keys(doc)).toEqual(["error"]);
  return doc.error as Record<string, unknown>;
}

/** A migrated ledger with dataset `ds` on a filesystem root; returns the db flags and the root. */
async function ledgerWithDataset(label: string): Promise<{ db: string[]; root: string }> {
  const db = freshDatabase();
  const dir = mkdtempSync(join(tmpdir(), `shardledger-${label}-`));
  dirs.push(dir);
  const root = `file://${dir}`;
  expect((await cli(db, "migrate")).code).toBe(EXIT.OK);
  expect((await cli(db, "dataset", "create", "ds", "--root", root, "--safety-window", "0s")).code).toBe(
    EXIT.OK,
  );
  return { db, root };
}

describe("--json failures print exactly one JSON error document on stdout", () => {
  it("a coverage failure: exit 3, the missing shards, and the command that reopens the run", async () => {
    const { db, root } = await ledgerWithDataset("coverage");
    expect((await cli(db, "run", "start", "ds", "--shards", "3", "--run-id", "r1")).code).toBe(EXIT.OK);
    const url = `${root}/data/r1/shard=00000/attempt=00`;
    expect(
      (await cli(db, "attempt", "succeed", "r1", "--shard", "0", "--attempt", "0", "--url", url)).code,
    ).toBe(EXIT.OK);
    const refused = await cli(db, "publish", "r1", "--json");
    expect(refused.code).toBe(EXIT.REFUSED);
    const error = errorOf(refused.out);
    expect(error).toMatchObject({
      code: "SHARD_COVERAGE",
      runId: "r1",
      datasetId: "ds",
      missingShards: [1, 2],
    });
    expect(error.message).toMatch(/shard\(s\) 1, 2/);
    expect(error.message).toContain("shardledger retry-failed ds --run r1");
    // The human message still goes to stderr.
    expect(refused.err).toContain("shardledger retry-failed ds --run r1");

    // A heartbeat of the FAILED run is refused with its status and the command that reopens it.
    const late = await cli(db, "--json", "run", "heartbeat", "r1");
    expect(late.code).toBe(EXIT.REFUSED);
    const illegal = errorOf(late.out);
    expect(illegal).toMatchObject({ code: "ILLEGAL_TRANSITION", state: "FAILED", runId: "r1" });
    expect(illegal.message).toContain("shardledger retry-failed ds --run r1");
    const again = errorOf((await cli(db, "--json", "publish", "r1")).out);
    expect(again).toMatchObject({ code: "ILLEGAL_TRANSITION", state: "FAILED" });
    expect(again.message).toContain("shardledger retry-failed ds --run r1");

    // Following the advice works: reopen, write the missing shards, publish.
    expect(JSON.parse((await cli(db, "--json", "retry-failed", "ds", "--run", "r1")).out)).toMatchObject({
      retried: 1,
    });
    for (const shard of [1, 2]) {
      const u = `${root}/data/r1/shard=0000${shard}/attempt=00`;
      expect(
        (await cli(db, "attempt", "succeed", "r1", "--shard", String(shard), "--attempt", "0", "--url", u))
          .code,
      ).toBe(EXIT.OK);
    }
    expect((await cli(db, "publish", "r1")).code).toBe(EXIT.OK);
  });

  it("usage and input errors: USAGE or VALIDATION with the field, exit 2, nothing opened", async () => {
    const env = { SHARDLEDGER_DATABASE_URL: "pglite:/nonexistent/never-opened" };
    const cases: [string[], string, string | undefined, RegExp][] = [
      [["runs", "ds", "--bogus"], "USAGE", "--bogus", /unknown option '--bogus'/],
      [["show"], "USAGE", "<runId>", /missing required argument 'runId'/],
      [["run", "start", "ds"], "USAGE", "--shards", /required option '--shards <n>' not specified/],
      [["runs", "ds", "extra"], "USAGE", undefined, /too many arguments/],
      [["frobnicate"], "USAGE", undefined, /unknown command 'frobnicate'/],
      [["run"], "USAGE", undefined, /a subcommand/],
      [
        ["run", "start", "ds", "--shards", "x"],
        "VALIDATION",
        "--shards",
        /--shards: must be a positive integer/,
      ],
      [["--database", "mysql://db/x", "runs", "ds"], "VALIDATION", "--database", /postgres:\/\//],
      [["--connect-timeout", "soon", "runs", "ds"], "VALIDATION", "--connect-timeout", /duration/],
    ];
    for (const [args, code, field, message] of cases) {
      const out = capture();
      const err = capture();
      const exit = await runCli(["--json", ...args], { stdout: out.stream, stderr: err.stream, env });
      expect({ args, exit }).toEqual({ args, exit: EXIT.USAGE });
      const error = errorOf(out.text());
      expect({ args, code: error.code, field: error.field }).toEqual({ args, code, field });
      expect(error.message).toMatch(message);
      expect(err.text().length, "the human message stays on stderr").toBeGreaterThan(0);
    }
    expect(existsSync("/nonexistent/never-opened")).toBe(false);
    // --json after the command, and help, which is no failure.
    const out = capture();
    expect(
      await runCli(["runs", "--json", "ds", "--bogus"], {
        stdout: out.stream,
        stderr: capture().stream,
        env,
      }),
    ).toBe(EXIT.USAGE);
    expect(errorOf(out.text())).toMatchObject({ code: "USAGE", field: "--bogus" });
  });

  it("not found: exit 2, NOT_FOUND with the kind, the id and the argument that named it", async () => {
    const { db } = await ledgerWithDataset("notfound");
    const cases: [string[], string, string][] = [
      [["run", "heartbeat", "nosuch"], "run", "<runId>"],
      [["attempt", "start", "nosuch", "--shard", "0", "--attempt", "0"], "run", "<runId>"],
      [["retry-failed", "ds", "--run", "nosuch"], "run", "--run"],
      [["events", "--stream", "nosuch"], "stream", "--stream"],
      [["gc", "nosuch"], "dataset", "<datasetId>"],
    ];
    for (const [args, kind, field] of cases) {
      const r = await cli(db, "--json", ...args);
      expect({ args, code: r.code }).toEqual({ args, code: EXIT.USAGE });
      expect(errorOf(r.out)).toMatchObject({ code: "NOT_FOUND", kind, id: "nosuch", field });
    }
  });

  it("refusals carry what a program needs: SAFETY_RAIL url and root, CONTRADICTING_REPORT both urls", async () => {
    const { db, root } = await ledgerWithDataset("refusals");
    expect((await cli(db, "run", "start", "ds", "--shards", "1", "--run-id", "r1")).code).toBe(EXIT.OK);
    // Shard 0, attempt 0 of r1 reports success at `url` (with `--json` when asked).
    const succeed = (url: string, ...global: string[]) =>
      cli(db, ...global, "attempt", "succeed", "r1", "--shard", "0", "--attempt", "0", "--url", url);
    const outside = `${root}/../elsewhere/x`;
    const rail = await succeed(outside, "--json");
    expect(rail.code).toBe(EXIT.REFUSED);
    expect(errorOf(rail.out)).toMatchObject({
      code: "SAFETY_RAIL",
      url: outside,
      root,
      rule: expect.any(String),
    });

    const first = `${root}/data/r1/shard=00000/attempt=00`;
    const second = `${root}/data/r1/shard=00000/attempt=00-b`;
    expect((await succeed(first)).code).toBe(EXIT.OK);
    const contradicting = await succeed(second, "--json");
    expect(contradicting.code).toBe(EXIT.REFUSED);
    expect(errorOf(contradicting.out)).toMatchObject({
      code: "CONTRADICTING_REPORT",
      recordedUrl: first,
      reportedUrl: second,
    });
  });

  it("LOCKED names the lock and its holder and says to try later", async () => {
    const dir = mkdtempSync(join(tmpdir(), "shardledger-locked-"));
    dirs.push(dir);
    const db = ["--database", `pglite:${dir}/db`];
    expect((await cli(db, "migrate")).code).toBe(EXIT.OK);
    const held = await acquireDirLock(join(dir, "db"), 1_000);
    try {
      const r = await cli(db, "--json", "--connect-timeout", "1s", "events");
      expect(r.code).toBe(EXIT.REFUSED);
      const error = errorOf(r.out);
      expect(error).toMatchObject({ code: "LOCKED", lock: join(dir, "db.lock"), pid: process.pid });
      expect(error.message).toMatch(/wait for it|try again/);
    } finally {
      held.release();
    }
  });

  it("an unexpected error is INTERNAL with exit 1", async () => {
    const r = await cli(
      ["--database", "postgres://shardledger@127.0.0.1:1/x", "--connect-timeout", "2s"],
      "--json",
      "events",
    );
    expect(r.code).toBe(EXIT.UNEXPECTED);
    expect(errorOf(r.out)).toMatchObject({
      code: "INTERNAL",
      message: expect.stringMatching(/cannot reach the database/),
    });
  });

  it("errorBody: one shape for every error, the details flattened, a bug is INTERNAL", () => {
    expect(errorBody(new ConcurrencyError("run-r1", 3, 4))).toEqual({
      error: {
        code: "CONCURRENCY",
        message: "stream run-r1: expected version 3, but it is at 4; nothing was written",
        streamId: "run-r1",
        expected: 3,
        actual: 4,
      },
    });
    expect(errorBody(new ValidationError("--shards", "must be ≥ 1"))).toEqual({
      error: { code: "VALIDATION", message: "--shards: must be ≥ 1", field: "--shards" },
    });
    expect(errorBody(new TypeError("x is undefined"))).toEqual({
      error: { code: "INTERNAL", message: "unexpected error: x is undefined" },
    });
    expect(errorBody("thrown string")).toEqual({
      error: { code: "INTERNAL", message: "unexpected error: thrown string" },
    });
    // Details never overwrite the code or the message.
    expect(
      errorBody(new ShardledgerError("LOCKED", "busy", { details: { code: "x", message: "y", lock: "l" } })),
    ).toEqual({
      error: { code: "LOCKED", message: "busy", lock: "l" },
    });
  });
});

describe("names", () => {
  it("events --stream takes a run id or dataset:<id>, not only run-<runId>", async () => {
    const { db } = await ledgerWithDataset("streams");
    expect((await cli(db, "run", "start", "ds", "--shards", "1", "--run-id", "r1")).code).toBe(EXIT.OK);
    const byStream = await cli(db, "--json", "events", "--stream", "run-r1");
    const byRun = await cli(db, "--json", "events", "--stream", "r1");
    expect(byRun).toMatchObject({ code: EXIT.OK, err: "" });
    expect(JSON.parse(byRun.out)).toEqual(JSON.parse(byStream.out));
    expect(JSON.parse(byRun.out).map((e: { type: string }) => e.type)).toEqual(["RunStarted"]);
    const dataset = await cli(db, "--json", "events", "--stream", "dataset:ds");
    expect(JSON.parse(dataset.out).map((e: { streamId: string }) => e.streamId)).toEqual(["dataset-ds"]);
  });

  it("gc and cleanup --dry-run --json say dryRun: true (and false when they acted)", async () => {
    const { db } = await ledgerWithDataset("dryrun");
    for (const args of [
      ["gc", "ds", "--dry-run"],
      ["cleanup", "--dry-run"],
      ["cleanup", "--dataset", "ds", "--dry-run"],
    ]) {
      const r = await cli(db, "--json", ...args);
      expect({ args, code: r.code }).toEqual({ args, code: EXIT.OK });
      expect(JSON.parse(r.out)).toMatchObject({ dryRun: true });
    }
    expect(JSON.parse((await cli(db, "--json", "gc", "ds")).out)).toMatchObject({ dryRun: false });
    expect(JSON.parse((await cli(db, "--json", "cleanup")).out)).toMatchObject({ dryRun: false });
  });

  it("gc --concurrency is validated before anything runs, and taken when valid", async () => {
    const { db } = await ledgerWithDataset("gcconc");
    for (const bad of ["0", "257", "x"]) {
      const r = await cli(db, "--json", "gc", "ds", "--concurrency", bad);
      expect({ bad, code: r.code }).toEqual({ bad, code: EXIT.USAGE });
      expect(JSON.parse(r.out).error).toMatchObject({ code: "VALIDATION", field: "--concurrency" });
    }
    const ok = await cli(db, "--json", "gc", "ds", "--concurrency", "4");
    expect(ok.code).toBe(EXIT.OK);
    expect(JSON.parse(ok.out)).toMatchObject({ dryRun: false });
  });
});

/** A fresh database with dataset `ds` on a temporary root; returns the flags, the root and its dir. */
async function datasetFixture(label: string, ...policy: string[]) {
  const db = freshDatabase();
  const dir = mkdtempSync(join(tmpdir(), `shardledger-${label}-`));
  dirs.push(dir);
  const root = `file://${dir}`;
  expect((await cli(db, "migrate")).code).toBe(EXIT.OK);
  expect((await cli(db, "dataset", "create", "ds", "--root", root, ...policy)).code).toBe(EXIT.OK);
  return { db, dir, root };
}

/** Writes each shard's data as a writer would, reports it and publishes the run, all through the CLI. */
async function publishThroughCli(db: string[], dir: string, root: string, runId: string, shards = 2) {
  expect((await cli(db, "run", "start", "ds", "--shards", String(shards), "--run-id", runId)).code).toBe(
    EXIT.OK,
  );
  for (let shard = 0; shard < shards; shard++) {
    const rel = `data/${runId}/shard=${String(shard).padStart(5, "0")}/attempt=00`;
    mkdirSync(join(dir, rel), { recursive: true });
    writeFileSync(join(dir, rel, "part-0"), "x");
    const report = [
      "attempt",
      "succeed",
      runId,
      "--shard",
      String(shard),
      "--attempt",
      "0",
      "--url",
      `${root}/${rel}`,
    ];
    expect((await cli(db, ...report)).code).toBe(EXIT.OK);
  }
  expect((await cli(db, "publish", runId)).code).toBe(EXIT.OK);
}

const eventCount = async (db: string[]) =>
  (JSON.parse((await cli(db, "--json", "events", "--limit", "1000")).out) as unknown[]).length;

describe("dataset update", () => {
  it("changes policies, prints the dataset, and writes nothing for bad input (exit 2 naming the flag)", async () => {
    const { db } = await datasetFixture("update", "--keep-runs", "3");
    const ok = await cli(db, "--json", "dataset", "update", "ds", "--keep-runs", "1", "--retention", "14d");
    expect(ok).toMatchObject({ code: EXIT.OK, err: "" });
    expect(JSON.parse(ok.out)).toMatchObject({
      datasetId: "ds",
      policies: { keepRuns: 1, retention: "14d", retentionMs: 14 * 86_400_000, safetyWindow: "1h" },
    });
    const human = await cli(db, "dataset", "update", "ds", "--safety-window", "30m");
    expect(human.code).toBe(EXIT.OK);
    expect(human.out).toMatch(/safety window\s+30m/);
    expect(human.out).toMatch(/safety window held\s+1h until /);

    const events = await eventCount(db);
    for (const [flags, flag] of [
      [["--keep-runs", "0"], "--keep-runs"],
      [["--keep-runs", "two"], "--keep-runs"],
      [["--retention", "0s"], "--retention"],
      [["--failed-retention", "-1d"], "--failed-retention"],
      [["--stale-after", "soon"], "--stale-after"],
      [["--safety-window", "-1s"], "--safety-window"],
    ] as const) {
      const bad = await cli(db, "--json", "dataset", "update", "ds", ...flags);
      expect(bad).toMatchObject({ code: EXIT.USAGE });
      // --json: the one JSON error body on stdout.
      expect(Object.keys(JSON.parse(bad.out))).toEqual(["error"]);
      expect(bad.err).toContain(`${flag}: `);
    }
    const nothing = await cli(db, "dataset", "update", "ds");
    expect(nothing.code).toBe(EXIT.USAGE);
    expect(nothing.err).toMatch(
      /--keep-runs, --retention, --failed-retention, --stale-after, --safety-window/,
    );
    const root = await cli(db, "dataset", "update", "ds", "--root", "file:///elsewhere");
    expect(root.code).toBe(EXIT.USAGE);
    expect(await eventCount(db)).toBe(events);

    const badId = await cli(db, "dataset", "update", "a/b", "--keep-runs", "2");
    expect(badId).toMatchObject({ code: EXIT.USAGE, out: "" });
    expect(badId.err).toMatch(/<id>: /);
    const missing = await cli(db, "dataset", "update", "nope", "--keep-runs", "2");
    expect(missing).toMatchObject({ code: exitCodeFor(new NotFoundError("dataset", "nope")), out: "" });
    expect(missing.err).toMatch(/dataset nope does not exist/);
  });
});

describe("rollback", () => {
  it("moves _CURRENT back and prints { datasetId, runId, previousRunId, manifestUrl }; refusals exit 3 and change nothing", async () => {
    const { db, dir, root } = await datasetFixture("rollback");
    await publishThroughCli(db, dir, root, "r1");
    await publishThroughCli(db, dir, root, "r2");

    const current = await cli(db, "--json", "rollback", "ds", "--to", "r2");
    expect(current).toMatchObject({ code: EXIT.REFUSED });
    // --json: the one JSON error body on stdout.
    expect(Object.keys(JSON.parse(current.out))).toEqual(["error"]);
    expect(current.err).toMatch(/r2 is already the current run/);

    await cli(db, "run", "start", "ds", "--shards", "1", "--run-id", "f1");
    await cli(db, "run", "fail", "f1", "--reason", "gave up");
    const failed = await cli(db, "--json", "rollback", "ds", "--to", "f1");
    expect(failed).toMatchObject({ code: EXIT.REFUSED });
    // --json: the one JSON error body on stdout.
    expect(Object.keys(JSON.parse(failed.out))).toEqual(["error"]);
    expect(failed.err).toMatch(/FAILED/);

    const unknown = await cli(db, "--json", "rollback", "ds", "--to", "nope");
    expect(unknown).toMatchObject({ code: exitCodeFor(new NotFoundError("run", "nope")) });
    // --json: the one JSON error body on stdout.
    expect(Object.keys(JSON.parse(unknown.out))).toEqual(["error"]);
    expect(unknown.err).toMatch(/run nope does not exist/);

    const otherDir = mkdtempSync(join(tmpdir(), "shardledger-rollback-other-"));
    dirs.push(otherDir);
    expect((await cli(db, "dataset", "create", "other", "--root", `file://${otherDir}`)).code).toBe(EXIT.OK);
    expect((await cli(db, "run", "start", "other", "--shards", "1", "--run-id", "o1")).code).toBe(EXIT.OK);
    const foreign = await cli(db, "--json", "rollback", "ds", "--to", "o1");
    expect(foreign).toMatchObject({ code: EXIT.REFUSED });
    // --json: the one JSON error body on stdout.
    expect(Object.keys(JSON.parse(foreign.out))).toEqual(["error"]);
    expect(foreign.err).toMatch(/run o1 belongs to dataset other, not ds/);
    // Like every SAFETY_RAIL body, it names the rule it applies.
    expect(JSON.parse(foreign.out).error).toMatchObject({
      code: "SAFETY_RAIL",
      rule: "a dataset's _CURRENT names only its own runs",
      datasetId: "ds",
      runId: "o1",
      runDatasetId: "other",
    });

    const noDataset = await cli(db, "--json", "rollback", "nope", "--to", "r1");
    expect(noDataset).toMatchObject({ code: exitCodeFor(new NotFoundError("dataset", "nope")) });
    // --json: the one JSON error body on stdout.
    expect(Object.keys(JSON.parse(noDataset.out))).toEqual(["error"]);
    expect(noDataset.err).toMatch(/dataset nope does not exist/);

    const manifest = readFileSync(join(dir, "manifests/r1.json"));
    rmSync(join(dir, "manifests/r1.json"));
    const noManifest = await cli(db, "--json", "rollback", "ds", "--to", "r1");
    expect(noManifest).toMatchObject({ code: EXIT.REFUSED });
    // --json: the one JSON error body on stdout.
    expect(Object.keys(JSON.parse(noManifest.out))).toEqual(["error"]);
    expect(noManifest.err).toMatch(/manifest .*r1\.json is missing/);
    writeFileSync(join(dir, "manifests/r1.json"), manifest);

    const badId = await cli(db, "rollback", "ds", "--to", "a/b");
    expect(badId).toMatchObject({ code: EXIT.USAGE, out: "" });
    expect(badId.err).toMatch(/--to: /);
    expect((await cli(db, "rollback", "ds")).code).toBe(EXIT.USAGE);

    rmSync(join(dir, "data/r1/shard=00000"), { recursive: true });
    const gone = await cli(db, "--json", "rollback", "ds", "--to", "r1");
    expect(gone).toMatchObject({ code: EXIT.REFUSED });
    // --json: the one JSON error body on stdout.
    expect(Object.keys(JSON.parse(gone.out))).toEqual(["error"]);
    expect(gone.err).toMatch(/shard\(s\) 0 is missing/);
    expect(JSON.parse(readFileSync(join(dir, "_CURRENT"), "utf8")).runId).toBe("r2");

    mkdirSync(join(dir, "data/r1/shard=00000/attempt=00"), { recursive: true });
    writeFileSync(join(dir, "data/r1/shard=00000/attempt=00/part-0"), "x");
    const done = await cli(db, "--json", "rollback", "ds", "--to", "r1");
    expect(done).toMatchObject({ code: EXIT.OK, err: "" });
    expect(JSON.parse(done.out)).toEqual({
      datasetId: "ds",
      runId: "r1",
      previousRunId: "r2",
      manifestUrl: `${root}/manifests/r1.json`,
    });
    expect(JSON.parse(readFileSync(join(dir, "_CURRENT"), "utf8")).runId).toBe("r1");
    const human = await cli(db, "rollback", "ds", "--to", "r2");
    expect(human.code).toBe(EXIT.OK);
    expect(human.out).toMatch(/rolled dataset ds back to run r2 \(from r1\)/);
  });
});

describe("archive", () => {
  it("moves a pruned run's events to _archive/, reads them through, and audit --deep checks them", async () => {
    const { db, dir, root } = await datasetFixture("archive", "--keep-runs", "1", "--safety-window", "0s");
    await publishThroughCli(db, dir, root, "r1");
    await publishThroughCli(db, dir, root, "r2");
    expect((await cli(db, "gc", "ds")).code).toBe(EXIT.OK);
    const before = JSON.parse((await cli(db, "--json", "events", "--stream", "r1", "--limit", "1000")).out);
    expect(before.length).toBeGreaterThan(5);

    // Pruned just now: not due under the default 7d; due with --after 0s.
    expect(JSON.parse((await cli(db, "--json", "archive")).out).archived).toEqual([]);
    const dry = await cli(db, "--json", "archive", "--after", "0s", "--dry-run");
    expect(JSON.parse(dry.out)).toMatchObject({
      dryRun: true,
      archived: [{ runId: "r1", events: before.length }],
    });
    const done = await cli(db, "--json", "archive", "--dataset", "ds", "--after", "0s");
    expect(done).toMatchObject({ code: EXIT.OK, err: "" });
    expect(JSON.parse(done.out)).toMatchObject({
      dryRun: false,
      archived: [
        {
          datasetId: "ds",
          runId: "r1",
          events: before.length,
          archiveUrl: `${root}/_archive/run-r1.jsonl`,
        },
      ],
      failed: [],
      deferred: [],
      skipped: [],
    });
    expect(existsSync(join(dir, "_archive/run-r1.complete"))).toBe(true);
    expect(JSON.parse((await cli(db, "--json", "events", "--stream", "r1", "--limit", "1000")).out)).toEqual(
      before,
    );
    const audit = await cli(db, "--json", "audit", "--deep");
    expect(audit.code).toBe(EXIT.OK);
    expect(JSON.parse(audit.out)).toMatchObject({
      match: true,
      archives: { checked: 1, events: before.length, problems: [] },
    });
    expect((await cli(db, "archive", "--after", "0s")).out).toMatch(/nothing to archive/);

    rmSync(join(dir, "_archive/run-r1.jsonl"));
    const missing = await cli(db, "--json", "events", "--stream", "r1");
    expect(missing.code).toBe(1);
    expect(errorOf(missing.out)).toMatchObject({ code: "ARCHIVE_MISSING", runId: "r1" });
    // A damaged archive is a data problem, not a bug: the message says how to restore it, and no
    // stack trace is offered.
    expect(missing.err).toMatch(/restore .*versioning or a backup/);
    expect(missing.err).not.toMatch(/SHARDLEDGER_DEBUG/);
    const broken = await cli(db, "audit", "--deep");
    expect(broken.code).toBe(EXIT.REFUSED);
    expect(broken.out).toMatch(/1 problem\(s\)/);
    expect(broken.out).toMatch(/r1\s+missing/);
    const bad = await cli(db, "archive", "--after", "-1d");
    expect(bad.code).toBe(EXIT.USAGE);
    expect(bad.err).toContain("--after: ");
  });
});

describe("status", () => {
  it("prints one view per dataset, as JSON and as a table", async () => {
    const { db, dir, root } = await datasetFixture("status");
    await publishThroughCli(db, dir, root, "r1");
    await cli(db, "run", "start", "ds", "--shards", "1", "--run-id", "f1");
    await cli(db, "run", "fail", "f1", "--reason", "gave up");
    expect((await cli(db, "gc", "ds")).code).toBe(EXIT.OK);
    expect((await cli(db, "audit")).code).toBe(EXIT.OK);

    const one = await cli(db, "--json", "status", "ds");
    expect(one).toMatchObject({ code: EXIT.OK, err: "" });
    const view = JSON.parse(one.out);
    expect(view).toMatchObject({
      datasetId: "ds",
      root,
      current: { runId: "r1", manifestUrl: `${root}/manifests/r1.json` },
      runs: { total: 2, succeeded: 1, failed: 1, started: 0, publishing: 0, pruned: 0 },
      pending: { total: 0, dueNow: 0, waiting: 0, exhausted: 0, nextRetryAt: null },
      floor: { total: 1, items: [{ kind: "failed_run", runId: "f1", url: null }] },
      lastMaintenance: { kind: "gc", outcome: "ok" },
      lastAudit: { match: true, differences: 0 },
    });
    expect(Number.isNaN(Date.parse(view.current.since))).toBe(false);
    expect(view.policies).toMatchObject({ keepRuns: 10, retention: "30d", safetyWindow: "1h" });

    const all = await cli(db, "--json", "status");
    expect(all.code).toBe(EXIT.OK);
    expect(JSON.parse(all.out)).toEqual([view]);

    const human = await cli(db, "status", "ds");
    expect(human.code).toBe(EXIT.OK);
    expect(human.out).toMatch(/current run\s+r1 since /);
    expect(human.out).toMatch(/runs\s+2: 1 succeeded, 1 failed/);
    expect(human.out).toMatch(/pending cleanup\s+none/);
    expect(human.out).toMatch(/failed floor\s+1 item, next leaves /);
    expect(human.out).toMatch(/last maintenance\s+gc .*: ok/);
    expect(human.out).toMatch(/last audit\s+.*: match \(\d+ events, archives not checked: audit --deep\)/);
    expect(human.out).toMatch(/failed_run\s+f1/);

    const missing = await cli(db, "status", "nope");
    expect(missing).toMatchObject({ code: exitCodeFor(new NotFoundError("dataset", "nope")), out: "" });
    const badId = await cli(db, "status", "a b");
    expect(badId).toMatchObject({ code: EXIT.USAGE, out: "" });
    expect(badId.err).toMatch(/<datasetId>: /);
  });
});
