/**
 * Random histories for the safety-interleaving property, and the runner that plays one against
 * real ledger instances and a real object store, checking the oracle (safety-oracle.ts) after
 * every step.
 *
 * A history is data: one or two datasets (sibling roots) with their policies, and 1–12 steps.
 * Steps name runs and attempts by small indices counted from the newest (resolved when the step
 * runs, skipped when there is nothing to name), so that fast-check can drop any step while
 * shrinking and the rest still makes sense.
 */
import fc from "fast-check";
import { isShardledgerError, type Ledger, type ObjectStore, ObjectStoreError } from "../../src/index.js";
import {
  createFaultyStore,
  currentOp,
  type FaultAction,
  Interleaver,
  runAsOp,
  type StoreCall,
} from "./faulty-store.js";
import {
  type DsName,
  type ModelAttempt,
  type ModelDataset,
  type Policies,
  SafetyOracle,
  type Violation,
} from "./safety-oracle.js";
import { insideRunArea } from "./safety-semantics.js";
import type { StoreBackend, StoreSnapshot } from "./safety-world.js";

// ---------------------------------------------------------------------------- the generated data

/** How a writer names the part files it writes: odd characters are legal keys. */
export type KeyStyle = "plain" | "space" | "hash" | "unicode";
/**
 * How a writer reports where an attempt's data is: its directory (a prefix, with or without a
 * trailing slash), the one object it wrote, no url, another attempt's directory of the same
 * dataset (a confused writer), or a url outside the root (refused at the door).
 */
export type UrlStyle = "prefix" | "slash" | "object" | "none" | "misdirect" | "foreign";
export interface UrlSpec {
  style: UrlStyle;
  /** `FILE://…` / `S3://…`: the scheme in upper case. */
  upper: boolean;
  /** Percent-encode the object's name (else literal, with `#` → `%23`, which a URL requires). */
  encode: boolean;
  /** Which other attempt a misdirected url names. */
  other: number;
}
export type Outcome = "started" | "succeeded" | "failed";
/** Faults of deleteMany: a thrown transient error, per-key AccessDenied, or one key failing transiently. */
export type DeleteFault = "none" | "transient" | "permanent" | "perkey";
/** Faults of publish's puts: the manifest put fails, the `_CURRENT` put fails, or it succeeds but its response is lost. */
export type PublishFault = "none" | "manifest" | "current" | "current-lost";

export type PublishOp = { t: "publish"; ds: number; run: number; fault: PublishFault };
/**
 * Maintenance passes run at a generated concurrency: cleanup's prefixes in flight, gc's orphan
 * deletions in flight (1 is the sequential pass), so that rule R7 sees passes fenced off with
 * requests in flight and queued behind the rate limiter.
 */
export type Concurrency = 1 | 4 | 16;
export type GcOp = {
  t: "gc";
  ds: number;
  dry: boolean;
  fault: DeleteFault;
  times: number;
  concurrency: Concurrency;
};
export type CleanupOp = {
  t: "cleanup";
  ds: number;
  dry: boolean;
  fault: DeleteFault;
  times: number;
  concurrency: Concurrency;
};
export type WriteOp = {
  t: "write";
  ds: number;
  run: number;
  shard: number;
  attempt: number;
  tid: number | null;
  key: KeyStyle;
  report: Outcome | "none";
  url: UrlSpec;
};
export type ReportOp = {
  t: "report";
  ds: number;
  run: number;
  which: number;
  outcome: Outcome;
  url: UrlSpec;
};
export type HeartbeatOp = { t: "heartbeat"; ds: number; run: number };
export type FailOp = { t: "fail"; ds: number; run: number };
export type RetryOp = { t: "retry"; ds: number; run: number | null };
/** Operations that may run concurrently with another. */
export type ConcurrentOp = PublishOp | GcOp | CleanupOp | WriteOp | ReportOp | HeartbeatOp | FailOp | RetryOp;

export type Step =
  | { t: "start"; ds: number; shards: number }
  | { t: "fill"; ds: number; run: number; url: UrlSpec; losers: number }
  /** A whole write: start a run, fill every shard (with losers), publish it. */
  | { t: "cycle"; ds: number; shards: number; url: UrlSpec; losers: number; fault: PublishFault }
  | { t: "advance"; ms: number }
  | { t: "crash"; op: PublishOp | GcOp | CleanupOp; at: number; after: boolean }
  /** A maintenance pass whose lease is revoked before store call #at (see LOST_LEASE_EXTENSION). */
  | { t: "lease"; op: GcOp | CleanupOp; at: number }
  | { t: "concurrent"; ops: [ConcurrentOp, ConcurrentOp]; choices: number[] }
  /**
   * Never generated: the oracle's own tests use it to delete, behind the ledger's back, the first
   * object (in key order) the test wrote whose base key matches, to show that the oracle notices.
   */
  | { t: "tamper"; match: string }
  | ConcurrentOp;

export interface History {
  datasets: Policies[];
  steps: Step[];
}

/**
 * Lost maintenance leases (SPEC "Safety rails": "a pass that lost its lock (its connection died)
 * stops before its next request (fencing)"). `lease` steps run a gc or cleanup whose lease is
 * revoked right before its store call #at — `loseLease` bumps the dataset's lease epoch, exactly
 * what another pass acquiring the lease does — and the runner reports any store request the pass
 * makes after that (rule R7), on top of every other rule. Strict at every concurrency: the
 * moment the revocation's commit is seen (its UPDATE answered), any later store call of the pass
 * is a violation, whether it was queued behind the rate limiter, waiting for a pool slot or
 * checked before the revocation. The suite sets `loseLease`, since it
 * holds the database (test/support/safety-suite.ts).
 */
export const LOST_LEASE_EXTENSION: {
  enabled: boolean;
  loseLease?: (ledger: Ledger, datasetId: string) => Promise<void>;
} = { enabled: true };

