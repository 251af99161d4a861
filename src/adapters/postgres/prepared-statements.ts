/**
 * Statement texts sent to PostgreSQL as named prepared statements. kysely has no API for them: it
 * hands pg a text and its parameters, and pg then parses and plans the text again on every call.
 * For the append statement (two CTEs and an unnest) planning costs more than executing, a third
 * of a single append's server time (bench/RESULTS.md, "Lock-free positions"). A text registered
 * here is given a name once per process; a pg connection prepares it the first time it runs it and
 * reuses the plan after that (PostgreSQL re-plans it by itself when a table it reads changes).
 *
 * Only texts whose result columns never change may be registered (a prepared statement whose
 * result type changes fails with "cached plan must not change result type").
 */
const names = new Map<string, string>();

/**
 * Registers `text` as a prepared statement and returns it unchanged, for use with kysely's
 * `CompiledQuery.raw`.
 *
 * @example
 * ```ts
 * const text = preparedStatement("SELECT version FROM ledger.streams WHERE stream_id = $1")
 * await db.executeQuery(CompiledQuery.raw(text, ["run-r1"]))
 * ```
 */
export function preparedStatement(text: string): string {
  if (!names.has(text)) names.set(text, `shardledger_${names.size + 1}`);
  return text;
}

type Query = (this: unknown, ...args: unknown[]) => unknown;
const patched = new WeakSet<object>();

/**
 * Makes a pg client send every registered text as its named prepared statement. kysely calls
 * `client.query(text, parameters)`; any other call passes through untouched. PGlite needs none of
 * this (its pool does not come here).
 */
export function usePreparedStatements(client: unknown): void {
  const c = client as { query?: Query };
  const query = c.query;
  if (typeof query !== "function" || patched.has(c as object)) return;
  patched.add(c as object);
  c.query = function (this: unknown, ...args: unknown[]) {
    const [text, values] = args;
    const name =
      args.length === 2 && typeof text === "string" && Array.isArray(values) ? names.get(text) : undefined;
    return name === undefined ? query.apply(this, args) : query.call(this, { name, text, values });
  };
}
