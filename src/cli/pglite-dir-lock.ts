import { closeSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { LockedError } from "../errors.js";

/**
 * A held lock; `release()` is idempotent.
 *
 * @example `const lock = await acquireDirLock(dir, 10_000); lock.release()`
 */
export interface DirLock {
  readonly path: string;
  release(): void;
}

/**
 * Takes the lock file `<dir>.lock` (beside the directory: PGlite owns the inside) holding our pid.
 * PGlite is one Postgres backend inside one process; two processes opening the same directory
 * would corrupt it, so a second CLI waits up to `timeoutMs` and then fails with `LOCKED`. A lock
 * left by a process that died is taken over.
 *
 * @example
 * ```ts
 * const lock = await acquireDirLock("/data/.shardledger/db", 10_000)
 * try { … } finally { lock.release() }
 * ```
 */
export async function acquireDirLock(dir: string, timeoutMs: number): Promise<DirLock> {
  const path = `${dir}.lock`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const lock = tryCreate(path);
    if (lock) return lock;
    const holder = readHolder(path);
    if (holder === "stale") {
      try {
        unlinkSync(path);
      } catch {
        // Another process took it over first; go round again.
      }
      continue;
    }
    if (Date.now() >= deadline) {
      throw new LockedError(
        `pglite:${dir} is open in another process${holder === "unknown" ? "" : ` (pid ${holder})`}; PGlite serves one process at a time — wait for it, or use a PostgreSQL server for concurrent writers`,
        { details: { lock: path, pid: holder } },
      );
    }
    await sleep(100);
  }
}

function tryCreate(path: string): DirLock | null {
  let fd: number;
  try {
    fd = openSync(path, "wx");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return null;
    throw e;
  }
  try {
    writeSync(fd, `${process.pid}\n`);
  } finally {
    closeSync(fd);
  }
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    process.off("exit", release);
    try {
      if (readFileSync(path, "utf8").trim() === String(process.pid)) unlinkSync(path);
    } catch {
      // Already gone.
    }
  };
  // A crash that still runs exit handlers leaves no lock behind; a kill -9 leaves a stale one,
  // which the next process detects by the dead pid.
  process.on("exit", release);
  return { path, release };
}

function readHolder(path: string): number | "unknown" | "stale" {
  let text: string;
  let ageMs: number;
  try {
    text = readFileSync(path, "utf8").trim();
    ageMs = Date.now() - statSync(path).mtimeMs;
  } catch {
    return "stale";
  }
  const pid = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(pid)) {
    // Created but not yet written by its owner, unless it has been like that for a while.
    return ageMs > 5_000 ? "stale" : "unknown";
  }
  if (pid === process.pid) return pid;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM" ? pid : "stale";
  }
}
