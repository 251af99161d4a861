import { randomBytes } from "node:crypto";
import type { Dirent } from "node:fs";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { SafetyRailError, ValidationError } from "../../errors.js";
import {
  assertSafeKey,
  assertSafePrefix,
  type DatasetRoot,
  parseDatasetRoot,
} from "../../storage/dataset-url.js";
import {
  compareKeys,
  type DeleteOutcome,
  type ListOptions,
  type ListPage,
  type ObjectInfo,
  type ObjectStore,
  ObjectStoreError,
  type ObjectStoreFailure,
  type PutOptions,
} from "../../storage/object-store.js";

/** Temporary files of in-flight puts; never listed, never valid as a key's last segment. */
const TEMP_NAME = /^\.shardledger-tmp-[0-9a-f]{16}$/;
const DEFAULT_PAGE_SIZE = 1000;
const DELETE_CONCURRENCY = 16;

/**
 * An object store on the local filesystem for a `file:///abs/path` root: keys map to files below
 * the root directory. Puts are atomic (a temp file in the same directory, then `rename`, or `link`
 * for `ifAbsent`); listing walks the tree in key order; deleting removes directories it emptied,
 * up to but not including the root. Only regular files are objects: symbolic links are never
 * listed, and a key whose resolved path leaves the root through one is refused.
 * `contentType` is accepted and ignored.
 *
 * @example
 * ```ts
 * const store = createFilesystemObjectStore("file:///var/lake/events")
 * await store.put("_CURRENT", "r7")
 * new TextDecoder().decode((await store.get("_CURRENT"))!) // "r7"
 * ```
 */
export function createFilesystemObjectStore(root: DatasetRoot | string): ObjectStore {
  const r = typeof root === "string" ? parseDatasetRoot(root) : root;
  if (r.scheme !== "file") {
    throw new ValidationError("root", `${r.url} is not a file:/// root; use the S3 object store for it`);
  }
  return new FilesystemObjectStore(r);
}

class FilesystemObjectStore implements ObjectStore {
  readonly rootUrl: string;
  readonly #dir: string;

