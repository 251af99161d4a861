/**
 * Bundles the `shardledger` CLI into `dist/bin/` (the package's `bin`), run by `npm run build`
 * after tsc.
 *
 * Why a bundle: started from tsc's output, a command resolves and compiles ~400 module files
 * (kysely alone is 262, zod 95) before it does anything, which is most of a short command's time.
 * One file per code-split chunk cuts that to a handful of reads.
 *
 * - Code splitting keeps the CLI's dynamic `import()`s lazy: the ledger, the demo, the maintenance
 *   loop and the input schemas are separate chunks loaded only by the commands that need them.
 * - Bundled: the pure-JS dependencies every database command needs (commander, kysely, zod, pg,
 *   picocolors, xstate). External (loaded from node_modules when needed): PGlite (it loads its WASM
 *   and data files next to its own module), the AWS SDK (large, and loaded only on the first S3
 *   request), cli-table3 and cli-progress (required on first use), pg-native (optional, never used).
 * - Chunks sit beside the entry in `dist/bin/`, so `../../package.json` (the version) and
 *   `createRequire(import.meta.url)` resolve from every chunk as they do from the sources.
 *
 * @example `node --import tsx scripts/bundle-cli.ts [--outdir DIR]`
 */
import { chmodSync, readFileSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build, type Plugin } from "esbuild";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
// `--outdir DIR` bundles elsewhere (a comparison beside the installed bin); default dist/bin.
const outdirFlag = process.argv.indexOf("--outdir");
const OUT_DIR =
  outdirFlag > 0 && process.argv[outdirFlag + 1] !== undefined
    ? resolve(process.argv[outdirFlag + 1] as string)
    : join(ROOT, "dist", "bin");
const ENTRY = join(OUT_DIR, "shardledger.js");

/**
 * zod's `z` namespace re-exports `z.locales`, every translation of its error messages (64 of the
 * 95 files, 300 kB the CLI would compile on every start). shardledger never switches locale: its
 * messages are its own, and zod's default English stays configured. This keeps only `en`.
 */
const zodEnglishOnly: Plugin = {
  name: "zod-english-only",
  setup(b) {
    b.onResolve({ filter: /\/locales\/index\.js$/ }, (args) =>
      /[\\/]zod[\\/]/.test(args.importer) ? { path: args.importer, namespace: "zod-locales" } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: "zod-locales" }, (args) => ({
      contents: 'export { default as en } from "../locales/en.js";',
      resolveDir: dirname(args.path),
      loader: "js",
    }));
  },
};

/**
 * pg asks at load time whether it runs in a Cloudflare Worker; on Node 20 (no `navigator`) it
 * finds out by constructing a `Response`, which loads Node's whole fetch implementation (undici
 * and node:http): a third of an `attempt succeed`'s start-up beyond the ledger itself. The CLI
 * runs on Node only, so the bundle takes pg's Node branch directly. Should pg change that line,
 * the build says so and the bundle simply keeps pg's own check.
 */
const pgOnNode: Plugin = {
  name: "pg-on-node",
  setup(b) {
    b.onLoad({ filter: /[\\/]pg[\\/]lib[\\/]stream\.js$/ }, (args) => {
      const source = readFileSync(args.path, "utf8");
      const probe = "if (isCloudflareRuntime()) {";
      if (!source.includes(probe)) {
        return {
          contents: source,
          loader: "js",
          warnings: [{ text: `pg-on-node: "${probe}" not found; pg's runtime check stays` }],
        };
      }
      return { contents: source.replace(probe, "if (false) {"), loader: "js" };
    });
  },
};

rmSync(OUT_DIR, { recursive: true, force: true });
await build({
  absWorkingDir: ROOT,
  entryPoints: { shardledger: "src/cli/main.ts" },
  outdir: OUT_DIR,
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  external: ["@electric-sql/pglite", "@aws-sdk/*", "cli-table3", "cli-progress", "pg-native"],
  // pg and its dependencies are CommonJS: inside an ES module bundle their `require` of Node's
  // built-ins needs a real `require`.
  banner: {
    js: 'import { createRequire as __shardledgerCreateRequire } from "node:module";\nconst require = __shardledgerCreateRequire(import.meta.url);',
  },
  plugins: [zodEnglishOnly, pgOnNode],
  // Less to read and compile at every start. Identifiers are not minified and names are kept
  // where bundling renames them, so error classes keep their names (`this.name = new.target.name`).
  minifyWhitespace: true,
  minifySyntax: true,
  keepNames: false,
  sourcemap: "linked",
  legalComments: "none",
  logLevel: "warning",
});
// The bin must stay runnable (`npx shardledger`); esbuild writes files without the exec bit.
chmodSync(ENTRY, 0o755);
