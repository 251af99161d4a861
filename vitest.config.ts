import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Builds the package and its CLI bundle once per run, for every test file that spawns the CLI.
    globalSetup: ["test/support/global-setup.ts"],
    // Real PostgreSQL, PGlite (WASM start-up) and s3rver make individual tests slower than unit tests.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: "forks",
    // A skipped or focused test must never land unnoticed.
    allowOnly: false,
    // s3rver 3.7 signs continuation tokens with DES; Node 20's OpenSSL 3 needs the legacy provider.
    execArgv: ["--openssl-legacy-provider"],
    reporters: process.env.CI ? ["default"] : ["default"],
  },
});
