import { existsSync, readFileSync } from "node:fs";
import { readFile, realpath, stat } from "node:fs/promises";
import { dirname, extname, join, sep } from "node:path";
import { fileURLToPath } from "node:url";

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".txt": "text/plain; charset=utf-8",
  ".map": "application/json; charset=utf-8",
};

/**
 * The package's top-level `dashboard/` folder: found by walking up from this module to the
 * directory holding package.json, so it resolves the same from `src/server/` (tsx), `dist/server/`
 * (tsc) and `dist/bin/` (the esbuild bundle's chunks).
 *
 * @internal
 */
export function findDashboardDir(from: string = import.meta.url): string | undefined {
  const root = findPackageRoot(from);
  const dashboard = root === undefined ? undefined : join(root, "dashboard");
  return dashboard !== undefined && existsSync(dashboard) ? dashboard : undefined;
}

/** The nearest directory above `from` holding a package.json. */
function findPackageRoot(from: string = import.meta.url): string | undefined {
  let dir = dirname(fileURLToPath(from));
  for (;;) {
    if (existsSync(join(dir, "package.json"))) return dir;
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

/** The package's version, for the OpenAPI document. @internal */
export function packageVersion(): string {
  const root = findPackageRoot();
  try {
    return root === undefined
      ? "0.0.0"
      : ((JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version?: string }).version ??
          "0.0.0");
  } catch {
    return "0.0.0";
  }
}

/**
 * A file of the dashboard for a request path below it (`""` → index.html), or `undefined` when
 * there is none. Refuses anything that would leave the folder: `..` segments, encoded slashes or
 * NUL bytes, and symlinks pointing outside it.
 *
 * @internal
 */
export async function readDashboardFile(
  root: string,
  relative: string,
): Promise<{ body: Uint8Array; contentType: string } | undefined> {
  let decoded: string;
  try {
    decoded = decodeURIComponent(relative);
  } catch {
    return undefined;
  }
  if (decoded.includes("\0") || decoded.includes("\\")) return undefined;
  const segments = decoded.split("/").filter((s) => s !== "");
  if (segments.some((s) => s === ".." || s === "." || s.startsWith("."))) return undefined;
  const path = join(root, ...(segments.length === 0 ? ["index.html"] : segments));
  try {
    const realRoot = await realpath(root);
    let real = await realpath(path);
    if ((await stat(real)).isDirectory()) real = await realpath(join(real, "index.html"));
    if (real !== realRoot && !real.startsWith(realRoot + sep)) return undefined;
    const body = await readFile(real);
    return { body, contentType: CONTENT_TYPES[extname(real).toLowerCase()] ?? "application/octet-stream" };
  } catch {
    return undefined;
  }
}
