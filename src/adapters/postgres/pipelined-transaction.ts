import { CompiledQuery } from "kysely";
import type { Row } from "../../projections/projection-rows.js";

/**
 * Sends one statement of a transaction and answers its rows. A sender may put the statement on
 * the wire before the ones sent before it have answered; the server still runs them one after
 * another, in the order they were sent.
 *
 * @example
 * ```ts
 * import { type Kysely, sql } from "kysely"
 * const readBoth = (send: SendStatement, db: Kysely<Record<string, never>>) =>
 *   Promise.all([send(sql`SELECT 1 AS a`.compile(db)), send(sql`SELECT 2 AS b`.compile(db))])
 * ```
 */
export type SendStatement = (query: CompiledQuery) => Promise<Row[]>;

/**
 * A pg client as a pipelined transaction uses it: pg's `Client` (8.23 and later), whose
 * `pipeline` flag makes it write each query as soon as it is asked instead of after the previous
 * one's answer.
 *
 * @example
 * ```ts
 * import pg from "pg"
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1:5432/ledger" })
 * const client = (await pool.connect()) as unknown as PipelineClient
 * ```
 */
export interface PipelineClient {
  pipeline: boolean;
  query(text: string, values: readonly unknown[]): Promise<{ rows: Row[] }>;
  release(destroy?: boolean | Error): void;
}

/**
 * Checks a client out of the ledger's own pool for a pipelined transaction.
 *
 * @example
 * ```ts
 * import pg from "pg"
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1:5432/ledger" })
 * const connect: ConnectPipelined = async () => (await pool.connect()) as unknown as PipelineClient
 * ```
 */
export type ConnectPipelined = () => Promise<PipelineClient>;

/**
 * A sender over `db`'s kysely connection: each statement starts once the one before it has
 * answered, and a statement behind one that failed is not sent at all (it rejects with that
 * failure), as a transaction the server has aborted would refuse it anyway.
 *
 * @example
 * ```ts
 * const send = sequentialSender((q) => db.executeQuery(q).then((r) => r.rows as Row[]))
 * const [rows] = await Promise.all([send(sql`SELECT 1`.compile(db))])
 * ```
 */
export function sequentialSender(execute: (query: CompiledQuery) => Promise<Row[]>): SendStatement {
  let last: Promise<unknown> = Promise.resolve();
  return (query) => {
    const sent = handled(last.then(() => execute(query)));
    last = sent;
    return sent;
  };
}

/**
 * One transaction on a connection of its own whose statements are written to the server without
 * waiting for the answers to the ones before them (pg's pipeline mode). The server runs them in
 * order, one after another, in the one transaction, exactly as if each had been sent after the
 * previous one answered: only the round trips in between are gone. A group of attempt reports
 * spent a third of its turn on the stream's lock in those round trips — eight statements, each
 * waiting for the process to read the previous answer between other work (bench/RESULTS.md,
 * report-throughput); an append with its projection's reads and then its writes with COMMIT is
 * two.
 *
 * Failure is the transaction's: once a statement fails, the server refuses every statement after
 * it (the transaction is aborted) and answers COMMIT by rolling back. So {@link commit} succeeds
 * only when every statement sent did, and otherwise throws the first failure, in sending order.
 */
export class PipelinedTransaction {
  readonly #client: PipelineClient;
  readonly #sent: Promise<Row[]>[] = [];
  #ended = false;

  private constructor(client: PipelineClient) {
    this.#client = client;
  }

  /** Checks out a client, turns its pipeline on and sends BEGIN (not waiting for its answer). */
  static async begin(connect: ConnectPipelined): Promise<PipelinedTransaction> {
    const client = await connect();
    client.pipeline = true;
    const tx = new PipelinedTransaction(client);
    tx.send(CompiledQuery.raw("BEGIN"));
    return tx;
  }

  /** Sends a statement now; its answer comes in order. @see SendStatement */
  readonly send: SendStatement = (query) => {
    if (this.#ended) return Promise.reject(new Error("the pipelined transaction has ended"));
    const answered = handled(this.#client.query(query.sql, query.parameters).then((r) => r.rows));
    this.#sent.push(answered);
    return answered;
  };

  /**
   * Sends COMMIT and waits for every statement: resolves when all of them, COMMIT included,
   * succeeded (the transaction committed); otherwise throws the first failure (it rolled back, or
   * a lost connection left the outcome to the server). Gives the connection back either way.
   */
  async commit(): Promise<void> {
    this.send(CompiledQuery.raw("COMMIT"));
    await this.#end();
  }

  /** Sends ROLLBACK (a no-op on a transaction the server has aborted) and gives the connection back. */
  async rollback(): Promise<void> {
    if (this.#ended) return;
    this.send(CompiledQuery.raw("ROLLBACK"));
    await this.#end().catch(() => {});
  }

  async #end(): Promise<void> {
    this.#ended = true;
    const outcomes = await Promise.allSettled(this.#sent);
    const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === "rejected");
    // A connection that failed under a statement (not a statement the server refused) may hold
    // anything: it is closed, not reused.
    const broken = failed !== undefined && !leavesSessionSound(failed.reason);
    if (!broken) this.#client.pipeline = false;
    this.#client.release(broken ? (failed.reason as Error) : undefined);
    if (failed) throw failed.reason;
  }
}

/**
 * `p`, with its failure marked as seen. A statement sent ahead may fail while its sender is still
 * on another step, or after an earlier failure it has already thrown; whoever awaits it still gets
 * the failure, and one that nobody awaits must not end the process.
 */
export function handled<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

/**
 * Whether the server refused a statement and kept the session: an error it answered (it has a
 * SQLSTATE) at severity ERROR. A FATAL or PANIC one (an administrator's pg_terminate_backend is
 * FATAL 57P01), a connection exception (class 08), an operator's shutdown (57P0x) or an error with
 * no SQLSTATE (a socket that broke) ends or may have ended the session. A server whose messages
 * are not in English names the severity in its own language: its connections are then closed on
 * every failure, which costs a reconnect and never reuses a broken one.
 */
function leavesSessionSound(e: unknown): boolean {
  const { code, severity } = (e ?? {}) as { code?: unknown; severity?: unknown };
  if (typeof code !== "string" || !/^[0-9A-Z]{5}$/.test(code)) return false;
  return severity === "ERROR" && !code.startsWith("08") && !code.startsWith("57P");
}
