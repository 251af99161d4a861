import { fc } from "@fast-check/vitest";
import { expect } from "vitest";
import { type ErrorCode, isShardledgerError } from "../../src/errors.js";
import { defaultCatalogue } from "../../src/events/event-catalogue.js";
import { decideRun, type RunCommand, type RunEvent } from "../../src/machines/run-commands.js";
import {
  cloneRunState,
  evolveRun,
  type FoldableEvent,
  initialRunState,
  type RunState,
} from "../../src/machines/run-state.js";

/*
 * Random run histories: arbitrary command sequences decided and folded as the executor does (most
 * of them refused), shared by the run machine's and the run snapshot's property tests.
 */

export const RUN = "r1";
export const T0 = Date.parse("2026-03-01T10:00:00.000Z");
export const MINUTE = 60_000;
export const RETENTION = 60 * MINUTE;
export const TASK_IDS = [null, "5", "9223372036854775806", "9223372036854775807"] as const;
export const URLS = ["s3://b/d/u0", "s3://b/d/u1", "s3://b/d/u2", "s3://b/d/uZ", "s3://b/d/ua"] as const;
export const MANIFESTS = ["s3://b/d/manifests/r1.json", "s3://b/d/manifests/other.json"] as const;

/** The live side: decide, append (the log keeps one event per id), evolve. */
export class Live {
  state: RunState = initialRunState();
  readonly log: FoldableEvent[] = [];
  readonly ids = new Set<string>();
  now = T0;

  run(command: RunCommand): { ok: true; events: RunEvent[] } | { ok: false; code: ErrorCode } {
    const before = cloneRunState(this.state);
    let events: RunEvent[];
    try {
      events = decideRun(this.state, command, { now: new Date(this.now), failedRetentionMs: RETENTION });
    } catch (e) {
      if (!isShardledgerError(e)) throw e;
      return { ok: false, code: e.code };
    }
    // decide is pure: deciding changed nothing.
    expect(this.state).toEqual(before);
    // Every decided event is valid as it stands: the log takes some of them unparsed
    // (EventBuilder.fromState), so the catalogue must take each one and give it back unchanged.
    for (const e of events) expect(defaultCatalogue.validate(e.type, e.data).data, e.type).toEqual(e.data);
    for (const e of events) {
      if (e.eventId !== undefined) {
        if (this.ids.has(e.eventId)) continue;
        this.ids.add(e.eventId);
      }
      const recorded: FoldableEvent = {
        type: e.type,
        data: e.data,
        recordedAt: new Date(this.now),
        streamVersion: this.log.length + 1,
      };
      this.log.push(recorded);
      evolveRun(this.state, recorded);
    }
    return { ok: true, events };
  }
}

// ---------------------------------------------------------------------------------------------
// (a) replay equals live, for arbitrary command sequences (most of them refused)
// ---------------------------------------------------------------------------------------------

export const reportArb = fc.record({
  type: fc.constantFrom("attemptStarted", "attemptSucceeded", "attemptSucceeded", "attemptFailed"),
  shard: fc.constantFrom(0, 0, 1, 1, 2),
  attempt: fc.integer({ min: 0, max: 2 }),
  taskAttemptId: fc.constantFrom(...TASK_IDS),
  url: fc.option(fc.constantFrom(...URLS), { nil: null }),
});

export const commandArb: fc.Arbitrary<RunCommand | { type: "advance"; ms: number }> = fc.oneof(
  fc
    .integer({ min: 1, max: 3 })
    .map((numShards) => ({ type: "start", runId: RUN, datasetId: "ds", numShards }) as const),
  fc.constant({ type: "heartbeat", runId: RUN } as const),
  { arbitrary: reportArb.map((r) => ({ ...r, runId: RUN, error: "lost" }) as RunCommand), weight: 12 },
  fc.constant({ type: "selectWinners", runId: RUN } as const),
  {
    arbitrary: fc
      .constantFrom(...MANIFESTS)
      .map((manifestUrl) => ({ type: "recordManifest", runId: RUN, manifestUrl }) as const),
    weight: 2,
  },
  { arbitrary: fc.constant({ type: "markSucceeded", runId: RUN } as const), weight: 2 },
  fc
    .constantFrom("writer_abort", "heartbeat_timeout")
    .map((cause) => ({ type: "fail", runId: RUN, cause, reason: "stopped" }) as const),
  { arbitrary: fc.constant({ type: "reopen", runId: RUN } as const), weight: 2 },
  fc
    .record({
      url: fc.constantFrom(...URLS),
      reason: fc.constantFrom("loser", "orphan", "stale", "keep_runs"),
    })
    .map((c) => ({ type: "planCleanup", runId: RUN, ...c }) as const),
  fc
    .record({ url: fc.constantFrom(...URLS), tries: fc.integer({ min: 1, max: 5 }), exhausted: fc.boolean() })
    .map(
      (c) =>
        ({
          type: "recordCleanupFailed",
          runId: RUN,
          url: c.url,
          errorCode: "SlowDown",
          errorMessage: "slow down",
          transient: !c.exhausted,
          tries: c.tries,
          exhausted: c.exhausted,
          nextRetryAt: c.exhausted ? null : new Date(T0 + c.tries * MINUTE),
        }) as const,
    ),
  fc
    .constantFrom(...URLS)
    .map((url) => ({ type: "recordCleanupSucceeded", runId: RUN, url, deletedObjects: 2 }) as const),
  fc.constantFrom(...URLS).map((url) => ({ type: "requeueCleanup", runId: RUN, url }) as const),
  fc.constantFrom(...URLS).map((url) => ({ type: "recordStaleCollected", runId: RUN, url }) as const),
  fc.constantFrom("keep_runs", "retention").map((reason) => ({ type: "prune", runId: RUN, reason }) as const),
  fc.constant({
    type: "archive",
    runId: RUN,
    archiveUrl: "s3://b/d/_archive/run-r1.jsonl",
    events: 1,
  } as const),
  fc.integer({ min: 1, max: 2 * RETENTION }).map((ms) => ({ type: "advance", ms }) as const),
);

export const reviveDates = (key: string, value: unknown) =>
  key === "recordedAt" && typeof value === "string" ? new Date(value) : value;