  constructor(root: DatasetRoot) {
    this.rootUrl = root.url;
    this.#dir = path.resolve(`/${root.prefix}`);
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListPage> {
    assertSafePrefix(prefix);
    const pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 1000) {
      throw new ValidationError("pageSize", `must be an integer from 1 to 1000, got ${String(pageSize)}`);
    }
    const token = options.token ?? null;
    const baseKey = prefix.slice(0, prefix.lastIndexOf("/") + 1);
    const startDir = this.#join(baseKey);
    await this.#assertRealInside(startDir, prefix);

    const found: string[] = [];
    const want = pageSize + 1;
    const walk = async (dir: string, keyPrefix: string): Promise<void> => {
      let entries: Dirent[];
      try {
        entries = await fs.readdir(dir, { withFileTypes: true });
      } catch (e) {
        if (isErrno(e, "ENOENT", "ENOTDIR")) return;
        throw storeError(e, keyPrefix);
      }
      // A directory sorts by "name/": its keys all start so, and that is where they fall among
      // their siblings in byte order ("a-b" < "a/x" although "a" < "a-b").
      const items = entries
        .filter((d) => d.isDirectory() || (d.isFile() && !TEMP_NAME.test(d.name)))
        .map((d) => ({
          name: d.name,
          isDir: d.isDirectory(),
          key: keyPrefix + d.name + (d.isDirectory() ? "/" : ""),
        }))
        .sort((a, b) => compareKeys(a.key, b.key));
      for (const item of items) {
        if (found.length >= want) return;
        if (item.isDir) {
          if (!(item.key.startsWith(prefix) || prefix.startsWith(item.key))) continue;
          if (token !== null && compareKeys(item.key, token) < 0 && !token.startsWith(item.key)) continue;
          await walk(path.join(dir, item.name), item.key);
        } else {
          if (!item.key.startsWith(prefix)) continue;
          if (token !== null && compareKeys(item.key, token) <= 0) continue;
          found.push(item.key);
        }
      }
    };
    await walk(startDir, baseKey);

    const more = found.length > pageSize;
    const keys = found.slice(0, pageSize);
    const stats = await Promise.all(
      keys.map(async (key): Promise<ObjectInfo | null> => {
        try {
          const st = await fs.stat(this.#join(key));
          return { key, size: st.size, lastModified: st.mtime };
        } catch (e) {
          // Deleted between the walk and the stat: it is gone, so it is not listed.
          if (isErrno(e, "ENOENT", "ENOTDIR")) return null;
          throw storeError(e, key);
        }
      }),
    );
    return {
      objects: stats.filter((s): s is ObjectInfo => s !== null),
      nextToken: more ? (keys[keys.length - 1] ?? null) : null,
    };
  }

  async deleteMany(keys: readonly string[]): Promise<DeleteOutcome> {
    const unique = [...new Set(keys)];
    const paths = new Map(unique.map((key) => [key, this.#pathOf(key)]));
    const checked = new Map<string, Promise<void>>();
    for (const [key, p] of paths) {
      const parent = path.dirname(p);
      if (!checked.has(parent)) checked.set(parent, this.#assertRealInside(parent, key));
    }
    await Promise.all(checked.values());

    const deleted: string[] = [];
    const errors: ObjectStoreFailure[] = [];
    const queue = [...paths];
    let taken = 0;
    const worker = async () => {
      for (let next = queue[taken++]; next !== undefined; next = queue[taken++]) {
        const [key, p] = next;
        try {
          await fs.unlink(p);
          deleted.push(key);
        } catch (e) {
          if (isErrno(e, "ENOENT", "ENOTDIR", "EISDIR") || (isErrno(e, "EPERM") && (await isDirectory(p)))) {
            // No object under this key (a directory is not an object): nothing left to delete.
            deleted.push(key);
          } else {
            errors.push({ key, ...fsFailure(e) });
          }
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(DELETE_CONCURRENCY, queue.length) }, worker));
    await this.#removeEmptiedDirectories(deleted.map((key) => path.dirname(paths.get(key)!)));

    const order = new Map(keys.map((k, i) => [k, i]));
    deleted.sort((a, b) => order.get(a)! - order.get(b)!);
    errors.sort((a, b) => order.get(a.key)! - order.get(b.key)!);
    return { deleted, errors };
  }

  async put(key: string, body: string | Uint8Array, options: PutOptions = {}): Promise<void> {
    const target = this.#pathOf(key);
    if (TEMP_NAME.test(path.basename(target))) {
      throw new ObjectStoreError(`key ${key} looks like one of the store's temporary files`, {
        code: "InvalidKey",
        transient: false,
        key,
      });
    }
    const dir = path.dirname(target);
    for (let tries = 1; ; tries++) {
      const tmp = path.join(dir, `.shardledger-tmp-${randomBytes(8).toString("hex")}`);
      try {
        // Checked before mkdir too: `mkdir -p` through a link that leaves the root would create
        // directories outside it before the check after it could refuse.
        await this.#assertRealInside(dir, key);
        await fs.mkdir(dir, { recursive: true });
        await this.#assertRealInside(dir, key);
        const handle = await fs.open(tmp, "wx");
        try {
          await handle.writeFile(body);
          await handle.sync();
        } finally {
          await handle.close();
        }
      } catch (e) {
        await fs.rm(tmp, { force: true }).catch(() => {});
        // A concurrent deleteMany may remove the directory it just emptied between our mkdir and
        // open; creating it again is all that is needed.
        if (isErrno(e, "ENOENT") && tries < 3) continue;
        if (e instanceof SafetyRailError) throw e;
        throw storeError(e, key);
      }
      try {
        if (options.ifAbsent) {
          // link() fails if the name exists: an exclusive create of the complete file.
          await fs.link(tmp, target);
        } else {
          await fs.rename(tmp, target);
        }
      } catch (e) {
        if (options.ifAbsent && isErrno(e, "EEXIST")) {
          throw new ObjectStoreError(`${this.rootUrl}/${key} already exists`, {
            code: "PreconditionFailed",
            transient: false,
            status: 412,
            key,
            cause: e,
          });
        }
        throw storeError(e, key);
      } finally {
        await fs.rm(tmp, { force: true }).catch(() => {});
      }
      return;
    }
  }

  async get(key: string): Promise<Uint8Array | null> {
    const p = this.#pathOf(key);
    await this.#assertRealInside(p, key);
    try {
      const buf = await fs.readFile(p);
      return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    } catch (e) {
      if (isErrno(e, "ENOENT", "ENOTDIR", "EISDIR")) return null;
      throw storeError(e, key);
    }
  }

  #join(key: string): string {
    const parts = key.split("/").filter((s) => s !== "");
    return parts.length === 0 ? this.#dir : path.join(this.#dir, ...parts);
  }

  #pathOf(key: string): string {
    assertSafeKey(key);
    const p = path.resolve(this.#join(key));
    if (!p.startsWith(this.#dir + path.sep)) {
      throw new SafetyRailError(`key ${JSON.stringify(key)} resolves outside the root ${this.rootUrl}`, {
        key,
        root: this.rootUrl,
        rule: "key inside the root",
      });
    }
    return p;
  }

  /**
   * Refuses a path whose nearest existing ancestor (itself included) resolves, through symbolic
   * links, outside the real root directory. A missing root holds nothing, so nothing can escape.
   */
  async #assertRealInside(p: string, key: string): Promise<void> {
    const realRoot = await realpathOrNull(this.#dir);
    if (realRoot === null) return;
    for (let cur = p; ; cur = path.dirname(cur)) {
      const real = await realpathOrNull(cur);
      if (real !== null) {
        if (real === realRoot || real.startsWith(realRoot + path.sep)) return;
        throw new SafetyRailError(
          `key ${JSON.stringify(key)} resolves through a symbolic link outside the root ${this.rootUrl}`,
          { key, root: this.rootUrl, resolved: real, rule: "key inside the root" },
        );
      }
      if (cur === this.#dir || cur === path.dirname(cur)) return;
    }
  }

  async #removeEmptiedDirectories(dirs: string[]): Promise<void> {
    const depth = (d: string) => d.split(path.sep).length;
    const pending = [...new Set(dirs)].sort((a, b) => depth(b) - depth(a));
    const removed = new Set<string>();
    for (const start of pending) {
      for (let d = start; d.startsWith(this.#dir + path.sep) && !removed.has(d); d = path.dirname(d)) {
        try {
          await fs.rmdir(d);
          removed.add(d);
        } catch {
          // Not empty (other objects, a concurrent put's temp file) or already gone: stop here.
          break;
        }
      }
    }
  }
}

async function realpathOrNull(p: string): Promise<string | null> {
  try {
    return await fs.realpath(p);
  } catch (e) {
    if (isErrno(e, "ENOENT", "ENOTDIR")) return null;
    throw e;
  }
}

async function isDirectory(p: string): Promise<boolean> {
  return fs.lstat(p).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

function isErrno(e: unknown, ...codes: string[]): boolean {
  return typeof e === "object" && e !== null && codes.includes((e as { code?: unknown }).code as string);
}

function fsFailure(e: unknown): { code: string; message: string; transient: boolean } {
  const errno = typeof e === "object" && e !== null ? (e as { code?: unknown }).code : undefined;
  const message = e instanceof Error ? e.message : String(e);
  if (errno === "EACCES" || errno === "EPERM" || errno === "EROFS") {
    return { code: "AccessDenied", message, transient: false };
  }
  // A key that collides with a directory, or a path through a file: trying again cannot help.
  if (errno === "EEXIST" || errno === "ENOTDIR" || errno === "EISDIR") {
    return { code: "KeyConflict", message, transient: false };
  }
  if (errno === "ENAMETOOLONG") return { code: "KeyTooLong", message, transient: false };
  return { code: typeof errno === "string" ? errno : "Unknown", message, transient: true };
}

function storeError(e: unknown, key: string): ObjectStoreError {
  const f = fsFailure(e);
  return new ObjectStoreError(`${f.code}: ${f.message}`, {
    code: f.code,
    transient: f.transient,
    key,
    cause: e,
  });
}