const S = 1000;
const M = 60 * S;
const H = 60 * M;
const D = 24 * H;

const ds = fc.nat(1);
const runRef = fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.nat(3) });
const urlSpec = (styles: fc.Arbitrary<UrlStyle>): fc.Arbitrary<UrlSpec> =>
  fc.record({
    style: styles,
    upper: fc.nat(5).map((n) => n === 5),
    encode: fc.boolean(),
    other: fc.nat(5),
  });
const anyUrl = urlSpec(
  fc.oneof(
    { weight: 6, arbitrary: fc.constant<UrlStyle>("prefix") },
    { weight: 1, arbitrary: fc.constant<UrlStyle>("slash") },
    { weight: 2, arbitrary: fc.constant<UrlStyle>("object") },
    { weight: 2, arbitrary: fc.constant<UrlStyle>("none") },
    { weight: 3, arbitrary: fc.constant<UrlStyle>("misdirect") },
    { weight: 1, arbitrary: fc.constant<UrlStyle>("foreign") },
  ),
);
const fillUrl = urlSpec(
  fc.oneof(
    { weight: 6, arbitrary: fc.constant<UrlStyle>("prefix") },
    { weight: 2, arbitrary: fc.constant<UrlStyle>("object") },
    { weight: 2, arbitrary: fc.constant<UrlStyle>("none") },
    { weight: 1, arbitrary: fc.constant<UrlStyle>("slash") },
  ),
);
const outcome = fc.oneof(
  { weight: 4, arbitrary: fc.constant<Outcome>("succeeded") },
  { weight: 1, arbitrary: fc.constant<Outcome>("started") },
  { weight: 1, arbitrary: fc.constant<Outcome>("failed") },
);
const keyStyle = fc.oneof(
  { weight: 4, arbitrary: fc.constant<KeyStyle>("plain") },
  { weight: 1, arbitrary: fc.constantFrom<KeyStyle>("space", "hash", "unicode") },
);
const deleteFault = fc.oneof(
  { weight: 4, arbitrary: fc.constant<DeleteFault>("none") },
  { weight: 1, arbitrary: fc.constantFrom<DeleteFault>("transient", "permanent", "perkey") },
);

const publishOp = (faults: boolean): fc.Arbitrary<PublishOp> =>
  fc.record({
    t: fc.constant("publish" as const),
    ds,
    run: runRef,
    fault: faults
      ? fc.oneof(
          { weight: 3, arbitrary: fc.constant<PublishFault>("none") },
          { weight: 1, arbitrary: fc.constantFrom<PublishFault>("manifest", "current", "current-lost") },
        )
      : fc.constant<PublishFault>("none"),
  });
/** Shrinks toward the sequential pass. */
const concurrency = fc.constantFrom<Concurrency>(1, 4, 16);
const gcOp = (faults: boolean): fc.Arbitrary<GcOp> =>
  fc.record({
    t: fc.constant("gc" as const),
    ds,
    dry: fc.nat(5).map((n) => n === 5),
    fault: faults ? deleteFault : fc.constant<DeleteFault>("none"),
    times: fc.integer({ min: 1, max: 3 }),
    concurrency,
  });
const cleanupOp = (faults: boolean): fc.Arbitrary<CleanupOp> =>
  fc.record({
    t: fc.constant("cleanup" as const),
    ds,
    dry: fc.nat(5).map((n) => n === 5),
    fault: faults ? deleteFault : fc.constant<DeleteFault>("none"),
    times: fc.integer({ min: 1, max: 3 }),
    concurrency,
  });
const writeOp: fc.Arbitrary<WriteOp> = fc.record({
  t: fc.constant("write" as const),
  ds,
  run: runRef,
  shard: fc.nat(2),
  attempt: fc.nat(3),
  tid: fc.option(fc.nat(2), { freq: 3 }),
  key: keyStyle,
  report: fc.oneof({ weight: 5, arbitrary: outcome }, { weight: 1, arbitrary: fc.constant<"none">("none") }),
  url: anyUrl,
});
const reportOp: fc.Arbitrary<ReportOp> = fc.record({
  t: fc.constant("report" as const),
  ds,
  run: runRef,
  which: fc.nat(4),
  outcome,
  url: anyUrl,
});
const heartbeatOp: fc.Arbitrary<HeartbeatOp> = fc.record({
  t: fc.constant("heartbeat" as const),
  ds,
  run: runRef,
});
const failOp: fc.Arbitrary<FailOp> = fc.record({ t: fc.constant("fail" as const), ds, run: runRef });
const retryOp: fc.Arbitrary<RetryOp> = fc.record({
  t: fc.constant("retry" as const),
  ds,
  run: fc.option(runRef, { freq: 2 }),
});

const advanceMs = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 90 }).map((n) => n * S) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 120 }).map((n) => n * M) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 48 }).map((n) => n * H) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 10 }).map((n) => n * D) },
);

