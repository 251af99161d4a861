/**
 * The reference model and the oracle of the safety-interleaving property
 * (test/property/safety-interleaving.property.test.ts).
 *
 * The model is what the test itself did: which objects it wrote (key, bytes, time), for which
 * attempt of which run, and the policies and clock of each dataset. The log (read through the
 * public `ledger.events`) says which transitions really happened (a run succeeded, failed, was
 * reopened, which winners were selected, where `_CURRENT` moved, what cleanup planned). The
 * oracle applies the rules of SPEC "Safety rails" to both, and reads the object store directly,
 * never through the ledger: it judges the ledger's decisions (a prune, a fail_stale, a deletion),
 * it never takes them as given. Every intended semantic that may be spelled differently after a
 * fix lives in safety-semantics.ts.
 *
 * Rules (each violation names its rule, the step and the object):
 * - R1  `_CURRENT` names a SUCCEEDED, unpruned run of its dataset whose manifest exists and whose
 *       winners' data (as the test wrote it) all exist; deleting `_CURRENT` or the current
 *       manifest is a violation whenever it happens.
 * - R1b winner selection: each winner is the smallest successful attempt recorded before it.
 * - R1c marker rule: a manifest present in the store ⇒ all its winners' data present (also
 *       checked at each deletion: a run's data is never deleted while its manifest is there).
 * - R2  everything the protected set covers exists (after every step, and at each deletion).
 * - R3  every deleted object was covered by a CleanupPlanned of its dataset before it went.
 * - R4  liveness: after a quiescent final pass, every loser of a published run is deleted or in
 *       the pending-cleanup set. Not counted: what a writer put under a run's area in a step after
 *       the run was pruned (no pass revisits a pruned run's area; a known limitation, pinned in
 *       safety-oracle.test.ts and written up in docs/operations.md).
 * - R5  gc fails a run for a heartbeat timeout only when it was silent longer than staleAfter.
 * - R6  operations throw only the refusals their contract allows (checked by the runner).
 * - R7  fencing, strict at every concurrency: no store call of a maintenance pass starts after
 *       the revocation of its lease committed (the runner revokes it inside the pass's store
 *       call #k, LOST_LEASE_EXTENSION in safety-history.ts; calls already in flight, or started
 *       while the revocation was still committing, are the only ones allowed).
 * - R8  a dry run deletes and records nothing (checked by the runner).
 * - R9  what the log records as cleaned (CleanupSucceeded, StaleAttemptCollected) holds nothing
 *       the test wrote there before (SPEC: "a prefix counts as cleaned only when verified empty").
 */
import type { Ledger, RecordedEvent } from "../../src/index.js";
import {
  CURRENT_KEY,
  covers,
  datasetStreamId,
  INTENDED,
  keyOf,
  manifestKeyOf,
  runStreamId,
} from "./safety-semantics.js";
import type { StoreSnapshot } from "./safety-world.js";

export type DsName = "A" | "B";

/** A dataset's policies in milliseconds, as the test registered them. */
export interface Policies {
  keepRuns: number;
  safetyWindowMs: number;
  failedRetentionMs: number;
  staleAfterMs: number;
  retentionMs: number;
}

export interface ModelDataset {
  name: DsName;
  datasetId: string;
  /** Directory of the root, relative to the history's base (`dsA`). */
  dir: string;
  root: string;
  policies: Policies;
}

export interface ModelRun {
  runId: string;
  ds: DsName;
  numShards: number;
}

/** One attempt as the writer made it: where it wrote and what it reported (accepted reports only). */
export interface ModelAttempt {
  id: string;
  runId: string;
  ds: DsName;
  shard: number;
  attempt: number;
  tid: string | null;
  /** Root-relative key of the attempt's directory. */
  dir: string;
  /** Base keys of the objects written for it. */
  objects: string[];
  accepted: { outcome: "started" | "succeeded" | "failed"; url: string | null; at: number }[];
}

/** One object the test wrote. */
export interface ModelObject {
  /** Key relative to the history's base (`dsA/data/…`, `sentinel/…`). */
  baseKey: string;
  ds: DsName | null;
  /** Key relative to the dataset root, when inside one. */
  dsKey: string | null;
  body: string;
  writtenAt: number;
  owner: string | null;
}

export interface Violation {
  rule: string;
  step: number;
  key: string;
  message: string;
  /** The rule and the kind of what went wrong, without ids: violations of one bug share it. */
  category: string;
}

/**
 * Why an object is in the protected set (SPEC "Safety rails"), strongest first: the category of
 * an R2 violation is its strongest reason.
 */
export const PROTECTION_KINDS = [
  "outside every root",
  "inside the root, outside data/",
  "winner of the current run",
  "winner of the run _CURRENT names in the store",
  "winner of a run SUCCEEDED after the current one",
  "winner of one of the newest keepRuns runs",
  "winner of a run replaced inside the safety window",
  "data of an active run",
  "data of a FAILED run inside the failed-retention floor",
  "under a run with a url-less winner (no orphan collection)",
  "winner of a run not being pruned",
  "younger than the safety window",
] as const;
export type ProtectionKind = (typeof PROTECTION_KINDS)[number];

/** The reasons an object is protected: their kinds and the full text. */
export interface Protection {
  kinds: ProtectionKind[];
  why: string[];
}

