import { execFile } from "node:child_process";
import { resolve } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { BACKEND, serverClient } from "../support/database.js";

const repo = resolve(import.meta.dirname, "../..");

/** Runs the fixture (one passing and one failing test) in a child vitest; its schemas and verdicts. */
async function runFixture(keep: boolean): Promise<{ opened: Record<string, string>; kept: string[] }> {
  const env: NodeJS.ProcessEnv = { ...process.env, KEEP_FAILED_SCHEMAS: keep ? "1" : "" };
  delete env.VITEST;
  delete env.VITEST_WORKER_ID;
  delete env.VITEST_POOL_ID;
  const child = promisify(execFile)(
    process.execPath,
    [
      resolve(repo, "node_modules/vitest/vitest.mjs"),
      "run",
      "--config",
      "test/tooling/fixtures/vitest.fixture.config.ts",
    ],
    { cwd: repo, env, maxBuffer: 16 * 1024 * 1024 },
  );
  // The fixture fails on purpose, so the child exits 1: its output is what counts.
  const { stdout, stderr } = await child.catch((e: { stdout: string; stderr: string }) => e);
  const output = `${stdout}\n${stderr}`;
  const opened = Object.fromEntries(
    [...output.matchAll(/SCHEMA (\w+) (t_[0-9a-f]+)/g)].map((m) => [m[1], m[2]]),
  );
  const kept = [...output.matchAll(/KEEP_FAILED_SCHEMAS: kept schema (t_[0-9a-f]+)/g)].map(
    (m) => m[1] as string,
  );
  expect(Object.keys(opened).sort(), output).toEqual(["fail", "file", "pass"]);
  return { opened: opened as Record<string, string>, kept };
}

async function schemasOnServer(names: string[]): Promise<string[]> {
  const client = serverClient();
  await client.connect();
  try {
    const { rows } = await client.query<{ nspname: string }>(
      "SELECT nspname FROM pg_namespace WHERE nspname = ANY($1::text[])",
      [names],
    );
    return rows.map((r) => r.nspname).sort();
  } finally {
    await client.end();
  }
}

async function dropOnServer(names: string[]): Promise<void> {
  const client = serverClient();
  await client.connect();
  try {
    for (const name of names) await client.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
  } finally {
    await client.end();
  }
}

describe("KEEP_FAILED_SCHEMAS", () => {
  it("keeps the schema of the failed test and of its file, drops the passing test's, and keeps nothing when unset", async () => {
    const [kept, dropped] = await Promise.all([runFixture(true), runFixture(false)]);
    try {
      expect(kept.kept.sort()).toEqual([kept.opened.fail, kept.opened.file].sort());
      expect(dropped.kept).toEqual([]);
      if (BACKEND === "postgres") {
        const all = [...Object.values(kept.opened), ...Object.values(dropped.opened)];
        expect(await schemasOnServer(all)).toEqual([kept.opened.fail, kept.opened.file].sort());
      }
    } finally {
      if (BACKEND === "postgres") await dropOnServer(kept.kept);
    }
  });
});