/** The pairs worth interleaving: maintenance against publish, reports and heartbeats, and each other. */
const concurrentPair: fc.Arbitrary<[ConcurrentOp, ConcurrentOp]> = fc.oneof(
  { weight: 2, arbitrary: fc.tuple(gcOp(false), publishOp(false)) },
  { weight: 3, arbitrary: fc.tuple(gcOp(false), heartbeatOp) },
  { weight: 1, arbitrary: fc.tuple(heartbeatOp, gcOp(false)) },
  { weight: 2, arbitrary: fc.tuple(gcOp(false), fc.oneof(reportOp, writeOp)) },
  { weight: 2, arbitrary: fc.tuple(cleanupOp(false), fc.oneof(reportOp, writeOp)) },
  { weight: 1, arbitrary: fc.tuple(cleanupOp(false), publishOp(false)) },
  { weight: 1, arbitrary: fc.tuple(gcOp(false), cleanupOp(false)) },
  { weight: 1, arbitrary: fc.tuple(publishOp(false), fc.oneof(reportOp, writeOp)) },
  { weight: 1, arbitrary: fc.tuple(publishOp(false), publishOp(false)) },
  { weight: 1, arbitrary: fc.tuple(gcOp(false), fc.oneof(failOp, retryOp)) },
);

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      t: fc.constant("cycle" as const),
      ds,
      shards: fc.integer({ min: 1, max: 2 }),
      url: fillUrl,
      losers: fc.nat(1),
      fault: fc.oneof(
        { weight: 4, arbitrary: fc.constant<PublishFault>("none") },
        { weight: 1, arbitrary: fc.constantFrom<PublishFault>("manifest", "current", "current-lost") },
      ),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ t: fc.constant("start" as const), ds, shards: fc.integer({ min: 1, max: 3 }) }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant("fill" as const),
      ds,
      run: runRef,
      url: fillUrl,
      losers: fc.nat(2),
    }),
  },
  { weight: 3, arbitrary: writeOp },
  { weight: 2, arbitrary: reportOp },
  { weight: 1, arbitrary: heartbeatOp },
  { weight: 4, arbitrary: fc.record({ t: fc.constant("advance" as const), ms: advanceMs }) },
  { weight: 3, arbitrary: publishOp(true) },
  { weight: 4, arbitrary: gcOp(true) },
  { weight: 2, arbitrary: cleanupOp(true) },
  { weight: 1, arbitrary: retryOp },
  { weight: 1, arbitrary: failOp },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("crash" as const),
      op: fc.oneof(publishOp(false), gcOp(false), cleanupOp(false)),
      at: fc.nat(4),
      after: fc.boolean(),
    }),
  },
  {
    // As often as a crash or more: a small pass makes only a few store calls, so `at` stays low.
    weight: LOST_LEASE_EXTENSION.enabled ? 3 : 0,
    arbitrary: fc.record({
      t: fc.constant("lease" as const),
      op: fc.oneof(gcOp(false), cleanupOp(false)),
      at: fc.nat(2),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      t: fc.constant("concurrent" as const),
      ops: concurrentPair,
      choices: fc.array(fc.nat(3), { maxLength: 12 }),
    }),
  },
);

const policies: fc.Arbitrary<Policies> = fc.record({
  keepRuns: fc.integer({ min: 1, max: 3 }),
  safetyWindowMs: fc.constantFrom(0, 0, 1 * S, 10 * S, 60 * S),
  staleAfterMs: fc.constantFrom(30 * S, 5 * M, 1 * H),
  failedRetentionMs: fc.constantFrom(1 * M, 1 * H, 1 * D),
  retentionMs: fc.constantFrom(1 * H, 1 * D, 7 * D, 30 * D),
});

/**
 * Histories: one dataset (three in four) or two sibling datasets, and `minSteps`–`maxSteps` steps.
 *
 * @example
 * ```ts
 * fc.assert(fc.asyncProperty(historyArbitrary(), (h) => …))
 * ```
 */
export function historyArbitrary(
  options: { minSteps?: number; maxSteps?: number } = {},
): fc.Arbitrary<History> {
  return fc.record({
    datasets: fc.oneof(
      { weight: 3, arbitrary: fc.tuple(policies) },
      { weight: 1, arbitrary: fc.tuple(policies, policies) },
    ),
    steps: fc.array(step, { minLength: options.minSteps ?? 1, maxLength: options.maxSteps ?? 12 }),
  });
}

// ---------------------------------------------------------------------------- running a history

/** What the runner needs from the suite: the clock, the observer and new ledger instances. */
export interface SafetyEnv {
  clock: { now(): Date; advance(ms: number): void };
  /** A ledger instance that only reads (the oracle's view of the log and the pending set). */
  observer: Ledger;
  /** Opens a NEW ledger instance on the suite's database whose stores come from `objectStore`. */
  openLedger(objectStore: (rootUrl: string) => ObjectStore): Promise<Ledger>;
}

/** The per-operation fault plan, carried by the operation's context (faulty-store.ts). */
interface FaultPlan {
  publishFault: PublishFault;
  deleteFault: DeleteFault;
  deleteFaultsLeft: number;
  crashAt: number | null;
  crashAfter: boolean;
  /** Revoke the pass's lease before this store call (LOST_LEASE_EXTENSION). */
  loseLeaseAt: number | null;
  leaseLost: boolean;
  datasetId: string | null;
  ledger: Ledger | null;
}

const describeUrl = (u: UrlSpec): string =>
  `${u.style}${u.upper ? ", upper-case scheme" : ""}${u.style === "object" ? (u.encode ? ", percent-encoded" : ", literal") : ""}`;

/** An operation resolved against the model: what it is, its label, its fault plan, and the call. */
interface Prepared {
  kind: ConcurrentOp["t"];
  label: string;
  plan: FaultPlan | null;
  /** Runs the operation on one ledger instance. */
  fn: (ledger: Ledger) => Promise<string | undefined>;
}

/** The refusals each operation's contract allows (anything else it throws is an R6 violation). */
const ALLOWED_REFUSALS: Record<ConcurrentOp["t"], readonly string[]> = {
  publish: ["SHARD_COVERAGE", "ILLEGAL_TRANSITION", "CONCURRENCY"],
  // LEASE_LOST: a pass fenced off midway stops (gc throws it; cleanup reports it per dataset).
  gc: ["LOCKED", "CONCURRENCY", "LEASE_LOST"],
  cleanup: ["LOCKED", "CONCURRENCY", "LEASE_LOST"],
  write: ["CONTRADICTING_REPORT", "ILLEGAL_TRANSITION", "CONCURRENCY"],
  report: ["CONTRADICTING_REPORT", "ILLEGAL_TRANSITION", "CONCURRENCY"],
  heartbeat: ["ILLEGAL_TRANSITION", "CONCURRENCY"],
  fail: ["ILLEGAL_TRANSITION", "CONCURRENCY"],
  retry: ["ILLEGAL_TRANSITION", "CONCURRENCY"],
};

