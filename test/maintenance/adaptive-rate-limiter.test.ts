import { fc, test } from "@fast-check/vitest";
import { describe, expect, it } from "vitest";
import { isValidationError, type ValidationError } from "../../src/errors.js";
import {
  AdaptiveRateLimiter,
  type AdaptiveRateOptions,
  DEFAULT_DELETE_RATE,
  parseAdaptiveRateOptions,
} from "../../src/maintenance/adaptive-rate-limiter.js";

function fieldOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(isValidationError(e)).toBe(true);
    return (e as ValidationError).field;
  }
  throw new Error("expected a ValidationError");
}

/**
 * A discrete-event simulation on a fake clock: `concurrency` senders each send requests of `cost`
 * keys through the limiter to a server that admits `limit` keys/s per a token bucket with a
 * quarter second of burst (the S3 model's rule) and answers after `latencyMs`; a refused request
 * is a throttle. Returns what the server admitted per second, and the throttled share.
 */
function simulate(input: {
  limit: number;
  options: Partial<AdaptiveRateOptions>;
  concurrency: number;
  cost: number;
  latencyMs: number;
  seconds: number;
}): { admittedPerSecond: number[]; throttled: number; requests: number; limiter: AdaptiveRateLimiter } {
  const limiter = new AdaptiveRateLimiter(input.options, 0);
  const depth = input.limit / 4;
  let tokens = depth;
  let tokensAt = 0;
  const admittedPerSecond = Array.from({ length: input.seconds }, () => 0);
  let throttled = 0;
  let requests = 0;
  // Events: a sender becomes free at `at` (sorted by time; ties by sender).
  const free: number[] = Array.from({ length: input.concurrency }, () => 0);
  for (;;) {
    let sender = 0;
    for (let i = 1; i < free.length; i++) if ((free[i] as number) < (free[sender] as number)) sender = i;
    const now = free[sender] as number;
    if (now >= input.seconds * 1000) break;
    const { waitMs, ticket } = limiter.reserve(input.cost, now);
    const sendAt = now + waitMs;
    tokens = Math.min(depth, tokens + ((sendAt - tokensAt) / 1000) * input.limit);
    tokensAt = sendAt;
    requests++;
    const doneAt = sendAt + input.latencyMs;
    if (tokens >= input.cost) {
      tokens -= input.cost;
      const second = Math.floor(sendAt / 1000);
      if (second < input.seconds) admittedPerSecond[second] = (admittedPerSecond[second] ?? 0) + input.cost;
      limiter.succeeded(ticket, doneAt);
    } else {
      throttled++;
      limiter.throttled(ticket, doneAt);
    }
    free[sender] = doneAt;
  }
  return { admittedPerSecond, throttled, requests, limiter };
}

