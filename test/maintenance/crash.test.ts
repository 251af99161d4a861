import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BACKEND } from "../support/database.js";
import { eventually } from "../support/eventually.js";
import { openTestLedger } from "../support/ledger.js";
import { lockHolderPid } from "../support/maintenance-lock.js";

/** Runs the child until its `nth` announcement of `marker`, then SIGKILLs it. */
function runAndKill(
  env: Record<string, string>,
  marker: string,
  nth: number,
): Promise<{ killed: boolean; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "test/support/maintenance-child.ts"], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    let seen = 0;
    let killed = false;
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      for (const line of chunk.toString().split("\n")) {
        if (!killed && line.startsWith(`MARK ${marker}`) && ++seen === nth) {
          killed = true;
          child.kill("SIGKILL");
        }
      }
    });
    child.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.on("error", reject);
    child.on("exit", () => resolve({ killed, output }));
  });
}

describe.runIf(BACKEND === "postgres")(
  "a maintenance process killed mid-pass (real server, real processes)",
  () => {
    let t: Awaited<ReturnType<typeof openTestLedger>>;
    beforeAll(async () => {
      t = await openTestLedger();
    });
    afterAll(() => t.close());

    async function publishedRun(datasetId: string, shards: number) {
      const root = `${t.root}/${datasetId}`;
      await t.ledger.createDataset({ datasetId, root, safetyWindow: "0s" });
      const runId = `${datasetId}-run`;
      await t.ledger.startRun({ datasetId, numShards: shards, runId });
      const winners: string[] = [];
      const losers: string[] = [];
      for (let s = 0; s < shards; s++) {
        for (const attempt of [0, 1, 2]) {
          const rel = `data/${runId}/shard=${s}/attempt=${attempt}`;
          mkdirSync(join(t.dir, datasetId, rel), { recursive: true });
          for (let p = 0; p < 4; p++) writeFileSync(join(t.dir, datasetId, rel, `part-${p}`), "x");
          await t.ledger.attemptSucceeded({ runId, shard: s, attempt, url: `${root}/${rel}` });
          (attempt === 0 ? winners : losers).push(join(t.dir, datasetId, rel));
        }
      }
      mkdirSync(join(t.dir, datasetId, `data/${runId}/shard=0/attempt=10`), { recursive: true });
      writeFileSync(join(t.dir, datasetId, `data/${runId}/shard=0/attempt=10/bystander`), "keep");
      await t.ledger.publish(runId);
      return { runId, winners, losers };
    }

    const scenarios: [string, string][] = [
      ["between plan and delete", "listed"],
      ["in the middle of a batch", "mid-batch"],
      ["after the prefix was verified empty, before the outcome event", "verified-empty"],
    ];
    for (const [i, [name, marker]] of scenarios.entries()) {
      it(`finishes the job after a kill ${name}, deleting nothing it should not`, async () => {
        const datasetId = `crash${i}`;
        const { runId, winners, losers } = await publishedRun(datasetId, 4);
        // Kill at a random occurrence of the step, so different items are caught mid-flight.
        const nth = 1 + Math.floor(Math.random() * 4);
        const { killed, output } = await runAndKill(
          {
            DATABASE_URL: process.env.DATABASE_URL as string,
            LEDGER_SCHEMA: t.schema,
            DATASET_ID: datasetId,
            PAUSE_MS: "400",
          },
          marker,
          nth,
        );
        expect(killed, output).toBe(true);
        expect(output).not.toContain("MARK done");

        const before = await t.ledger.pendingCleanup({ datasetId });
        expect(before.length).toBeGreaterThanOrEqual(1); // the killed pass left its planned item behind
        // The lock dies with the process's session, once its backend has seen the socket close
        // and exited: on a loaded machine that is not yet the case when the child has exited.
        expect(
          await eventually(
            () => lockHolderPid(t.schema, datasetId),
            (pid) => pid === null,
          ),
        ).toBeNull();
        // The next pass is not skipped, and it finishes the job.
        const report = await t.ledger.cleanup({ datasetId });
        expect(report.skipped).toEqual([]);
        expect(report.failed).toEqual([]);
        expect(await t.ledger.pendingCleanup({ datasetId })).toEqual([]);
        for (const w of winners) expect(readdirSync(w), w).toHaveLength(4);
        for (const l of losers) expect(existsSync(l) ? readdirSync(l) : [], l).toEqual([]);
        expect(existsSync(join(t.dir, datasetId, `data/${runId}/shard=0/attempt=10/bystander`))).toBe(true);
        const shown = await t.ledger.run(runId);
        expect(shown.attempts.filter((a) => a.status === "LOSER" || a.status === "CLEANUP_PENDING")).toEqual(
          [],
        );
        expect(shown.attempts.filter((a) => a.status === "DELETED")).toHaveLength(losers.length);
        expect((await t.ledger.audit()).match).toBe(true);
      });
    }
  },
);