const INJECTED = "[injected]";
const CRASH = "[injected crash]";

function isInjected(e: unknown): boolean {
  for (let x = e, depth = 0; x && depth < 6; x = (x as { cause?: unknown }).cause, depth++) {
    if (x instanceof Error && (x.message.includes(INJECTED) || x.message.includes(CRASH))) return true;
  }
  return false;
}

const pad = (n: number, width: number) => String(n).padStart(width, "0");
const PART_NAMES: Record<KeyStyle, (i: number) => string> = {
  plain: (i) => `part-${i}`,
  space: (i) => `part ${i}`,
  hash: (i) => `part#${i}`,
  unicode: (i) => `pärt-${i}-データ`,
};

/** The result of one history: its violations and a readable trace of what was done. */
export interface HistoryResult {
  violations: Violation[];
  trace: string[];
  /** Base keys of the objects the test wrote that are still in the store after the final pass. */
  remaining: string[];
}

/**
 * Plays `history` under base location `backend` with ids prefixed `id`, and returns every
 * violation the oracle found (an empty list: the history is safe).
 */
export async function runHistory(
  env: SafetyEnv,
  backend: StoreBackend,
  id: string,
  history: History,
): Promise<HistoryResult> {
  const runner = new Runner(env, backend, id, history);
  try {
    await runner.play();
  } finally {
    await runner.dispose();
  }
  return { violations: runner.oracle.violations, trace: runner.trace, remaining: runner.remaining };
}

class Runner {
  readonly oracle: SafetyOracle;
  readonly trace: string[] = [];
  remaining: string[] = [];
  readonly #env: SafetyEnv;
  readonly #backend: StoreBackend;
  readonly #id: string;
  readonly #history: History;
  readonly #workers: Ledger[] = [];
  #ledger!: Ledger;
  #peer: Ledger | null = null;
  #instance = { dead: false, n: 0 };
  #bodies = 0;
  #hung = false;
  #interleaver: Interleaver | null = null;
  #lastSnapshot: StoreSnapshot | null = null;

  constructor(env: SafetyEnv, backend: StoreBackend, id: string, history: History) {
    this.#env = env;
    this.#backend = backend;
    this.#id = id;
    this.#history = history;
    this.oracle = new SafetyOracle({
      observer: env.observer,
      now: () => env.clock.now().getTime(),
      read: (k) => backend.read(k),
    });
  }

  async play(): Promise<void> {
    await this.#openWorker();
    await this.#setup();
    for (const [i, s] of this.#history.steps.entries()) {
      this.oracle.step = i;
      this.oracle.stepLabel = this.#label(s);
      const note = await this.#bounded(this.#step(s));
      this.trace.push(`${i}: ${this.oracle.stepLabel}${note ? ` → ${note}` : ""}`);
      if (this.#hung) return;
      await this.#check();
    }
    await this.#bounded(this.#finalPass());
  }

  /**
   * A step that never finishes (a lock never released, a deadlock) is a liveness violation; the
   * history stops there (its operations still hold whatever they hold).
   */
  async #bounded<T>(work: Promise<T>): Promise<T | string> {
    let timer: NodeJS.Timeout | undefined;
    const limit = Number(process.env.SAFETY_STEP_TIMEOUT_MS ?? 60_000);
    const hung = new Promise<string>((resolve) => {
      timer = setTimeout(() => {
        this.#hung = true;
        const il = this.#interleaver;
        this.oracle.violate(
          "R4",
          `hung ${this.oracle.step}`,
          `the step did not finish within ${limit} ms${il ? `; interleaving so far: ${il.trace.join(" → ")}` : ""}`,
          "a step never finished",
        );
        resolve("HUNG");
      }, limit);
    });
    try {
      return await Promise.race([work, hung]);
    } finally {
      clearTimeout(timer);
    }
  }

  async dispose(): Promise<void> {
    // A hung history's ledger instances may never close: leave them.
    if (!this.#hung) for (const l of this.#workers) await l.close().catch(() => {});
    if (process.env.SAFETY_KEEP !== "1") await this.#backend.dispose();
  }

  // ------------------------------------------------------------------ ledger instances and faults

  /** A second ledger instance on the same database, for the second of two concurrent operations. */
  async #peerLedger(): Promise<Ledger> {
    this.#peer ??= (await this.#newInstance()).ledger;
    return this.#peer;
  }

