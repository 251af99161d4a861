import { describe, expect, it } from "vitest";
import { DEFAULT_POLICIES, parseDatasetInput } from "../../src/datasets/dataset-config.js";
import { formatDuration, parseDuration } from "../../src/datasets/duration.js";
import { isValidationError, type ValidationError } from "../../src/errors.js";

const base = { datasetId: "events", root: "s3://bucket/events" };

function refusal(input: unknown): ValidationError {
  try {
    parseDatasetInput(input);
  } catch (e) {
    if (isValidationError(e)) return e;
    throw e;
  }
  throw new Error(`accepted ${JSON.stringify(input)}`);
}

describe("dataset configuration", () => {
  it("applies the documented defaults and normalises durations to milliseconds", () => {
    const parsed = parseDatasetInput(base);
    expect(parsed.root).toBe("s3://bucket/events");
    expect(parsed.policies).toEqual({
      keepRuns: DEFAULT_POLICIES.keepRuns,
      retentionMs: 30 * 86_400_000,
      failedRetentionMs: 7 * 86_400_000,
      staleAfterMs: 3_600_000,
      safetyWindowMs: 3_600_000,
    });
    const custom = parseDatasetInput({
      ...base,
      keepRuns: 3,
      retention: "12h",
      failedRetention: "15m",
      staleAfter: "30s",
      safetyWindow: "0s",
    });
    expect(custom.policies).toEqual({
      keepRuns: 3,
      retentionMs: 43_200_000,
      failedRetentionMs: 900_000,
      staleAfterMs: 30_000,
      safetyWindowMs: 0,
    });
  });

  it.each([
    [{ keepRuns: 0 }, "keepRuns"],
    [{ keepRuns: -1 }, "keepRuns"],
    [{ keepRuns: 1.5 }, "keepRuns"],
    [{ retention: "0s" }, "retention"],
    [{ retention: "-1d" }, "retention"],
    [{ retention: "1.5d" }, "retention"],
    [{ retention: "7 days" }, "retention"],
    [{ retention: "" }, "retention"],
    [{ failedRetention: "0s" }, "failedRetention"],
    [{ failedRetention: -5 }, "failedRetention"],
    [{ staleAfter: "forever" }, "staleAfter"],
    [{ staleAfter: "99999999999d" }, "staleAfter"],
    [{ safetyWindow: "-1s" }, "safetyWindow"],
    [{ root: "http://bucket/x" }, "root"],
    [{ root: "file://relative/path" }, "root"],
    [{ root: "s3://bucket/a/../b" }, "root"],
    [{ datasetId: "../etc" }, "datasetId"],
    [{ datasetId: "" }, "datasetId"],
    [{ keepRun: 3 }, "keepRun"],
  ])("refuses %j naming %s", (override, field) => {
    const error = refusal({ ...base, ...override });
    expect(error.field).toBe(field);
    expect(error.message.startsWith(`${field}:`)).toBe(true);
  });

  it("parses and formats durations", () => {
    expect(parseDuration("30s")).toBe(30_000);
    expect(parseDuration("15m")).toBe(900_000);
    expect(parseDuration("12h")).toBe(43_200_000);
    expect(parseDuration("7d")).toBe(604_800_000);
    for (const bad of ["", "7", "d", "-7d", "7D", "7 d", "1e3s", "0x10s"])
      expect(parseDuration(bad), bad).toBeUndefined();
    expect(formatDuration(604_800_000)).toBe("7d");
    expect(formatDuration(90_000)).toBe("90s");
    expect(formatDuration(0)).toBe("0s");
  });
});