/** `runId/shard/attempt/tid`: the identity of an attempt (the url is data, not identity). */
export const attemptId = (runId: string, shard: number, attempt: number, tid: string | null): string =>
  `${runId}/${shard}/${attempt}/${tid ?? "-"}`;

interface Ev {
  type: string;
  data: Record<string, unknown>;
  at: number;
  pos: number;
}

/** What the log says about one run (Pruned aside, its status is the fold of its lifecycle). */
interface RunFacts {
  runId: string;
  events: Ev[];
  status: "NONE" | "STARTED" | "PUBLISHING" | "SUCCEEDED" | "FAILED";
  succeeded: { at: number; pos: number } | null;
  failed: { at: number; pos: number; cause: string } | null;
  winners: Map<number, { attempt: number; tid: string | null; url: string | null }>;
  winnersSelectedPos: number | null;
  /** Latest non-null url reported per attempt id. */
  attemptUrls: Map<string, string | null>;
  plans: { url: string; reason: string; pos: number }[];
  /** CleanupSucceeded and StaleAttemptCollected: what the ledger recorded as verified gone. */
  cleaned: { url: string; at: number; type: string }[];
  pruned: { at: number; reason: string } | null;
  replacedAt: number | null;
  lastLifecycleAt: number;
}

const PRUNE_REASONS = new Set(["keep_runs", "retention", "stale", "failed_retention"]);
const LIFECYCLE = new Set([
  "RunStarted",
  "RunHeartbeat",
  "AttemptStarted",
  "AttemptSucceeded",
  "AttemptFailed",
  "WinnerSelected",
  "ShardCoverageFailed",
  "ManifestPublished",
  "RunSucceeded",
  "RunFailed",
  "RunReopened",
]);
const MAX_TID = (1n << 63n) - 1n;

const str = (v: unknown): string | null => (typeof v === "string" ? v : null);
const num = (v: unknown): number => (typeof v === "number" ? v : Number.NaN);

function foldRun(runId: string, events: readonly Ev[]): RunFacts {
  const f: RunFacts = {
    runId,
    events: [...events],
    status: "NONE",
    succeeded: null,
    failed: null,
    winners: new Map(),
    winnersSelectedPos: null,
    attemptUrls: new Map(),
    plans: [],
    cleaned: [],
    pruned: null,
    replacedAt: null,
    lastLifecycleAt: 0,
  };
  for (const e of events) {
    if (LIFECYCLE.has(e.type)) f.lastLifecycleAt = Math.max(f.lastLifecycleAt, e.at);
    switch (e.type) {
      case "RunStarted":
        f.status = "STARTED";
        break;
      case "AttemptStarted":
      case "AttemptSucceeded":
      case "AttemptFailed": {
        const id = attemptId(runId, num(e.data.shard), num(e.data.attempt), str(e.data.taskAttemptId));
        const url = str(e.data.url);
        if (url !== null || !f.attemptUrls.has(id))
          f.attemptUrls.set(id, url ?? f.attemptUrls.get(id) ?? null);
        break;
      }
      case "WinnerSelected": {
        f.status = "PUBLISHING";
        f.winnersSelectedPos ??= e.pos;
        for (const w of (e.data.winners as Record<string, unknown>[] | undefined) ?? []) {
          f.winners.set(num(w.shard), {
            attempt: num(w.attempt),
            tid: str(w.taskAttemptId),
            url: str(w.url),
          });
        }
        break;
      }
      case "ManifestPublished":
        f.status = "PUBLISHING";
        break;
      case "RunSucceeded":
        f.status = "SUCCEEDED";
        f.succeeded = { at: e.at, pos: e.pos };
        break;
      case "RunFailed":
        f.status = "FAILED";
        f.failed = { at: e.at, pos: e.pos, cause: str(e.data.cause) ?? "" };
        break;
      case "RunReopened":
        f.status = "STARTED";
        f.failed = null;
        f.winners = new Map();
        f.winnersSelectedPos = null;
        break;
      case "CleanupPlanned":
        f.plans.push({ url: str(e.data.url) ?? "", reason: str(e.data.reason) ?? "", pos: e.pos });
        break;
      case "CleanupSucceeded":
      case "StaleAttemptCollected":
        f.cleaned.push({ url: str(e.data.url) ?? "", at: e.at, type: e.type });
        break;
      case "Pruned":
        f.pruned = { at: e.at, reason: str(e.data.reason) ?? "" };
        break;
    }
  }
  return f;
}

/**
 * The model of one history plus the oracle over it. The runner records what it does
 * (`addDataset`, `addRun`, `addObject`, `accepted`), calls {@link sync} and {@link checkStep}
 * after every step, and wires {@link onDelete} into the object stores of every ledger instance.
 */
export class SafetyOracle {
  readonly datasets = new Map<DsName, ModelDataset>();
  readonly runs = new Map<string, ModelRun>();
  readonly attempts = new Map<string, ModelAttempt>();
  readonly objects = new Map<string, ModelObject>();
  readonly violations: Violation[] = [];
  /** The step being executed, for messages of checks that run during it. */
  step = -1;
  stepLabel = "setup";