  async #openWorker(): Promise<void> {
    const { ledger, instance } = await this.#newInstance();
    this.#ledger = ledger;
    this.#instance = instance;
  }

  async #newInstance(): Promise<{ ledger: Ledger; instance: { dead: boolean; n: number } }> {
    const instance = { dead: false, n: this.#workers.length };
    const controller = {
      beforeCall: (call: StoreCall) => this.#beforeCall(instance, call),
      beforeDelete: (root: string, keys: readonly string[]) =>
        this.oracle.onDelete(root, keys).catch((e: unknown) => {
          this.oracle.violate(
            "HARNESS",
            root,
            `the oracle failed while checking a deletion: ${String(e)}`,
            "oracle error",
          );
        }),
    };
    const ledger = await this.#env.openLedger((root) =>
      createFaultyStore(this.#backend.store(root), controller),
    );
    this.#workers.push(ledger);
    return { ledger, instance };
  }

  async #beforeCall(instance: { dead: boolean; n: number }, call: StoreCall): Promise<FaultAction> {
    if (instance.dead)
      return {
        kind: "throw",
        error: new Error(`${CRASH} ${call.op} ${call.key}: this ledger instance crashed`),
      };
    const ctx = currentOp();
    if (ctx?.interleaver) await ctx.interleaver.gate(ctx.op, `${ctx.label}: ${call.op} ${call.key}`);
    const plan = ctx?.data as FaultPlan | undefined;
    if (!ctx || !plan) return { kind: "pass" };
    const index = ctx.calls++;
    if (plan.loseLeaseAt === index && plan.datasetId && plan.ledger && LOST_LEASE_EXTENSION.loseLease) {
      await LOST_LEASE_EXTENSION.loseLease(plan.ledger, plan.datasetId);
      plan.leaseLost = true;
    } else if (plan.leaseLost) {
      this.oracle.violate(
        "R7",
        `${ctx.label} after lease loss`,
        `${ctx.label} made a store request (${call.op} ${call.key}) after its lease was revoked`,
        "a pass kept going after losing its lease",
      );
    }
    if (plan.crashAt === index) {
      instance.dead = true;
      return {
        kind: "throw",
        error: new Error(
          `${CRASH} the process died ${plan.crashAfter ? "after" : "before"} ${call.op} ${call.key}`,
        ),
        after: plan.crashAfter,
      };
    }
    if (call.op === "put" && plan.publishFault !== "none") {
      const target =
        plan.publishFault === "manifest" ? call.key.startsWith("manifests/") : call.key === "_CURRENT";
      if (target) {
        const lost = plan.publishFault === "current-lost";
        plan.publishFault = "none";
        return {
          kind: "throw",
          error: new ObjectStoreError(
            `${INJECTED} ${lost ? "response lost after put" : "put failed"}: ${call.key}`,
            {
              code: lost ? "RequestTimeout" : "InternalError",
              transient: true,
            },
          ),
          after: lost,
        };
      }
    }
    if (call.op === "deleteMany" && plan.deleteFault !== "none" && plan.deleteFaultsLeft > 0) {
      plan.deleteFaultsLeft--;
      if (plan.deleteFault === "transient")
        return {
          kind: "throw",
          error: new ObjectStoreError(`${INJECTED} SlowDown: please reduce your request rate`, {
            code: "SlowDown",
            transient: true,
          }),
        };
      const failing = plan.deleteFault === "permanent" ? call.keys : call.keys.slice(0, 1);
      return {
        kind: "perKey",
        failures: failing.map((key) => ({
          key,
          code: plan.deleteFault === "permanent" ? "AccessDenied" : "InternalError",
          message: `${INJECTED} ${plan.deleteFault === "permanent" ? "Access Denied" : "We encountered an internal error"}`,
          transient: plan.deleteFault !== "permanent",
        })),
      };
    }
    return { kind: "pass" };
  }

  // ------------------------------------------------------------------ the steps

  #dataset(i: number): ModelDataset {
    const all = [...this.oracle.datasets.values()];
    return all[i % all.length]!;
  }

  #runOf(dsIndex: number, ref: number) {
    const d = this.#dataset(dsIndex);
    const runs = [...this.oracle.runs.values()].filter((r) => r.ds === d.name);
    return runs.length === 0 ? undefined : runs[runs.length - 1 - (ref % runs.length)];
  }

  async #setup(): Promise<void> {
    const names: DsName[] = ["A", "B"];
    for (const [i, p] of this.#history.datasets.entries()) {
      const name = names[i]!;
      const dir = `ds${name}`;
      const d: ModelDataset = {
        name,
        datasetId: `${this.#id}-${name}`,
        dir,
        root: this.#backend.url(dir),
        policies: p,
      };
      await this.#ledger.createDataset({
        datasetId: d.datasetId,
        root: d.root,
        keepRuns: p.keepRuns,
        safetyWindow: p.safetyWindowMs,
        staleAfter: p.staleAfterMs,
        failedRetention: p.failedRetentionMs,
        retention: p.retentionMs,
      });
      this.oracle.addDataset(d);
      // Inside the root but outside data/ (and a name that merely starts with "data").
      for (const k of ["notes/keep", "manifests/keep.txt", "datax/keep"]) await this.#write(d, k, null);
      // Outside every root: a sibling whose name starts with the root's.
      await this.#writeOutside(`${dir}2/data/x/part-0`);
    }
    await this.#writeOutside("sentinel/keep");
    this.oracle.step = -1;
    this.oracle.stepLabel = "setup";
    await this.#check();
  }

  async #write(d: ModelDataset, dsKey: string, owner: string | null): Promise<void> {
    const baseKey = `${d.dir}/${dsKey}`;
    const body = `${baseKey} #${this.#bodies++}`;
    const writtenAt = await this.#backend.write(baseKey, body, this.#env.clock.now().getTime());
    this.oracle.addObject({ baseKey, ds: d.name, dsKey, body, writtenAt, owner });
  }

  async #writeOutside(baseKey: string): Promise<void> {
    const body = `${baseKey} #${this.#bodies++}`;
    const writtenAt = await this.#backend.write(baseKey, body, this.#env.clock.now().getTime());
    this.oracle.addObject({ baseKey, ds: null, dsKey: null, body, writtenAt, owner: null });
  }

  /** Writes one more part of an attempt (creating the attempt); returns the attempt. */
  async #writeAttempt(
    d: ModelDataset,
    runId: string,
    shard: number,
    attempt: number,
    tid: string | null,
    key: KeyStyle,
  ): Promise<ModelAttempt> {
    const dir = `data/${runId}/shard=${pad(shard, 5)}/attempt=${pad(attempt, 2)}${tid === null ? "" : `-${tid}`}`;
    const a = this.oracle.attempt(d.name, runId, shard, attempt, tid, dir);
    await this.#write(d, `${dir}/${PART_NAMES[key](a.objects.length)}`, a.id);
    return a;
  }

  /** The url a writer reports for attempt `a` (and whether it lies outside the root). */
  #urlFor(d: ModelDataset, a: ModelAttempt, spec: UrlSpec): { url: string | null; foreign: boolean } {
    let url: string;
    let foreign = false;
    switch (spec.style) {
      case "none":
        return { url: null, foreign: false };
      case "prefix":
        url = `${d.root}/${a.dir}`;
        break;
      case "slash":
        url = `${d.root}/${a.dir}/`;
        break;
      case "object": {
        const last = a.objects[a.objects.length - 1];
        const name = last === undefined ? "part-0" : last.slice(last.lastIndexOf("/") + 1);
        const spelled = spec.encode
          ? encodeURIComponent(name)
          : name.replace(/%/g, "%25").replace(/#/g, "%23");
        url = `${d.root}/${a.dir}/${spelled}`;
        break;
      }
      case "misdirect": {
        // Another run's attempt when there is one (the dangerous case), else a sibling's.
        const same = [...this.oracle.attempts.values()].filter((o) => o.ds === d.name && o.id !== a.id);
        const otherRuns = same.filter((o) => o.runId !== a.runId);
        const pool = otherRuns.length > 0 ? otherRuns : same;
        const target = pool.length === 0 ? a : pool[pool.length - 1 - (spec.other % pool.length)]!;
        url = `${d.root}/${target.dir}`;
        break;
      }
      case "foreign": {
        const other = [...this.oracle.datasets.values()].find((o) => o.name !== d.name);
        url = other ? `${other.root}/${a.dir}` : `${this.#backend.url("sentinel")}/${a.dir}`;
        foreign = true;
        break;
      }
    }
    if (spec.upper) url = url.replace(/^[a-z0-9]+:/, (s) => s.toUpperCase());
    return { url, foreign };
  }

  async #report(
    d: ModelDataset,
    a: ModelAttempt,
    outcome: Outcome,
    spec: UrlSpec,
    ledger: Ledger = this.#ledger,
  ): Promise<string> {
    const { url, foreign } = this.#urlFor(d, a, spec);
    const outsideArea = !foreign && url !== null && !insideRunArea(d.root, a.runId, url);
    const input = { runId: a.runId, shard: a.shard, attempt: a.attempt, taskAttemptId: a.tid, url };
    const at = this.#env.clock.now().getTime();
    const what = `${outcome} ${a.id} url=${url ?? "none"}`;
    try {
      if (outcome === "started") await ledger.attemptStarted(input);
      else if (outcome === "succeeded") await ledger.attemptSucceeded(input);
      else await ledger.attemptFailed({ ...input, error: "task lost" });
    } catch (e) {
      const code = isShardledgerError(e) ? e.code : null;
      if (foreign && code === "SAFETY_RAIL") return `${what}: refused (outside the root), as it must be`;
      if (outsideArea && code === "SAFETY_RAIL")
        return `${what}: refused (outside its run's data area), as it must be`;
      if (
        !foreign &&
        (code === "CONTRADICTING_REPORT" || code === "ILLEGAL_TRANSITION" || code === "CONCURRENCY")
      )
        return `${what}: refused ${code}`;
      this.#unexpected(`report ${what}`, e);
      return `${what}: threw ${String(e)}`;
    }
    if (foreign)
      this.oracle.violate(
        "R6",
        url ?? "",
        `a report with url ${url}, outside the root ${d.root}, was accepted`,
        "a url outside the root accepted",
      );
    if (outsideArea)
      this.oracle.violate(
        "R6",
        url ?? "",
        `a report of run ${a.runId} with url ${url}, outside its data area data/${a.runId}/, was accepted`,
        "a url outside its run's data area accepted",
      );
    a.accepted.push({ outcome, url, at });
    return `${what}: ok`;
  }

  #unexpected(what: string, e: unknown): void {
    const name = e instanceof Error ? e.name : typeof e;
    this.oracle.violate(
      "R6",
      what,
      `${what} threw what its contract does not allow: ${e instanceof Error ? `${name}: ${e.message}` : String(e)}`,
      `${what.replace(/^final /, "").split(" ")[0]} threw ${name}`,
    );
  }

  /** The operation as a function that reports, rather than throws, what its contract allows. */
  #guarded(p: Prepared, ledger: Ledger): () => Promise<string> {
    return async () => {
      try {
        return (await p.fn(ledger)) ?? "ok";
      } catch (e) {
        if (isInjected(e)) return `failed by injection: ${(e as Error).message}`;
        const code = isShardledgerError(e) ? e.code : null;
        if (code !== null && ALLOWED_REFUSALS[p.kind].includes(code))
          return `refused ${code}: ${(e as Error).message}`;
        this.#unexpected(p.label, e);
        return `threw ${String(e)}`;
      }
    };
  }

  /** Resolves an operation to a label and a function (and does a write's writing now). */
  async #prepare(s: ConcurrentOp): Promise<Prepared | null> {
    const plan = (fault: Partial<FaultPlan>): FaultPlan => ({
      publishFault: "none",
      deleteFault: "none",
      deleteFaultsLeft: 0,
      crashAt: null,
      crashAfter: false,
      loseLeaseAt: null,
      leaseLost: false,
      datasetId: null,
      ledger: null,
      ...fault,
    });
    switch (s.t) {
      case "publish": {
        const run = this.#runOf(s.ds, s.run);
        if (!run) return null;
        return {
          kind: s.t,
          label: `publish ${run.runId}${s.fault === "none" ? "" : ` (fault: ${s.fault})`}`,
          plan: plan({ publishFault: s.fault }),
          fn: async (ledger) => {
            const r = await ledger.publish(run.runId);
            return `published, ${r.winners.length} winner(s)`;
          },
        };
      }
      case "gc": {
        const d = this.#dataset(s.ds);
        return {
          kind: s.t,
          label: `gc ${d.name}${s.dry ? " --dry-run" : ""}${s.concurrency > 1 ? ` --concurrency ${s.concurrency}` : ""}${s.fault === "none" ? "" : ` (deleteMany fault: ${s.fault} ×${s.times})`}`,
          plan: plan({ deleteFault: s.fault, deleteFaultsLeft: s.times }),
          fn: async (ledger) => {
            const r = await ledger.gc(d.datasetId, { dryRun: s.dry, concurrency: s.concurrency });
            return `actions ${r.actions.map((a) => `${a.kind}:${a.runId}`).join(",") || "none"}${r.failed.length ? `, ${r.failed.length} failed` : ""}`;
          },
        };
      }
      case "cleanup": {
        const d = this.#dataset(s.ds);
        return {
          kind: s.t,
          label: `cleanup ${d.name}${s.dry ? " --dry-run" : ""}${s.concurrency > 1 ? ` --concurrency ${s.concurrency}` : ""}${s.fault === "none" ? "" : ` (deleteMany fault: ${s.fault} ×${s.times})`}`,
          plan: plan({ deleteFault: s.fault, deleteFaultsLeft: s.times }),
          fn: async (ledger) => {
            const r = await ledger.cleanup({
              datasetId: d.datasetId,
              dryRun: s.dry,
              concurrency: s.concurrency,
            });
            return `deleted ${r.deleted.length}, failed ${r.failed.length}, planned ${r.planned.length}`;
          },
        };
      }
      case "write": {
        const run = this.#runOf(s.ds, s.run);
        if (!run) return null;
        const d = this.#dataset(s.ds);
        const shard = s.shard % run.numShards;
        const a = await this.#writeAttempt(
          d,
          run.runId,
          shard,
          s.attempt,
          s.tid === null ? null : String(s.tid),
          s.key,
        );
        const written = a.objects[a.objects.length - 1]!;
        if (s.report === "none")
          return { kind: s.t, label: `write ${written} (unreported)`, plan: null, fn: async () => "ok" };
        const report = s.report;
        return {
          kind: s.t,
          label: `write ${written}, report ${report}`,
          plan: null,
          fn: (ledger) => this.#report(d, a, report, s.url, ledger),
        };
      }
      case "report": {
        const run = this.#runOf(s.ds, s.run);
        if (!run) return null;
        const d = this.#dataset(s.ds);
        const list = [...this.oracle.attempts.values()].filter((a) => a.runId === run.runId);
        const a = list[list.length - 1 - (s.which % Math.max(1, list.length))];
        if (!a) return null;
        return {
          kind: s.t,
          label: `report ${s.outcome} ${a.id} (${s.url.style})`,
          plan: null,
          fn: (ledger) => this.#report(d, a, s.outcome, s.url, ledger),
        };
      }
      case "heartbeat": {
        const run = this.#runOf(s.ds, s.run);
        if (!run) return null;
        return {
          kind: s.t,
          label: `heartbeat ${run.runId}`,
          plan: null,
          fn: async (ledger) => {
            await ledger.heartbeat(run.runId);
            return undefined;
          },
        };
      }
      case "fail": {
        const run = this.#runOf(s.ds, s.run);
        if (!run) return null;
        return {
          kind: s.t,
          label: `failRun ${run.runId}`,
          plan: null,
          fn: async (ledger) => {
            await ledger.failRun(run.runId, "writer aborted");
            return undefined;
          },
        };
      }
      case "retry": {
        const d = this.#dataset(s.ds);
        const run = s.run === null ? undefined : this.#runOf(s.ds, s.run);
        return {
          kind: s.t,
          label: `retry-failed ${d.name}${run ? ` --run ${run.runId}` : ""}`,
          plan: null,
          fn: async (ledger) => {
            const r = await ledger.retryFailed({
              datasetId: d.datasetId,
              ...(run ? { runId: run.runId } : {}),
            });
            return JSON.stringify(r);
          },
        };
      }
    }
  }

  /** Starts the dataset's next run; its id, or null when the ledger refused. */
  async #start(d: ModelDataset, shards: number): Promise<string | null> {
    const runId = `${d.datasetId}-r${[...this.oracle.runs.values()].filter((r) => r.ds === d.name).length}`;
    try {
      await this.#ledger.startRun({ datasetId: d.datasetId, numShards: shards, runId });
    } catch (e) {
      this.#unexpected(`startRun ${runId}`, e);
      return null;
    }
    this.oracle.addRun({ runId, ds: d.name, numShards: shards });
    return runId;
  }

  /** Writes and reports a success for every shard of the run that has none, plus `losers` more each. */
  async #fill(runId: string, url: UrlSpec, losers: number): Promise<string> {
    const run = this.oracle.runs.get(runId)!;
    const d = this.oracle.datasets.get(run.ds)!;
    const notes: string[] = [];
    for (let shard = 0; shard < run.numShards; shard++) {
      const mine = [...this.oracle.attempts.values()].filter((a) => a.runId === runId && a.shard === shard);
      if (mine.some((a) => a.accepted.some((r) => r.outcome === "succeeded"))) continue;
      const next = mine.reduce((m, a) => Math.max(m, a.attempt + 1), 0);
      const winner = await this.#writeAttempt(d, runId, shard, next, null, "plain");
      notes.push(await this.#report(d, winner, "succeeded", url));
      for (let j = 1; j <= losers; j++) {
        const loser = await this.#writeAttempt(d, runId, shard, next + j, null, "plain");
        notes.push(
          await this.#report(d, loser, "succeeded", {
            style: "prefix",
            upper: false,
            encode: false,
            other: 0,
          }),
        );
      }
    }
    return notes.join("; ");
  }

  async #step(s: Step): Promise<string> {
    switch (s.t) {
      case "start": {
        const runId = await this.#start(this.#dataset(s.ds), s.shards);
        this.oracle.stepLabel = `start ${runId ?? "(refused)"} (${s.shards} shard(s))`;
        return "";
      }
      case "advance":
        this.#env.clock.advance(s.ms);
        return `now ${this.#env.clock.now().toISOString()}`;
      case "fill": {
        const run = this.#runOf(s.ds, s.run);
        if (!run) return "skipped: no run";
        this.oracle.stepLabel = `fill ${run.runId} (winner url: ${describeUrl(s.url)}, ${s.losers} loser(s) per shard)`;
        return (await this.#fill(run.runId, s.url, s.losers)) || "nothing missing";
      }
      case "cycle": {
        const d = this.#dataset(s.ds);
        const runId = await this.#start(d, s.shards);
        if (!runId) return "start refused";
        const filled = await this.#fill(runId, s.url, s.losers);
        const publish = await this.#prepare({ t: "publish", ds: s.ds, run: 0, fault: s.fault });
        this.oracle.stepLabel = `start ${runId} (${s.shards} shard(s)), fill (winner url: ${describeUrl(s.url)}, ${s.losers} loser(s) per shard), ${publish!.label}`;
        const note = await runAsOp(
          { op: 0, label: publish!.label, calls: 0, data: publish!.plan },
          this.#guarded(publish!, this.#ledger),
        );
        return `${filled}; ${note}`;
      }
      case "crash": {
        const prepared = await this.#prepare(s.op);
        if (!prepared) return "skipped: no run";
        this.oracle.stepLabel = `${prepared.label}, the process crashing ${s.after ? "after" : "before"} store call #${s.at}`;
        const plan = { ...prepared.plan!, crashAt: s.at, crashAfter: s.after };
        const note = await runAsOp(
          { op: 0, label: prepared.label, calls: 0, data: plan },
          this.#guarded(prepared, this.#ledger),
        );
        if (this.#instance.dead) {
          await this.#openWorker();
          return `${note}; crashed; a new ledger instance continues`;
        }
        return `${note}; the crash point was not reached`;
      }
      case "tamper": {
        const key = [...this.oracle.objects.keys()].sort().find((k) => new RegExp(s.match).test(k));
        if (key === undefined) return `nothing matches ${s.match}`;
        this.oracle.stepLabel = `tamper: delete ${key} behind the ledger's back`;
        await this.#backend.remove(key);
        return "";
      }
      case "lease": {
        const prepared = await this.#prepare(s.op);
        if (!prepared) return "skipped";
        const d = this.#dataset(s.op.ds);
        this.oracle.stepLabel = `${prepared.label}, its lease revoked before store call #${s.at}`;
        const plan = { ...prepared.plan!, loseLeaseAt: s.at, datasetId: d.datasetId, ledger: this.#ledger };
        return runAsOp(
          { op: 0, label: prepared.label, calls: 0, data: plan },
          this.#guarded(prepared, this.#ledger),
        );
      }
      case "concurrent": {
        const prepared: Prepared[] = [];
        for (const o of s.ops) {
          const p = await this.#prepare(o);
          if (p) prepared.push(p);
        }
        if (prepared.length === 0) return "skipped: no run";
        this.oracle.stepLabel = `concurrently: ${prepared.map((p) => p.label).join(" ‖ ")}`;
        const il = new Interleaver(s.choices);
        this.#interleaver = il;
        // Like two processes: the second operation runs on a second ledger instance.
        const ledgers = [this.#ledger, await this.#peerLedger()];
        const results = await il.run(
          prepared.map((p, i) => ({ label: p.label, data: p.plan, fn: this.#guarded(p, ledgers[i]!) })),
        );
        const notes = results.map(
          (r, i) => `${prepared[i]!.label}: ${r.status === "fulfilled" ? r.value : String(r.reason)}`,
        );
        return `${notes.join(" ‖ ")}; interleaving: ${il.trace.join(" → ")}`;
      }
      default: {
        const prepared = await this.#prepare(s);
        if (!prepared) return "skipped: no run";
        this.oracle.stepLabel = prepared.label;
        const dry = (s.t === "gc" || s.t === "cleanup") && s.dry;
        const before = dry ? this.oracle.eventCount() : 0;
        const note = await runAsOp(
          { op: 0, label: prepared.label, calls: 0, data: prepared.plan },
          this.#guarded(prepared, this.#ledger),
        );
        if (dry) {
          await this.oracle.sync();
          const after = await this.#backend.snapshot();
          const gone = [...(this.#lastSnapshot?.keys ?? [])].filter((k) => !after.has(k));
          if (gone.length > 0 || this.oracle.eventCount() !== before)
            this.oracle.violate(
              "R8",
              gone[0] ?? "dry run",
              `a dry run changed something: deleted ${gone.join(", ") || "nothing"}, appended ${this.oracle.eventCount() - before} event(s)`,
              "a dry run changed something",
            );
        }
        return note;
      }
    }
  }

  async #check(): Promise<void> {
    const snapshot = await this.#backend.snapshot();
    await this.oracle.checkStep(snapshot);
    this.#lastSnapshot = snapshot;
  }

  /** Liveness: no faults, the clock far ahead, cleanup and gc until quiescent; then R4. */
  async #finalPass(): Promise<void> {
    this.oracle.step = this.#history.steps.length;
    this.oracle.stepLabel = "final quiescent cleanup + gc, clock +400d";
    this.#env.clock.advance(400 * D);
    for (const d of this.oracle.datasets.values()) {
      for (const [what, fn] of [
        ["cleanup", () => this.#ledger.cleanup({ datasetId: d.datasetId })],
        ["gc", () => this.#ledger.gc(d.datasetId)],
      ] as const) {
        try {
          await fn();
        } catch (e) {
          this.#unexpected(`final ${what} ${d.name}`, e);
        }
      }
    }
    const snapshot = await this.#backend.snapshot();
    await this.oracle.checkStep(snapshot, { verifyBodies: true });
    await this.oracle.checkLiveness(snapshot);
    this.remaining = [...this.oracle.objects.keys()].filter((k) => snapshot.has(k)).sort();
    this.trace.push(`${this.oracle.step}: ${this.oracle.stepLabel}`);
  }

  #label(s: Step): string {
    if (s.t === "advance") return `advance the clock ${s.ms / 1000}s`;
    return JSON.stringify(s);
  }
}