describe("adaptive rate limiter (AIMD)", () => {
  it("ramps from below the limit, then sustains ≥ 0.7× of it with < 5% of requests throttled", () => {
    const limit = 3_500;
    const r = simulate({
      limit,
      options: DEFAULT_DELETE_RATE,
      concurrency: 32,
      cost: 50,
      latencyMs: 25,
      seconds: 60,
    });
    const afterRamp = r.admittedPerSecond.slice(10);
    const sustained = afterRamp.reduce((a, b) => a + b, 0) / afterRamp.length;
    expect(sustained).toBeGreaterThanOrEqual(0.7 * limit);
    expect(sustained).toBeLessThanOrEqual(limit * 1.01);
    expect(r.throttled / r.requests).toBeLessThan(0.05);
    expect(r.limiter.stats().decreases).toBeGreaterThan(0);
    // It starts below the limit: the first second sends less than the limit.
    expect(r.admittedPerSecond[0]).toBeLessThan(limit);
  });

  test.prop(
    [
      fc.integer({ min: 200, max: 20_000 }),
      fc.integer({ min: 4, max: 64 }),
      fc.integer({ min: 1, max: 200 }),
      fc.integer({ min: 5, max: 120 }),
    ],
    { numRuns: 40 },
  )(
    "any limit, concurrency, batch and latency: the limit holds ≥ 0.7× with < 5% throttled once binding",
    (limit, concurrency, cost, latencyMs) => {
      // Only cases where the senders could exceed the limit: otherwise the limit does not bind.
      fc.pre((concurrency * cost * 1000) / latencyMs > limit * 1.5 && cost <= limit / 8);
      const r = simulate({
        limit,
        options: { initialRate: Math.min(limit / 2, 1_000), increasePerSecond: limit / 35 },
        concurrency,
        cost,
        latencyMs,
        seconds: 90,
      });
      const afterRamp = r.admittedPerSecond.slice(30);
      const sustained = afterRamp.reduce((a, b) => a + b, 0) / afterRamp.length;
      expect(sustained).toBeGreaterThanOrEqual(0.7 * limit);
      expect(r.throttled / r.requests).toBeLessThan(0.05);
    },
  );

  test.prop([
    fc.array(
      fc.record({
        dt: fc.integer({ min: 0, max: 2_000 }),
        cost: fc.integer({ min: 0, max: 1_000 }),
        throttle: fc.boolean(),
      }),
      { maxLength: 300 },
    ),
  ])("the rate stays within minRate…maxRate, and waits are never negative", (steps) => {
    const options = {
      initialRate: 100,
      minRate: 20,
      maxRate: 500,
      increasePerSecond: 50,
      decreaseFactor: 0.5,
    };
    const limiter = new AdaptiveRateLimiter(options, 0);
    let now = 0;
    for (const s of steps) {
      now += s.dt;
      const { waitMs, ticket } = limiter.reserve(s.cost, now);
      expect(waitMs).toBeGreaterThanOrEqual(0);
      if (s.throttle) limiter.throttled(ticket, now + waitMs);
      else limiter.succeeded(ticket, now + waitMs);
      expect(limiter.rate).toBeGreaterThanOrEqual(options.minRate);
      expect(limiter.rate).toBeLessThanOrEqual(options.maxRate);
    }
  });

  test.prop([fc.array(fc.integer({ min: 1, max: 100 }), { minLength: 1, maxLength: 200 })])(
    "reservations made at one instant are spaced at the rate: n units take n/rate seconds",
    (costs) => {
      const limiter = new AdaptiveRateLimiter({ initialRate: 250, minRate: 1, maxRate: 1_000 }, 0);
      let booked = 0;
      for (const cost of costs) {
        const { waitMs } = limiter.reserve(cost, 0);
        expect(waitMs).toBeCloseTo((booked * 1000) / 250, 6);
        booked += cost;
      }
    },
  );

  it("throttles of requests sent before the last decrease lower the rate only once", () => {
    const limiter = new AdaptiveRateLimiter({ initialRate: 1_000, decreaseFactor: 0.5 }, 0);
    const tickets = Array.from({ length: 10 }, () => limiter.reserve(10, 0).ticket);
    for (const t of tickets) limiter.throttled(t, 30);
    expect(limiter.rate).toBe(500);
    expect(limiter.stats()).toMatchObject({ throttles: 10, decreases: 1 });
    // A request reserved after that decrease is new evidence.
    const later = limiter.reserve(10, 40).ticket;
    limiter.throttled(later, 70);
    expect(limiter.rate).toBe(250);
  });

  it("a sender the rate does not hold back (idle between requests) does not ramp it", () => {
    const limiter = new AdaptiveRateLimiter({ initialRate: 100 }, 0);
    for (let t = 0; t < 100; t++) {
      // One key every second: far below 100 keys/s.
      const { ticket } = limiter.reserve(1, t * 1000);
      limiter.succeeded(ticket, t * 1000 + 20);
    }
    expect(limiter.rate).toBe(100);
  });

  it("slow start doubles the rate per second of successes until the first throttle, then adds", () => {
    const limiter = new AdaptiveRateLimiter({ initialRate: 100, increasePerSecond: 10 }, 0);
    let now = 0;
    // Send 101 units: the first finds the sender idle, the next 100 (a second at the rate) are rate-bound.
    for (let i = 0; i < 101; i++) {
      const { waitMs, ticket } = limiter.reserve(1, now);
      now += waitMs;
      limiter.succeeded(ticket, now);
    }
    expect(limiter.rate).toBe(200);
    limiter.throttled(limiter.reserve(1, now).ticket, now);
    expect(limiter.rate).toBeCloseTo(140, 6);
    const before = limiter.rate;
    for (let i = 0; i < 140; i++) {
      const { waitMs, ticket } = limiter.reserve(1, now);
      now += waitMs;
      limiter.succeeded(ticket, now);
    }
    // One second's worth of successes adds about increasePerSecond.
    expect(limiter.rate - before).toBeGreaterThan(9);
    expect(limiter.rate - before).toBeLessThan(11);
  });

  it("refuses bad options with a ValidationError naming the field", () => {
    expect(fieldOf(() => parseAdaptiveRateOptions({ initialRate: 0 }))).toBe("initialRate");
    expect(fieldOf(() => parseAdaptiveRateOptions({ decreaseFactor: 1 }))).toBe("decreaseFactor");
    expect(fieldOf(() => parseAdaptiveRateOptions({ maxRate: Number.POSITIVE_INFINITY }))).toBe("maxRate");
    expect(fieldOf(() => parseAdaptiveRateOptions({ initialRate: 5, minRate: 10 }))).toBe("initialRate");
    expect(fieldOf(() => parseAdaptiveRateOptions({ burst: 3 } as never))).toBe("burst");
    expect(parseAdaptiveRateOptions({ initialRate: 500 }).initialRate).toBe(500);
  });
});
