import { fc, test } from "@fast-check/vitest";
import { describe, expect, it } from "vitest";
import { isValidationError, type ValidationError } from "../../src/errors.js";
import {
  backoffCap,
  backoffDelay,
  DEFAULT_RETRY_POLICY,
  isExhausted,
  nextRetryAt,
  parseRetryPolicy,
  type RetryPolicy,
} from "../../src/maintenance/retry-policy.js";

const policy: RetryPolicy = { maxTries: 6, baseDelayMs: 100, maxDelayMs: 1_000 };

function fieldOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(isValidationError(e)).toBe(true);
    return (e as ValidationError).field;
  }
  throw new Error("expected a ValidationError");
}

describe("backoff with full jitter", () => {
  it("doubles the cap from baseDelayMs and stops at maxDelayMs", () => {
    expect([1, 2, 3, 4, 5, 6, 50, 2000].map((t) => backoffCap(policy, t))).toEqual([
      100, 200, 400, 800, 1000, 1000, 1000, 1000,
    ]);
  });

  it("is random() times the cap, floored: 0 at the bottom, the cap at the top", () => {
    expect(backoffDelay(policy, 3, () => 0)).toBe(0);
    expect(backoffDelay(policy, 3, () => 0.5)).toBe(200);
    expect(backoffDelay(policy, 3, () => 0.999_999)).toBe(399);
    expect(backoffDelay(policy, 40, () => 0.5)).toBe(500);
    // A misbehaving source is clamped, never stretches the wait past the cap.
    expect(backoffDelay(policy, 3, () => 7)).toBe(400);
    expect(backoffDelay(policy, 3, () => -1)).toBe(0);
    expect(backoffDelay(policy, 3, () => Number.NaN)).toBe(400);
  });

  test.prop([
    fc.integer({ min: 1, max: 10_000 }),
    fc.integer({ min: 0, max: 60_000 }),
    fc.integer({ min: 1, max: 5_000 }),
    fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
  ])("stays in [0, min(maxDelay, base·2^(tries-1))]", (base, extra, tries, r) => {
    const p = parseRetryPolicy({ maxTries: 10, baseDelayMs: base, maxDelayMs: base + extra });
    const d = backoffDelay(p, tries, () => r);
    expect(Number.isInteger(d)).toBe(true);
    expect(d).toBeGreaterThanOrEqual(0);
    expect(d).toBeLessThanOrEqual(Math.min(p.maxDelayMs, base * 2 ** (tries - 1)));
  });

  it("spreads real random delays over the whole window (full, not equal, jitter)", () => {
    const delays = Array.from({ length: 2000 }, () => backoffDelay(policy, 4));
    expect(Math.min(...delays)).toBeLessThan(80);
    expect(Math.max(...delays)).toBeGreaterThan(720);
    expect(delays.every((d) => d >= 0 && d <= 800)).toBe(true);
  });

  it("refuses a tries count that is not a positive integer", () => {
    expect(fieldOf(() => backoffDelay(policy, 0))).toBe("tries");
    expect(fieldOf(() => backoffDelay(policy, 1.5))).toBe("tries");
    expect(fieldOf(() => nextRetryAt(policy, -1, new Date()))).toBe("tries");
  });
});

describe("exhaustion and the next retry of a pending item", () => {
  it("is exhausted exactly at maxTries", () => {
    expect(isExhausted(policy, 5)).toBe(false);
    expect(isExhausted(policy, 6)).toBe(true);
    expect(isExhausted(policy, 7)).toBe(true);
    expect(isExhausted({ ...policy, maxTries: 1 }, 1)).toBe(true);
  });

  it("schedules now + the jittered, capped backoff, and nothing once exhausted", () => {
    const now = new Date("2026-03-01T12:00:00.000Z");
    expect(nextRetryAt(policy, 1, now, () => 0.5)?.toISOString()).toBe("2026-03-01T12:00:00.050Z");
    expect(nextRetryAt(policy, 5, now, () => 0.999)?.toISOString()).toBe("2026-03-01T12:00:00.999Z");
    expect(nextRetryAt(policy, 6, now, () => 0.5)).toBeNull();
  });
});

describe("validation names the field", () => {
  it("fills defaults and freezes the result", () => {
    const p = parseRetryPolicy({ maxTries: 3 });
    expect(p).toEqual({ maxTries: 3, baseDelayMs: 200, maxDelayMs: 30_000 });
    expect(Object.isFrozen(p)).toBe(true);
    expect(parseRetryPolicy()).toEqual(DEFAULT_RETRY_POLICY);
  });

  it.each([
    [{ maxTries: 0 }, "maxTries"],
    [{ maxTries: -2 }, "maxTries"],
    [{ maxTries: 2.5 }, "maxTries"],
    [{ maxTries: 101 }, "maxTries"],
    [{ maxTries: Number.NaN }, "maxTries"],
    [{ maxTries: "5" }, "maxTries"],
    [{ baseDelayMs: 0 }, "baseDelayMs"],
    [{ baseDelayMs: -100 }, "baseDelayMs"],
    [{ baseDelayMs: 0.5 }, "baseDelayMs"],
    [{ maxDelayMs: 0 }, "maxDelayMs"],
    [{ maxDelayMs: Number.POSITIVE_INFINITY }, "maxDelayMs"],
    [{ baseDelayMs: 5_000, maxDelayMs: 1_000 }, "maxDelayMs"],
    [{ maxTries: 3, retries: 2 }, "retries"],
  ])("refuses %j (field %s)", (input, field) => {
    expect(fieldOf(() => parseRetryPolicy(input))).toBe(field);
  });

  it("says what is wrong", () => {
    expect(() => parseRetryPolicy({ baseDelayMs: 5_000, maxDelayMs: 1_000 })).toThrow(
      /maxDelayMs: must be ≥ baseDelayMs \(5000\)/,
    );
    expect(() => parseRetryPolicy({ maxTries: 0 })).toThrow(/maxTries: must be ≥ 1/);
    expect(() => parseRetryPolicy({ maxTries: 2.5 })).toThrow(/maxTries: must be an integer/);
  });
});
