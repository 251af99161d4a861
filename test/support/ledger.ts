import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openObjectStore } from "../../src/adapters/objectstore/open-object-store.js";
import { type Ledger, type LedgerOptions, openLedger } from "../../src/ledger/open-ledger.js";
import type { ObjectStore } from "../../src/storage/object-store.js";
import { openTestDatabase } from "./database.js";

/** A controllable clock: starts at a fixed instant, moves only when told. */
export function testClock(start = "2026-01-01T00:00:00Z") {
  let now = Date.parse(start);
  return {
    now: () => new Date(now),
    advance(ms: number) {
      now += ms;
    },
    set(iso: string) {
      now = Date.parse(iso);
    },
  };
}

/**
 * A ledger on a fresh schema of the suite's backend, with a temporary filesystem dataset root.
 * `close()` drops both.
 */
export async function openTestLedger(
  options: Partial<Omit<LedgerOptions, "database">> & { poolSize?: number } = {},
): Promise<{
  ledger: Ledger;
  root: string;
  dir: string;
  schema: string;
  /** The test database itself, for a test that must act behind the ledger's back. */
  database: Awaited<ReturnType<typeof openTestDatabase>>;
  close(): Promise<void>;
  reopen(extra?: Partial<LedgerOptions>): Promise<Ledger>;
}> {
  const database = await openTestDatabase("ledger", { poolSize: options.poolSize ?? 10 });
  // A test clock set in the past or moved ahead by hand would see every object the filesystem
  // stamps with the real time as written in its future, which the safety window spares: the
  // store's times are shown on the ledger's clock instead (a real store's clock cannot be set).
  // A test that passes its own store, or no clock, gets the store as it is.
  if (options.clock && !options.objectStore) {
    const offset = options.clock().getTime() - Date.now();
    options = { ...options, objectStore: (root) => onClock(openObjectStore(root), offset) };
  }
  const dir = mkdtempSync(join(tmpdir(), "shardledger-"));
  const ledger = await openLedger({
    cleanupAfterPublish: false,
    // openTestDatabase migrated the schema already (riding out other test files' schema drops).
    migrate: false,
    ...options,
    database: database.url === "pglite:memory" ? sharedOf(database) : database.url,
    schema: database.schema,
  });
  const extra: Ledger[] = [];
  return {
    ledger,
    dir,
    root: `file://${dir}`,
    schema: database.schema,
    database,
    async reopen(more = {}) {
      const other = await openLedger({
        cleanupAfterPublish: false,
        migrate: false,
        ...options,
        ...more,
        database: database.url === "pglite:memory" ? sharedOf(database) : database.url,
        schema: database.schema,
      });
      extra.push(other);
      return other;
    },
    async close() {
      for (const l of extra) await l.close();
      await ledger.close();
      await database.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function sharedOf(database: Awaited<ReturnType<typeof openTestDatabase>>) {
  return (database as unknown as { pglite: NonNullable<LedgerOptions["database"]> }).pglite;
}

/**
 * Wraps a store so chosen operations fail: a stand-in for a crash or outage at an exact step,
 * which a real store cannot be told to do (the real store still does everything else).
 */
export function failingStore(
  store: ObjectStore,
  shouldFail: (op: "put" | "get" | "list" | "deleteMany", key: string) => boolean,
): ObjectStore {
  const fail = (op: "put" | "get" | "list" | "deleteMany", key: string) => {
    if (shouldFail(op, key)) throw new Error(`injected failure: ${op} ${key}`);
  };
  return {
    rootUrl: store.rootUrl,
    async list(prefix, options) {
      fail("list", prefix);
      return store.list(prefix, options);
    },
    async deleteMany(keys) {
      fail("deleteMany", keys[0] ?? "");
      return store.deleteMany(keys);
    },
    async put(key, body, options) {
      fail("put", key);
      return store.put(key, body, options);
    },
    async get(key) {
      fail("get", key);
      return store.get(key);
    },
  };
}

/**
 * A store that does what `store` does: spread it and override the one operation a test changes
 * (a stand-in for a fault or a hook at an exact step, which a real store cannot be told to do).
 */
export function delegating(store: ObjectStore): ObjectStore {
  return {
    rootUrl: store.rootUrl,
    list: (prefix, options) => store.list(prefix, options),
    deleteMany: (keys) => store.deleteMany(keys),
    put: (key, body, options) => store.put(key, body, options),
    get: (key) => store.get(key),
  };
}

/**
 * `store` with its objects' times shown on a test clock (`clock`'s instant now ↔ the real time
 * now), for a test that passes its own store and a clock of its own (see openTestLedger).
 */
export function onTestClock(store: ObjectStore, clock: () => Date): ObjectStore {
  return onClock(store, clock().getTime() - Date.now());
}

/** `store` with every listed object's time moved by `offsetMs` (see openTestLedger). */
function onClock(store: ObjectStore, offsetMs: number): ObjectStore {
  return {
    rootUrl: store.rootUrl,
    list: async (prefix, options) => {
      const page = await store.list(prefix, options);
      return {
        ...page,
        objects: page.objects.map((o) => ({
          ...o,
          lastModified: new Date(o.lastModified.getTime() + offsetMs),
        })),
      };
    },
    deleteMany: (keys) => store.deleteMany(keys),
    put: (key, body, options) => store.put(key, body, options),
    get: (key) => store.get(key),
  };
}
