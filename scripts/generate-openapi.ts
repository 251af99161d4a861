/**
 * Writes `docs/openapi.json`: the OpenAPI 3.1 document of `shardledger serve`, generated from the
 * server's routes and the zod schemas they validate with (never written by hand). The server
 * answers the same document at `/openapi.json`.
 *
 * Run it after changing a route or an input schema: `npm run generate:openapi`.
 * `test/server/openapi.test.ts` renders it again and fails when docs/openapi.json differs.
 *
 * @example `node --import tsx scripts/generate-openapi.ts`
 */
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Ledger } from "../src/ledger/open-ledger.js";
import { createServerApp, OPENAPI_INFO } from "../src/server/app.js";
import { packageVersion } from "../src/server/static-files.js";

/** Where the document lives. */
export const OPENAPI_PATH = join(dirname(fileURLToPath(import.meta.url)), "..", "docs", "openapi.json");

/**
 * The document's text, from the routes as they are now. Building the app touches no ledger.
 *
 * @example `readFileSync(OPENAPI_PATH, "utf8") === renderOpenApi()`
 */
export function renderOpenApi(): string {
  const app = createServerApp({} as Ledger);
  return `${JSON.stringify(app.getOpenAPI31Document(OPENAPI_INFO(packageVersion())), null, 2)}\n`;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  writeFileSync(OPENAPI_PATH, renderOpenApi());
  console.log(`wrote ${OPENAPI_PATH}`);
}
