import { randomUUID } from "node:crypto";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPgEventLog, type PgEventLog } from "../../src/adapters/postgres/pg-event-log.js";
import { isConcurrencyError } from "../../src/errors.js";
import { BACKEND, openTestDatabase } from "../support/database.js";
import { eventually } from "../support/eventually.js";

/** The in-memory reference: what each stream holds, by event id. */
interface Model {
  streams: Map<string, string[]>;
  stored: Map<string, string>; // eventId → streamId
}
interface Real {
  log: PgEventLog;
  prefix: string;
  positions: Map<string, number>;
}

type ExpectedKind = "correct" | "stale" | "ahead" | "no_stream" | "any";

class AppendCommand implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly stream: number,
    readonly fresh: number,
    readonly expected: ExpectedKind,
    readonly duplicate: number | null,
  ) {}
  check = () => true;
  async run(model: Model, real: Real): Promise<void> {
    const streamId = `${real.prefix}-${this.stream}`;
    const current = model.streams.get(streamId)?.length ?? 0;
    const ids: string[] = Array.from({ length: this.fresh }, () => randomUUID());
    const storedIds = [...model.stored.keys()];
    const dup =
      this.duplicate !== null && storedIds.length > 0
        ? storedIds[this.duplicate % storedIds.length]
        : undefined;
    if (dup) ids.splice(this.fresh === 0 ? 0 : 1, 0, dup);
    if (ids.length === 0) return;
    const expectedVersion =
      this.expected === "correct"
        ? current
        : this.expected === "stale"
          ? Math.max(0, current - 1) - (current === 0 ? 1 : 0)
          : this.expected === "ahead"
            ? current + 1
            : this.expected;
    if (typeof expectedVersion === "number" && expectedVersion < 0) return;

    const newIds = [...new Set(ids.filter((id) => !model.stored.has(id)))];
    const versionOk =
      expectedVersion === "any" ||
      (expectedVersion === "no_stream" ? current === 0 : expectedVersion === current);
    const outcome = await real.log
      .append(
        streamId,
        ids.map((eventId) => ({ eventId, type: "RunHeartbeat", data: { runId: "m" } })),
        { expectedVersion },
      )
      .then(
        (r) => ({ ok: true as const, r }),
        (e: unknown) => ({ ok: false as const, e }),
      );

    if (newIds.length === 0) {
      expect(outcome.ok).toBe(true);
      if (outcome.ok) {
        expect(outcome.r.written).toHaveLength(0);
        expect(outcome.r.positions).toEqual(ids.map((id) => real.positions.get(id)));
      }
    } else if (!versionOk) {
      expect(outcome.ok).toBe(false);
      if (!outcome.ok) expect(isConcurrencyError(outcome.e)).toBe(true);
    } else {
      expect(outcome.ok, outcome.ok ? "" : String((outcome as { e: unknown }).e)).toBe(true);
      if (outcome.ok) {
        expect(outcome.r.written.map((e) => e.eventId)).toEqual(newIds);
        expect(outcome.r.nextExpectedVersion).toBe(current + newIds.length);
        ids.forEach((id, i) => {
          const known = real.positions.get(id);
          if (known !== undefined) expect(outcome.r.positions[i]).toBe(known);
          else real.positions.set(id, outcome.r.positions[i] as number);
        });
      }
      model.streams.set(streamId, [...(model.streams.get(streamId) ?? []), ...newIds]);
      for (const id of newIds) model.stored.set(id, streamId);
    }
    const read = await real.log.readStream(streamId);
    expect(read.map((e) => e.eventId)).toEqual(model.streams.get(streamId) ?? []);
    expect(read.map((e) => e.streamVersion)).toEqual(read.map((_, i) => i + 1));
  }
  toString() {
    return `append(s${this.stream}, fresh=${this.fresh}, ${this.expected}, dup=${this.duplicate})`;
  }
}

describe(`event log vs reference model on ${BACKEND}`, () => {
  let database: Awaited<ReturnType<typeof openTestDatabase>>;
  let log: PgEventLog;
  beforeAll(async () => {
    database = await openTestDatabase("model");
    log = createPgEventLog({ db: database.db, schema: database.schema });
  });
  afterAll(() => database.close());

  it("random interleavings of appends, duplicates and version conflicts agree with the model", async () => {
    const command = fc
      .record({
        stream: fc.integer({ min: 0, max: 3 }),
        fresh: fc.integer({ min: 0, max: 3 }),
        expected: fc.constantFrom<ExpectedKind>("correct", "correct", "stale", "ahead", "no_stream", "any"),
        duplicate: fc.option(fc.nat(), { nil: null }),
      })
      .map((c) => new AppendCommand(c.stream, c.fresh, c.expected, c.duplicate));
    await fc.assert(
      fc.asyncProperty(fc.commands([command], { maxCommands: 30 }), async (commands) => {
        const real: Real = { log, prefix: `m-${randomUUID()}`, positions: new Map() };
        const model: Model = { streams: new Map(), stored: new Map() };
        await fc.asyncModelRun(() => ({ model, real }), commands);
        // Globally, the model's events appear in read-all exactly once and in position order.
        const mine = new Set(model.stored.keys());
        const first = Math.min(...real.positions.values(), Number.MAX_SAFE_INTEGER) - 1;
        const seen: number[] = [];
        let after = first;
        await eventually(
          async () => {
            if (mine.size === 0) return 0;
            const page = await log.readAll({ after, limit: 1000 });
            for (const e of page) if (mine.has(e.eventId)) seen.push(e.globalPosition);
            after = page.at(-1)?.globalPosition ?? after;
            return seen.length;
          },
          (n) => n >= mine.size,
        );
        expect(seen).toHaveLength(mine.size);
        expect(seen).toEqual([...seen].sort((a, b) => a - b));
      }),
      { numRuns: 100 },
    );
  });
});
