import { join } from "node:path";
import { describe, expect, test } from "vitest";
import type { TestSpecification, Vitest } from "vitest/node";
import { LongFilesFirst } from "../support/long-files-first.js";

// vitest's sequencer is handed the run's context and the file specifications; only the parts its
// sort reads are built here (a project's order settings, the results cache). The cache is the one
// a clean checkout has: nothing known, every file's size on disk.
const ROOT = "/repo";
const project = { name: "", config: { sequence: { groupOrder: 0 }, isolate: true } };

function sequencer(sizes: Record<string, number>): LongFilesFirst {
  const ctx = {
    config: { root: ROOT },
    cache: {
      getFileTestResults: () => undefined,
      getFileStats: (key: string) => ({ size: sizes[key.slice(1)] ?? 0 }),
    },
  };
  return new LongFilesFirst(ctx as unknown as Vitest);
}

const spec = (file: string) => ({ moduleId: join(ROOT, file), project }) as unknown as TestSpecification;

describe("the test sequencer", () => {
  test("starts the minutes-long files first even when smaller, and keeps vitest's order for the rest", async () => {
    const sizes = {
      "test/a.test.ts": 30_000,
      "test/b.test.ts": 10_000,
      "test/cli/run-cli.test.ts": 40_000,
      "test/property/safety-interleaving.property.test.ts": 5_000,
      "test/cli/cli-e2e.test.ts": 41_000,
    };
    const sorted = await sequencer(sizes).sort(Object.keys(sizes).map(spec));
    expect(sorted.map((s) => s.moduleId.slice(ROOT.length + 1))).toEqual([
      "test/property/safety-interleaving.property.test.ts",
      "test/cli/cli-e2e.test.ts",
      "test/cli/run-cli.test.ts",
      "test/a.test.ts",
      "test/b.test.ts",
    ]);
  });
});
