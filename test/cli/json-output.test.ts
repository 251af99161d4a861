import { describe, expect, it } from "vitest";
import { toJsonDocument, toJsonLine } from "../../src/cli/json-output.js";

describe("JSON output", () => {
  const value = {
    runId: "r1",
    at: new Date("2026-12-01T00:00:00.000Z"),
    nested: [{ position: 9007199254740993n, ok: true }, null, "text"],
  };

  it("writes bigints as decimal strings, never through a float, wherever they sit", () => {
    expect(toJsonLine(value)).toBe(
      '{"runId":"r1","at":"2026-12-01T00:00:00.000Z","nested":[{"position":"9007199254740993","ok":true},null,"text"]}\n',
    );
    expect(JSON.parse(toJsonDocument(value))).toEqual({
      runId: "r1",
      at: "2026-12-01T00:00:00.000Z",
      nested: [{ position: "9007199254740993", ok: true }, null, "text"],
    });
    expect(toJsonDocument({ a: 1n })).toBe('{\n  "a": "1"\n}\n');
  });

  it("writes a value without bigints as JSON.stringify does", () => {
    const plain = { a: [1, "x", { b: null }], c: new Date(0) };
    expect(toJsonLine(plain)).toBe(`${JSON.stringify(plain)}\n`);
    expect(toJsonDocument(plain)).toBe(`${JSON.stringify(plain, null, 2)}\n`);
  });

  it("still refuses a value JSON cannot hold (a cycle)", () => {
    const cyclic: { self?: unknown } = {};
    cyclic.self = cyclic;
    expect(() => toJsonLine(cyclic)).toThrow(TypeError);
  });
});
