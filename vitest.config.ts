import { availableParallelism } from "node:os";
import { defineConfig } from "vitest/config";
import { LongFilesFirst } from "./test/support/long-files-first.js";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Builds the package and its CLI bundle once per run, for every test file that spawns the CLI.
    globalSetup: ["test/support/global-setup.ts"],
    // Real PostgreSQL, PGlite (WASM start-up) and s3rver make individual tests slower than unit tests.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: "forks",
    // One test file per core, not vitest's default of one fewer: most files spend much of their
    // time waiting on a CLI child process, s3rver or the database server, so with one worker on a
    // 2-core machine a core sat idle (the PGlite suite: 862 s with 1 worker, 512 s with 2).
    maxWorkers: availableParallelism(),
    // The minutes-long files first, so that the workers end together (see long-files-first.ts).
    sequence: { sequencer: LongFilesFirst },
    // A skipped or focused test must never land unnoticed.
    allowOnly: false,
    // s3rver 3.7 signs continuation tokens with DES; Node 20's OpenSSL 3 needs the legacy provider.
    execArgv: ["--openssl-legacy-provider"],
    reporters: process.env.CI ? ["default"] : ["default"],
  },
});
