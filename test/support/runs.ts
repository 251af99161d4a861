import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Ledger } from "../../src/ledger/open-ledger.js";

/** The root-relative key of an attempt's prefix, as writers lay it out. */
export const attemptKeyOf = (runId: string, shard: number, attempt: number): string =>
  `data/${runId}/shard=${String(shard).padStart(5, "0")}/attempt=${String(attempt).padStart(2, "0")}`;

/**
 * Writes one attempt's data under the dataset root on disk (as a writer does before it reports)
 * and returns its url.
 *
 * @example
 * ```ts
 * const url = writeAttempt(t.dir, t.root, "r1", 0, 0)
 * ```
 */
export function writeAttempt(
  dir: string,
  root: string,
  runId: string,
  shard: number,
  attempt: number,
): string {
  const rel = attemptKeyOf(runId, shard, attempt);
  mkdirSync(join(dir, rel), { recursive: true });
  writeFileSync(join(dir, rel, "part-0"), `${runId}/${shard}/${attempt}`);
  return `${root}/${rel}`;
}

/**
 * Starts a run, writes and reports one successful attempt per shard (plus, with `losers`, a second
 * successful attempt of shard 0 that loses), and publishes it.
 *
 * @example
 * ```ts
 * await writeAndPublish(ledger, { dir: t.dir, root: t.root, datasetId: "ds", runId: "r1", numShards: 2 })
 * ```
 */
export async function writeAndPublish(
  ledger: Ledger,
  options: {
    dir: string;
    root: string;
    datasetId: string;
    runId: string;
    numShards?: number;
    losers?: boolean;
  },
): Promise<void> {
  const { dir, root, datasetId, runId } = options;
  const numShards = options.numShards ?? 2;
  await ledger.startRun({ datasetId, numShards, runId });
  for (let shard = 0; shard < numShards; shard++) {
    await ledger.attemptSucceeded({
      runId,
      shard,
      attempt: 0,
      url: writeAttempt(dir, root, runId, shard, 0),
    });
  }
  if (options.losers) {
    await ledger.attemptSucceeded({ runId, shard: 0, attempt: 1, url: writeAttempt(dir, root, runId, 0, 1) });
  }
  await ledger.publish(runId);
}
