import { BaseSequencer, type TestSpecification } from "vitest/node";

/**
 * The test files that run for minutes, not seconds (on a 2-core machine: the safety property
 * ~4 min, the CLI end-to-end files ~2.5 and ~1.5 min, spawning a process per command).
 */
const LONG_FILES = [
  "test/property/safety-interleaving.property.test.ts",
  "test/cli/cli-e2e.test.ts",
  "test/cli/run-cli.test.ts",
];

/**
 * vitest's order (failed first, then longest first from its results cache, else largest file
 * first), except that the files known to take minutes always start first. On a clean checkout (CI)
 * there is no results cache, and by size the safety property (a small file driving a large
 * support library) starts last: one worker then runs it alone for its last minutes while the
 * other idles. Started first, the two workers end within seconds of each other.
 *
 * @example `export default defineConfig({ test: { sequence: { sequencer: LongFilesFirst } } })`
 */
export class LongFilesFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const rank = (spec: TestSpecification) => {
      const i = LONG_FILES.findIndex((name) => spec.moduleId.endsWith(name));
      return i === -1 ? LONG_FILES.length : i;
    };
    // Array.prototype.sort is stable: the other files keep vitest's order.
    return sorted.sort((a, b) => rank(a) - rank(b));
  }
}
