/**
 * The README's library examples open `pglite:./.shardledger/db`: on a fresh working directory
 * (no `.shardledger` yet) that must create the directories, as the CLI does, not fail with a raw
 * ENOENT from deep inside PGlite. PGlite whatever the suite's backend: it is what is opened here.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { openLedger } from "../../src/ledger/open-ledger.js";

describe("openLedger on a pglite directory whose parents do not exist yet", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it("creates them and opens a working ledger", async () => {
    const base = mkdtempSync(join(tmpdir(), "shardledger-fresh-"));
    dirs.push(base);
    const dir = join(base, ".shardledger", "db");
    const ledger = await openLedger({ database: `pglite:${dir}` });
    try {
      await ledger.createDataset({ datasetId: "events", root: `file://${base}/lake` });
      expect((await ledger.dataset("events")).datasetId).toBe("events");
    } finally {
      await ledger.close();
    }
    expect(existsSync(join(dir, "PG_VERSION"))).toBe(true);
  });
});
