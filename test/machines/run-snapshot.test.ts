import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { RUN_FOLD_VERSION, restoreRunState, serialiseRunState } from "../../src/machines/run-snapshot.js";
import { foldRun } from "../../src/machines/run-state.js";

/** The sources that decide what a run stream folds into, and how a snapshot stores it. */
const FOLD_SOURCES = [
  "src/machines/run-state.ts",
  "src/machines/machine-tables.ts",
  "src/machines/machine-tables.generated.ts",
  "src/machines/attempt-reports.ts",
  "src/machines/run-snapshot.ts",
];

/**
 * The fold version and the hash of its sources when it was last reviewed. When this fails, the
 * fold (or the snapshot format) changed: if any recorded history could now fold into another
 * state, or the format changed, bump RUN_FOLD_VERSION (stored snapshots of the old fold are then
 * ignored, never trusted); either way record the new hash here.
 */
const REVIEWED = {
  foldVersion: 2,
  sha256: "ef64eddd3ba5a92468444496d1b9be84869cb581cd571cd5bad1c26d52587676",
};

const at = (iso: string) => new Date(iso);

describe("run snapshots", () => {
  it("are versioned with the fold: a change of the fold's sources needs a decision", () => {
    const hash = createHash("sha256");
    for (const file of FOLD_SOURCES) hash.update(readFileSync(file, "utf8").replace(/\r\n/g, "\n"));
    expect({ foldVersion: RUN_FOLD_VERSION, sha256: hash.digest("hex") }).toEqual(REVIEWED);
  });

  const state = foldRun([
    {
      type: "RunStarted",
      data: { runId: "r1", datasetId: "ds", numShards: 2 },
      recordedAt: at("2026-01-01T00:00:00Z"),
    },
    {
      type: "AttemptSucceeded",
      data: { runId: "r1", shard: 0, attempt: 0, taskAttemptId: "7", url: "s3://b/ds/data/r1/shard=0/a0" },
      recordedAt: at("2026-01-01T00:01:00Z"),
    },
    {
      type: "AttemptFailed",
      data: { runId: "r1", shard: 1, attempt: 0, url: "s3://b/ds/data/r1/shard=1/a0", error: "lost" },
      recordedAt: at("2026-01-01T00:01:00Z"),
    },
  ]);

  it("round-trip a state exactly", () => {
    expect(restoreRunState(serialiseRunState(state))).toStrictEqual(state);
  });

  it("of another fold version, or damaged, restore to nothing (the caller folds the log)", () => {
    const text = serialiseRunState(state);
    const body = JSON.parse(text) as { fold: number; attempts: { phase: number[] }; phases: string[] };
    expect(restoreRunState(JSON.stringify({ ...body, fold: RUN_FOLD_VERSION + 1 }))).toBeNull();
    expect(restoreRunState(text.slice(0, -10))).toBeNull();
    expect(restoreRunState(JSON.stringify({ ...body, phases: ["NO_SUCH_PHASE"] }))).toBeNull();
    expect(
      restoreRunState(JSON.stringify({ ...body, attempts: { ...body.attempts, phase: [0] } })),
    ).toBeNull();
    expect(restoreRunState("null")).toBeNull();
  });
});
