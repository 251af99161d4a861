import type { PostgresPool, PostgresPoolClient, PostgresQueryResult } from "kysely";

/**
 * The structural subset of PGlite this adapter needs, so callers may pass their own instance.
 * Written out rather than picked from PGlite's class: the published types then compile without
 * PGlite's declarations, which need the DOM and Emscripten typings a Node program lacks.
 *
 * @example
 * ```ts
 * import { PGlite } from "@electric-sql/pglite"
 * const ledger = await openLedger({ database: new PGlite() })
 * ```
 */
export interface PGliteLike {
  query<T>(query: string, params?: unknown[]): Promise<{ rows: T[]; affectedRows?: number }>;
  close(): Promise<void>;
  readonly waitReady: Promise<void>;
}

/**
 * Presents one PGlite instance to kysely's PostgresDialect as a pool of exactly one connection.
 * PGlite is a single backend: a transaction started by one caller would otherwise swallow another
 * caller's statements, so connections are handed out one at a time, in order.
 *
 * @example
 * ```ts
 * const db = new Kysely({ dialect: new PostgresDialect({ pool: createPglitePool(pglite) }) })
 * ```
 */
export function createPglitePool(pglite: PGliteLike, options: { closeOnEnd?: boolean } = {}): PostgresPool {
  // The queue belongs to the PGlite instance, not to this pool: two ledgers opened on one instance
  // must still take turns.
  let queue = queues.get(pglite);
  if (!queue) {
    queue = { tail: Promise.resolve() };
    queues.set(pglite, queue);
  }
  const shared = queue;
  const client = (release: () => void): PostgresPoolClient => ({
    query: (async (sql: string, parameters: readonly unknown[]) => {
      const result = await pglite.query(sql, parameters as unknown[]);
      return {
        command: (result as { command?: string }).command ?? firstWord(sql),
        rowCount: result.affectedRows ?? result.rows.length,
        rows: result.rows,
      } as PostgresQueryResult<unknown>;
    }) as PostgresPoolClient["query"],
    release,
  });
  return {
    async connect() {
      let release!: () => void;
      const next = new Promise<void>((resolve) => {
        release = resolve;
      });
      const previous = shared.tail;
      shared.tail = previous.then(() => next);
      await previous;
      await pglite.waitReady;
      let released = false;
      return client(() => {
        if (!released) {
          released = true;
          release();
        }
      });
    },
    async end() {
      await shared.tail;
      if (options.closeOnEnd !== false) await pglite.close();
    },
  };
}

const queues = new WeakMap<PGliteLike, { tail: Promise<void> }>();

function firstWord(sql: string): string {
  return sql.trimStart().split(/\s/, 1)[0]?.toUpperCase() ?? "";
}
