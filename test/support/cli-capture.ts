import { rmSync } from "node:fs";
import { afterAll } from "vitest";
import { serverClient } from "./database.js";

/** A stream for `runCli`'s io that keeps what the CLI writes. */
export function capture(options: { isTTY?: boolean } = {}) {
  const chunks: string[] = [];
  return {
    stream: { write: (s: string) => chunks.push(s), isTTY: options.isTTY ?? false, columns: 100 },
    text: () => chunks.join(""),
  };
}

/**
 * Scratch directories and PostgreSQL schemas a test file creates for its CLI runs: push onto the
 * returned lists, and they are removed after the file's tests.
 */
export function scratchRemovedAfterAll(): { dirs: string[]; schemas: string[] } {
  const dirs: string[] = [];
  const schemas: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    if (schemas.length > 0) {
      const client = serverClient();
      await client.connect();
      for (const schema of schemas) await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await client.end();
    }
  });
  return { dirs, schemas };
}