  readonly #observer: Ledger;
  readonly #now: () => number;
  readonly #read: (baseKey: string) => Promise<string | null>;
  readonly #streams = new Map<string, { version: number; events: Ev[] }>();
  readonly #seen = new Set<string>();
  readonly #reported = new Set<string>();
  readonly #checkedFailures = new Set<number>();
  #facts = new Map<string, RunFacts>();
  /** The step during which each object was last written. */
  readonly #writtenAtStep = new Map<string, number>();
  /** The objects present at the previous check (null before the first). */
  #presentAtLastCheck: Set<string> | null = null;
  /** The step after which the oracle first saw each run's Pruned event. */
  readonly #prunedAtStep = new Map<string, number>();
  #pointerMoves = new Map<DsName, { runId: string; previous: string | null; at: number; pos: number }[]>();

  constructor(options: {
    observer: Ledger;
    now: () => number;
    /** Reads one object straight from the store (not through the ledger); null when absent. */
    read: (baseKey: string) => Promise<string | null>;
  }) {
    this.#observer = options.observer;
    this.#now = options.now;
    this.#read = options.read;
  }

  // ---------------------------------------------------------------- the model: what the test did

  addDataset(d: ModelDataset): void {
    this.datasets.set(d.name, d);
    this.#streams.set(datasetStreamId(d.datasetId), { version: 0, events: [] });
  }

  addRun(r: ModelRun): void {
    this.runs.set(r.runId, r);
    this.#streams.set(runStreamId(r.runId), { version: 0, events: [] });
  }

  attempt(
    ds: DsName,
    runId: string,
    shard: number,
    attempt: number,
    tid: string | null,
    dir: string,
  ): ModelAttempt {
    const id = attemptId(runId, shard, attempt, tid);
    let a = this.attempts.get(id);
    if (!a) {
      a = { id, runId, ds, shard, attempt, tid, dir, objects: [], accepted: [] };
      this.attempts.set(id, a);
    }
    return a;
  }

  addObject(o: ModelObject): void {
    this.objects.set(o.baseKey, o);
    this.#writtenAtStep.set(o.baseKey, this.step);
    if (o.owner) this.attempts.get(o.owner)?.objects.push(o.baseKey);
  }

  // ---------------------------------------------------------------- the log

  /** Reads every new event of the history's streams (per stream: no global-log horizon to wait for). */
  async sync(): Promise<void> {
    let changed = false;
    for (const [stream, s] of this.#streams) {
      for (;;) {
        const batch: RecordedEvent[] = await this.#observer.events({
          stream,
          from: s.version + 1,
          limit: 1000,
        });
        for (const e of batch) {
          s.version = Math.max(s.version, e.streamVersion);
          if (this.#seen.has(e.eventId)) continue;
          this.#seen.add(e.eventId);
          s.events.push({
            type: e.type,
            data: (e.data ?? {}) as Record<string, unknown>,
            at: e.recordedAt.getTime(),
            pos: e.globalPosition,
          });
          changed = true;
        }
        if (batch.length < 1000) break;
      }
    }
    if (changed) this.#refold();
  }

  #refold(): void {
    const facts = new Map<string, RunFacts>();
    for (const r of this.runs.values()) {
      const events = this.#streams.get(runStreamId(r.runId))?.events ?? [];
      facts.set(
        r.runId,
        foldRun(
          r.runId,
          [...events].sort((a, b) => a.pos - b.pos),
        ),
      );
    }
    const moves = new Map<DsName, { runId: string; previous: string | null; at: number; pos: number }[]>();
    for (const d of this.datasets.values()) {
      const list = (this.#streams.get(datasetStreamId(d.datasetId))?.events ?? [])
        .filter((e) => e.type === "CurrentPointerMoved")
        .sort((a, b) => a.pos - b.pos)
        .map((e) => ({
          runId: str(e.data.runId) ?? "",
          previous: str(e.data.previousRunId),
          at: e.at,
          pos: e.pos,
        }));
      moves.set(d.name, list);
      for (const m of list) {
        const prev = m.previous === null ? undefined : facts.get(m.previous);
        if (prev && m.previous !== m.runId) prev.replacedAt = Math.max(prev.replacedAt ?? 0, m.at);
      }
    }
    this.#facts = facts;
    this.#pointerMoves = moves;
    for (const f of facts.values()) {
      if (f.pruned && !this.#prunedAtStep.has(f.runId)) this.#prunedAtStep.set(f.runId, this.step);
    }
  }

  facts(runId: string): RunFacts | undefined {
    return this.#facts.get(runId);
  }

  /** All events of the history's run streams, in log order (for the runner's dry-run check). */
  eventCount(): number {
    let n = 0;
    for (const s of this.#streams.values()) n += s.events.length;
    return n;
  }

  // ---------------------------------------------------------------- the protected set

  #runsOf(ds: DsName): ModelRun[] {
    return [...this.runs.values()].filter((r) => r.ds === ds);
  }

  #objectsUnder(d: ModelDataset, key: string): ModelObject[] {
    return [...this.objects.values()].filter(
      (o) => o.ds === d.name && o.dsKey !== null && covers(key, o.dsKey),
    );
  }

  /** The objects a winner refers to: what its url names, or the writer's own data when it has none. */
  #winnerObjects(d: ModelDataset, runId: string, shard: number): ModelObject[] {
    const w = this.#facts.get(runId)?.winners.get(shard);
    if (!w) return [];
    if (w.url !== null) {
      const key = keyOf(d.root, w.url);
      return key === null ? [] : this.#objectsUnder(d, key);
    }
    const a = this.attempts.get(attemptId(runId, shard, w.attempt, w.tid));
    return (a?.objects ?? []).map((k) => this.objects.get(k)).filter((o): o is ModelObject => !!o);
  }

  /** Why each SUCCEEDED run of a dataset is protected as a whole (empty: it may be pruned). */
  #runProtections(
    d: ModelDataset,
    storeCurrent: string | null,
    now: number,
  ): Map<string, [ProtectionKind, string][]> {
    const out = new Map<string, [ProtectionKind, string][]>();
    const moves = this.#pointerMoves.get(d.name) ?? [];
    const logCurrent = moves.length > 0 ? moves[moves.length - 1]!.runId : null;
    const currentPos = logCurrent ? (this.#facts.get(logCurrent)?.succeeded?.pos ?? null) : null;
    const succeeded = this.#runsOf(d.name)
      .map((r) => this.#facts.get(r.runId))
      .filter((f): f is RunFacts => !!f && f.succeeded !== null)
      .sort((a, b) => b.succeeded!.pos - a.succeeded!.pos);
    const k = d.policies.keepRuns;
    succeeded.forEach((f, rank) => {
      const why: [ProtectionKind, string][] = [];
      if (f.runId === logCurrent)
        why.push(["winner of the current run", "the current run (the last CurrentPointerMoved names it)"]);
      if (f.runId === storeCurrent && f.runId !== logCurrent)
        why.push(["winner of the run _CURRENT names in the store", "the run _CURRENT names in the store"]);
      if (currentPos === null || f.succeeded!.pos > currentPos)
        why.push([
          "winner of a run SUCCEEDED after the current one",
          "SUCCEEDED after the current run (it may be about to become current)",
        ]);
      const pastRetention = now - f.lastLifecycleAt > d.policies.retentionMs;
      if (rank < k && !(INTENDED.retentionMayPruneKeptRuns && pastRetention))
        why.push([
          "winner of one of the newest keepRuns runs",
          `one of the newest keepRuns=${k} SUCCEEDED runs (rank ${rank + 1})`,
        ]);
      if (
        f.replacedAt !== null &&
        d.policies.safetyWindowMs > 0 &&
        now - f.replacedAt < d.policies.safetyWindowMs
      )
        why.push([
          "winner of a run replaced inside the safety window",
          `replaced as current ${now - f.replacedAt} ms ago, inside safetyWindow ${d.policies.safetyWindowMs} ms`,
        ]);
      out.set(f.runId, why);
    });
    return out;
  }

  /**
   * Every object the test wrote that must exist now, with the reasons (SPEC "Safety rails":
   * protected set), computed from the model, the clock and the log's facts, never from the
   * ledger's projections.
   */
  mustExist(storeCurrent: ReadonlyMap<DsName, string | null>, now = this.#now()): Map<string, Protection> {
    const must = new Map<string, Protection>();
    const add = (key: string, kind: ProtectionKind, why: string) => {
      const p = must.get(key) ?? { kinds: [], why: [] };
      if (!p.kinds.includes(kind)) p.kinds.push(kind);
      p.why.push(why);
      must.set(key, p);
    };
    for (const o of this.objects.values()) {
      if (o.ds === null) add(o.baseKey, "outside every root", "it lies outside every dataset root");
      else if (o.dsKey !== null && !o.dsKey.startsWith("data/"))
        add(
          o.baseKey,
          "inside the root, outside data/",
          "it lies inside the root but outside data/ (shardledger never wrote it)",
        );
    }
    for (const d of this.datasets.values()) {
      const W = d.policies.safetyWindowMs;
      const protections = this.#runProtections(d, storeCurrent.get(d.name) ?? null, now);
      // Loser claims: url-covered objects of the loser's own data (exempt from the safety window).
      const loserOwned = new Set<string>();
      for (const r of this.#runsOf(d.name)) {
        const f = this.#facts.get(r.runId);
        if (f?.status !== "SUCCEEDED") continue;
        for (const [id, url] of f.attemptUrls) {
          const a = this.attempts.get(id);
          if (!a || url === null) continue;
          const w = f.winners.get(a.shard);
          if (w && w.attempt === a.attempt && w.tid === a.tid) continue;
          const key = keyOf(d.root, url);
          if (key === null) continue;
          if (INTENDED.reportedUrlClaimsItsObjects) {
            // The writer that reported this loser claimed its url as the attempt's output:
            // whatever lies under it is that loser's data, whoever wrote it.
            for (const o of this.#objectsUnder(d, key)) if (covers(key, o.dsKey!)) loserOwned.add(o.baseKey);
            continue;
          }
          for (const k of a.objects) {
            const o = this.objects.get(k);
            if (o?.dsKey && covers(key, o.dsKey)) loserOwned.add(k);
          }
        }
      }
      // Winners: protected with their run, and otherwise deletable only by a prune of their run.
      const winnerOf = new Map<string, Set<string>>();
      for (const r of this.#runsOf(d.name)) {
        const f = this.#facts.get(r.runId);
        if (f?.status !== "SUCCEEDED") continue;
        const prunePlans = f.plans
          .filter((p) => PRUNE_REASONS.has(p.reason))
          .map((p) => keyOf(d.root, p.url))
          .filter((k): k is string => k !== null);
        const why = protections.get(r.runId) ?? [];
        let urlless = false;
        for (const [shard, w] of f.winners) {
          if (w.url === null) urlless = true;
          for (const o of this.#winnerObjects(d, r.runId, shard)) {
            const set = winnerOf.get(o.baseKey) ?? new Set<string>();
            set.add(r.runId);
            winnerOf.set(o.baseKey, set);
            for (const [kind, reason] of why)
              add(o.baseKey, kind, `winner of shard ${shard} of run ${r.runId}, ${reason}`);
            if (!prunePlans.some((p) => covers(p, o.dsKey!)))
              add(
                o.baseKey,
                "winner of a run not being pruned",
                `winner of shard ${shard} of run ${r.runId}, which is not being pruned (no prune plan of that run covers it)`,
              );
          }
        }
        if (urlless) {
          for (const o of this.#objectsUnder(d, `data/${r.runId}`)) {
            if (loserOwned.has(o.baseKey) || prunePlans.some((p) => covers(p, o.dsKey!))) continue;
            add(
              o.baseKey,
              "under a run with a url-less winner (no orphan collection)",
              `under run ${r.runId}, which has a url-less winner, so gets no orphan collection`,
            );
          }
        }
      }
      for (const o of this.objects.values()) {
        if (o.ds !== d.name || o.owner === null) continue;
        const a = this.attempts.get(o.owner);
        const f = a ? this.#facts.get(a.runId) : undefined;
        if (!a || !f) continue;
        if (f.status === "STARTED" || f.status === "PUBLISHING" || f.status === "NONE")
          add(o.baseKey, "data of an active run", `data of run ${a.runId}, which is active (${f.status})`);
        if (f.status === "FAILED" && f.failed && now - f.failed.at < d.policies.failedRetentionMs)
          add(
            o.baseKey,
            "data of a FAILED run inside the failed-retention floor",
            `data of run ${a.runId}, FAILED ${now - f.failed.at} ms ago, inside failedRetention ${d.policies.failedRetentionMs} ms`,
          );
        // The safety window: the object's last write, and the last event that concerns it.
        if (INTENDED.losersExemptFromSafetyWindow && loserOwned.has(o.baseKey)) continue;
        let last = o.writtenAt;
        if (f.status === "SUCCEEDED" && winnerOf.get(o.baseKey)?.size) {
          for (const runId of winnerOf.get(o.baseKey)!)
            last = Math.max(last, this.#facts.get(runId)?.replacedAt ?? 0);
        } else if (f.status === "SUCCEEDED") {
          for (const r of a.accepted) last = Math.max(last, r.at);
        } else {
          last = Math.max(last, f.lastLifecycleAt);
        }
        // A zero window (given explicitly) protects nothing; a positive one protects an object
        // whose last write or touch is younger than it (or, through the test clock's ticking, newer
        // than the instant checked).
        if (W > 0 && now - last < W)
          add(
            o.baseKey,
            "younger than the safety window",
            `last written or touched ${now - last} ms ago, inside safetyWindow ${W} ms`,
          );
      }
    }
    return must;
  }

  // ---------------------------------------------------------------- checks

  #violate(rule: string, key: string, message: string, category: string): void {
    const id = `${rule}\u0000${key}`;
    if (this.#reported.has(id)) return;
    this.#reported.add(id);
    this.violations.push({
      rule,
      step: this.step,
      key,
      message: `step ${this.step} [${this.stepLabel}]: ${rule} ${message}`,
      category: `${rule} ${category}`,
    });
  }

  /** Records a violation the runner found (R6, R7, R8). */
  violate(rule: string, key: string, message: string, category: string): void {
    this.#violate(rule, key, message, category);
  }

  #datasetOfRoot(rootUrl: string): ModelDataset | undefined {
    for (const d of this.datasets.values()) if (keyOf(d.root, `${rootUrl}/x`) === "x") return d;
    return undefined;
  }

  #planCovering(d: ModelDataset, dsKey: string): { runId: string; url: string; reason: string } | null {
    for (const r of this.#runsOf(d.name)) {
      for (const p of this.#facts.get(r.runId)?.plans ?? []) {
        const key = keyOf(d.root, p.url);
        if (key !== null && covers(key, dsKey)) return { runId: r.runId, url: p.url, reason: p.reason };
      }
    }
    return null;
  }

  async #storeCurrents(): Promise<Map<DsName, string | null>> {
    const out = new Map<DsName, string | null>();
    for (const d of this.datasets.values()) {
      const text = await this.#read(`${d.dir}/${CURRENT_KEY}`);
      out.set(d.name, text === null ? null : parsePointer(text));
    }
    return out;
  }

  /**
   * Called by the store wrapper right before a real deleteMany: the deletion must be planned
   * (R3), must not touch the protected set (R2), `_CURRENT` or the current manifest (R1), or a
   * run's data while its manifest is still there (R1c).
   */
  async onDelete(rootUrl: string, keys: readonly string[]): Promise<void> {
    const d = this.#datasetOfRoot(rootUrl);
    if (!d) {
      this.#violate(
        "R2",
        rootUrl,
        `deleteMany on ${rootUrl}, which is no dataset root: ${keys.join(", ")}`,
        "deleteMany outside every dataset root",
      );
      return;
    }
    await this.sync();
    const currents = await this.#storeCurrents();
    const must = this.mustExist(currents);
    const moves = this.#pointerMoves.get(d.name) ?? [];
    const currentRuns = new Set(
      [moves[moves.length - 1]?.runId, currents.get(d.name)].filter((x): x is string => !!x),
    );
    const batch = new Set(keys);
    for (const key of keys) {
      const baseKey = `${d.dir}/${key}`;
      if (key === CURRENT_KEY)
        this.#violate("R1", baseKey, `deleting ${baseKey}: _CURRENT is never deleted`, "_CURRENT deleted");
      for (const runId of currentRuns)
        if (key === manifestKeyOf(runId))
          this.#violate(
            "R1",
            baseKey,
            `deleting ${baseKey}: the manifest of the current run ${runId}`,
            "the current run's manifest deleted",
          );
      const plan = this.#planCovering(d, key);
      if (!plan)
        this.#violate(
          "R3",
          baseKey,
          `deleting ${baseKey} with no CleanupPlanned covering it`,
          "deleted without a plan",
        );
      const why = must.get(baseKey);
      if (why)
        this.#violate(
          "R2",
          baseKey,
          `deleting protected ${baseKey} (planned as ${plan ? `${plan.reason} of ${plan.runId}: ${plan.url}` : "nothing"}); protected as: ${why.why.join("; ")}`,
          `${plan?.reason ?? "unplanned"} deletion of: ${strongest(why)}`,
        );
      for (const r of this.#runsOf(d.name)) {
        const f = this.#facts.get(r.runId);
        if (f?.status !== "SUCCEEDED" || batch.has(manifestKeyOf(r.runId))) continue;
        const isWinnerData = [...f.winners.keys()].some((shard) =>
          this.#winnerObjects(d, r.runId, shard).some((o) => o.baseKey === baseKey),
        );
        if (isWinnerData && (await this.#read(`${d.dir}/${manifestKeyOf(r.runId)}`)) !== null)
          this.#violate(
            "R1c",
            baseKey,
            `deleting ${baseKey} (planned as ${plan ? `${plan.reason} of ${plan.runId}` : "nothing"}), winner data of run ${r.runId}, while its manifest ${manifestKeyOf(r.runId)} still exists (marker rule: remove the marker before what it refers to)`,
            `a run's winner data deleted (${plan?.reason ?? "unplanned"}) while its manifest exists`,
          );
      }
    }
  }

  /** The run `_CURRENT` names in the store, per dataset (null: no pointer, or unreadable). */
  async #currentsIn(snapshot: StoreSnapshot): Promise<Map<DsName, string | null>> {
    const out = new Map<DsName, string | null>();
    for (const d of this.datasets.values()) {
      const text = await snapshot.body(`${d.dir}/${CURRENT_KEY}`);
      out.set(d.name, text === null ? null : parsePointer(text));
    }
    return out;
  }

  /**
   * The checks after a step, on a direct listing of the store. `verifyBodies`: also compare the
   * bytes of every protected object with what the test wrote (the current run's winners are always
   * compared).
   */
  async checkStep(snapshot: StoreSnapshot, options: { verifyBodies?: boolean } = {}): Promise<void> {
    await this.sync();
    const currents = await this.#currentsIn(snapshot);
    await this.#checkCurrent(snapshot);
    await this.#checkManifests(snapshot);
    this.#checkWinnerSelection();
    this.#checkStaleFailures();
    this.#checkCleaned(snapshot);
    const must = this.mustExist(currents);
    const before = this.#presentAtLastCheck;
    this.#presentAtLastCheck = new Set([...this.objects.keys()].filter((k) => snapshot.has(k)));
    for (const [key, why] of must) {
      const o = this.objects.get(key);
      // Only the safety window can protect an object after it is gone: a report of its writer
      // that comes later (an idempotent repeat leaves no event) does not make an earlier deletion
      // wrong. The deletion itself was judged when it happened (onDelete).
      const goneBefore =
        before !== null && !before.has(key) && (this.#writtenAtStep.get(key) ?? -1) < this.step;
      if (goneBefore && [...why.kinds].every((k) => k === "younger than the safety window")) continue;
      if (!snapshot.has(key))
        this.#violate(
          "R2",
          key,
          `protected object ${key} is gone; protected as: ${why.why.join("; ")}`,
          `gone: ${strongest(why)}`,
        );
      else if (options.verifyBodies && o && (await snapshot.body(key)) !== o.body)
        this.#violate("R2", key, `protected object ${key} was overwritten`, "protected object overwritten");
    }
    for (const o of this.objects.values()) {
      if (snapshot.has(o.baseKey) || o.ds === null) continue;
      const d = this.datasets.get(o.ds)!;
      if (o.dsKey !== null && !this.#planCovering(d, o.dsKey))
        this.#violate(
          "R3",
          o.baseKey,
          `${o.baseKey} is gone but no CleanupPlanned of ${d.datasetId} covers it`,
          "gone without a plan",
        );
    }
  }

  async #checkCurrent(snapshot: StoreSnapshot): Promise<void> {
    for (const d of this.datasets.values()) {
      const key = `${d.dir}/${CURRENT_KEY}`;
      const text = await snapshot.body(key);
      if (text === null) {
        if ((this.#pointerMoves.get(d.name) ?? []).length > 0)
          this.#violate("R1", key, `${key} is gone although _CURRENT was moved before`, "_CURRENT gone");
        continue;
      }
      const runId = parsePointer(text);
      if (runId === null) {
        this.#violate(
          "R1",
          key,
          `${key} does not parse as a pointer: ${JSON.stringify(text.slice(0, 200))}`,
          "_CURRENT unreadable",
        );
        continue;
      }
      const run = this.runs.get(runId);
      const f = this.#facts.get(runId);
      if (!run || run.ds !== d.name || !f) {
        this.#violate(
          "R1",
          key,
          `${key} names ${runId}, which is not a run of ${d.datasetId}`,
          "_CURRENT names a foreign run",
        );
        continue;
      }
      if (f.status !== "SUCCEEDED")
        this.#violate(
          "R1",
          key,
          `${key} names ${runId}, which is ${f.status}`,
          `_CURRENT names a ${f.status} run`,
        );
      if (f.pruned)
        this.#violate(
          "R1",
          `${key} pruned`,
          `${key} names ${runId}, which was pruned (${f.pruned.reason})`,
          `_CURRENT names a run pruned by ${f.pruned.reason}`,
        );
      const manifest = `${d.dir}/${manifestKeyOf(runId)}`;
      if (!snapshot.has(manifest))
        this.#violate(
          "R1",
          manifest,
          `${key} names ${runId}, but its manifest ${manifest} is gone`,
          "the current manifest is gone",
        );
      await this.#checkManifestData(d, runId, snapshot, "R1", `the current run ${runId}`, true);
    }
  }

  async #checkManifests(snapshot: StoreSnapshot): Promise<void> {
    for (const d of this.datasets.values()) {
      for (const r of this.#runsOf(d.name)) {
        if (!snapshot.has(`${d.dir}/${manifestKeyOf(r.runId)}`)) continue;
        await this.#checkManifestData(
          d,
          r.runId,
          snapshot,
          "R1c",
          `run ${r.runId}, whose manifest is present`,
        );
      }
    }
  }

  /** Every winner the manifest lists has its data, as the test wrote it. */
  async #checkManifestData(
    d: ModelDataset,
    runId: string,
    snapshot: StoreSnapshot,
    rule: string,
    what: string,
    verifyBodies = false,
  ): Promise<void> {
    const text = await snapshot.body(`${d.dir}/${manifestKeyOf(runId)}`);
    if (text === null) return;
    let winners: { shard: number; attempt: number; taskAttemptId: string | null; url: string | null }[];
    try {
      winners = (JSON.parse(text) as { winners: typeof winners }).winners;
    } catch {
      this.#violate(
        rule,
        `${d.dir}/${manifestKeyOf(runId)}`,
        `the manifest of ${runId} does not parse`,
        "manifest unreadable",
      );
      return;
    }
    for (const w of winners) {
      let objects: ModelObject[];
      if (w.url !== null) {
        const key = keyOf(d.root, w.url);
        if (key === null) {
          this.#violate(
            rule,
            w.url,
            `winner url ${w.url} of ${what} is not under the root ${d.root}`,
            "manifest winner outside the root",
          );
          continue;
        }
        objects = this.#objectsUnder(d, key);
      } else {
        const a = this.attempts.get(attemptId(runId, w.shard, w.attempt, w.taskAttemptId));
        objects = (a?.objects ?? []).map((k) => this.objects.get(k)).filter((o): o is ModelObject => !!o);
      }
      for (const o of objects) {
        if (!snapshot.has(o.baseKey))
          this.#violate(
            rule,
            o.baseKey,
            `${o.baseKey}, data of the winner of shard ${w.shard} (url ${w.url ?? "none"}) of ${what}, is gone`,
            `manifest winner data gone (winner url ${w.url === null ? "none" : /^[a-z0-9]+:/.test(w.url) ? "lower-case scheme" : "upper-case scheme"})`,
          );
        else if (verifyBodies && (await snapshot.body(o.baseKey)) !== o.body)
          this.#violate(
            rule,
            o.baseKey,
            `${o.baseKey} of ${what} was overwritten`,
            "winner data overwritten",
          );
      }
    }
  }

  /**
   * R9: what the log records as cleaned (CleanupSucceeded: "prefix verified empty", or
   * StaleAttemptCollected) no longer holds anything the test wrote there before it was recorded.
   */
  #checkCleaned(snapshot: StoreSnapshot): void {
    for (const d of this.datasets.values()) {
      for (const r of this.#runsOf(d.name)) {
        for (const c of this.#facts.get(r.runId)?.cleaned ?? []) {
          const key = keyOf(d.root, c.url);
          if (key === null) continue;
          const left = this.#objectsUnder(d, key).filter(
            (o) => o.writtenAt < c.at && snapshot.has(o.baseKey),
          );
          if (left.length > 0)
            this.#violate(
              "R9",
              left[0]!.baseKey,
              `${c.type} of ${c.url} (run ${r.runId}) was recorded, but ${left.map((o) => o.baseKey).join(", ")}, written before, is still there`,
              "cleanup recorded as done but the object is still there",
            );
        }
      }
    }
  }

  /** R1b: the winner of each shard is the smallest successful attempt recorded before selection. */
  #checkWinnerSelection(): void {
    for (const r of this.runs.values()) {
      const f = this.#facts.get(r.runId);
      if (!f || f.winnersSelectedPos === null) continue;
      const selectedAt = f.winnersSelectedPos;
      const best = new Map<number, { tuple: [number, bigint, string]; id: string }>();
      const seen = new Set<string>();
      for (const e of f.events) {
        if (e.pos > selectedAt) break;
        if (e.type !== "AttemptSucceeded") continue;
        const shard = num(e.data.shard);
        const tid = str(e.data.taskAttemptId);
        const id = attemptId(r.runId, shard, num(e.data.attempt), tid);
        if (seen.has(id)) continue;
        seen.add(id);
        const tuple: [number, bigint, string] = [
          num(e.data.attempt),
          tid === null ? MAX_TID : BigInt(tid),
          f.attemptUrls.get(id) ?? "",
        ];
        const prev = best.get(shard);
        if (!prev || compareTuple(tuple, prev.tuple) < 0) best.set(shard, { tuple, id });
      }
      for (const [shard, w] of f.winners) {
        const id = attemptId(r.runId, shard, w.attempt, w.tid);
        const expected = best.get(shard);
        if (!expected)
          this.#violate(
            "R1b",
            id,
            `run ${r.runId} selected ${id} for shard ${shard}, which had no success`,
            "winner without a success",
          );
        else if (expected.id !== id)
          this.#violate(
            "R1b",
            id,
            `run ${r.runId} selected ${id} for shard ${shard}; the smallest is ${expected.id}`,
            "winner is not the smallest success",
          );
      }
    }
  }

  /** R5: a heartbeat timeout only after staleAfter of silence (by the log's own timestamps). */
  #checkStaleFailures(): void {
    for (const r of this.runs.values()) {
      const f = this.#facts.get(r.runId);
      const d = this.datasets.get(r.ds);
      if (!f || !d) continue;
      let lastSign = Number.NEGATIVE_INFINITY;
      let signType = "";
      for (const e of f.events) {
        if (
          e.type === "RunFailed" &&
          e.data.cause === "heartbeat_timeout" &&
          !this.#checkedFailures.has(e.pos)
        ) {
          this.#checkedFailures.add(e.pos);
          if (e.at - lastSign <= d.policies.staleAfterMs)
            this.#violate(
              "R5",
              r.runId,
              `gc failed run ${r.runId} for a heartbeat timeout at ${iso(e.at)}, but its last sign of life (${signType} at ${iso(lastSign)}) was only ${e.at - lastSign} ms before, within staleAfter ${d.policies.staleAfterMs} ms`,
              `a run failed for a heartbeat timeout within staleAfter of its last ${signType}`,
            );
        }
        const sign =
          e.type === "RunStarted" ||
          e.type === "RunHeartbeat" ||
          e.type === "RunReopened" ||
          (INTENDED.reportsAreSignsOfLife && e.type.startsWith("Attempt"));
        if (sign && e.at >= lastSign) {
          lastSign = e.at;
          signType = e.type;
        }
      }
    }
  }

  /**
   * R4, after a quiescent final pass: every loser of a published run is deleted (nothing the test
   * wrote under its url is left, other than what is protected) or is in the pending-cleanup set.
   */
  async checkLiveness(snapshot: StoreSnapshot): Promise<void> {
    await this.sync();
    const must = this.mustExist(await this.#currentsIn(snapshot));
    for (const d of this.datasets.values()) {
      const pending = (await this.#observer.pendingCleanup({ datasetId: d.datasetId }))
        .map((p) => keyOf(d.root, p.url))
        .filter((k): k is string => k !== null);
      for (const r of this.#runsOf(d.name)) {
        const f = this.#facts.get(r.runId);
        if (f?.status !== "SUCCEEDED") continue;
        for (const [id, url] of f.attemptUrls) {
          const a = this.attempts.get(id);
          if (!a || url === null) continue;
          const w = f.winners.get(a.shard);
          if (w && w.attempt === a.attempt && w.tid === a.tid) continue;
          const key = keyOf(d.root, url);
          if (key === null) continue;
          const prunedAt = this.#prunedAtStep.get(r.runId);
          const left = this.#objectsUnder(d, key).filter(
            (o) =>
              snapshot.has(o.baseKey) &&
              !must.has(o.baseKey) &&
              // Written in a later step than the prune: a writer that outlived its run, which no
              // pass revisits (docs/operations.md, "Writes into a pruned run's area").
              !(prunedAt !== undefined && (this.#writtenAtStep.get(o.baseKey) ?? -1) > prunedAt),
          );
          if (left.length === 0) continue;
          if (pending.some((p) => covers(p, key) || covers(key, p))) continue;
          this.#violate(
            "R4",
            left[0]!.baseKey,
            `loser ${id} (url ${url}) of published run ${r.runId} still has ${left.map((o) => o.baseKey).join(", ")} after a quiescent cleanup + gc, and is not in the pending-cleanup set`,
            "a loser neither deleted nor pending",
          );
        }
      }
    }
  }
}

/** The strongest reason an object is protected (the category of its violation). */
function strongest(p: Protection): ProtectionKind {
  return [...p.kinds].sort((a, b) => PROTECTION_KINDS.indexOf(a) - PROTECTION_KINDS.indexOf(b))[0]!;
}

function compareTuple(a: [number, bigint, string], b: [number, bigint, string]): number {
  if (a[0] !== b[0]) return a[0] - b[0];
  if (a[1] !== b[1]) return a[1] < b[1] ? -1 : 1;
  return a[2] < b[2] ? -1 : a[2] > b[2] ? 1 : 0;
}

/** The run `_CURRENT` names (SPEC: `{ runId, manifest, manifestUrl }`), or null. */
export function parsePointer(text: string): string | null {
  try {
    const p = JSON.parse(text) as { runId?: unknown };
    return typeof p.runId === "string" ? p.runId : null;
  } catch {
    return null;
  }
}

const iso = (t: number): string => (Number.isFinite(t) ? new Date(t).toISOString() : String(t));
