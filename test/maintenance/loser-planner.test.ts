import { describe, expect, it } from "vitest";
import { type LoserCandidate, planLoserCleanup } from "../../src/maintenance/loser-planner.js";

const ROOT = "s3://lake/events";
const shard0 = `${ROOT}/data/r1/shard=00000`;
const loser = (url: string | null): LoserCandidate => ({ url, status: "LOSER" });

describe("planLoserCleanup", () => {
  it("plans LOSER and CLEANUP_PENDING attempts with a URL, as root-relative prefixes ending in /", () => {
    const plan = planLoserCleanup({
      root: ROOT,
      attempts: [
        { url: `${shard0}/attempt=00`, status: "WINNER" },
        { url: `${shard0}/attempt=01`, status: "LOSER" },
        { url: `${shard0}/attempt=02-77`, status: "CLEANUP_PENDING" },
        { url: `${shard0}/attempt=03`, status: "DELETED" },
        { url: `${shard0}/attempt=04`, status: "SUCCEEDED" },
        { url: `${shard0}/attempt=05`, status: "STARTED" },
        { url: `${shard0}/attempt=06`, status: "FAILED" },
        { url: null, status: "LOSER" },
      ],
      winnerUrls: [`${shard0}/attempt=00`],
    });
    expect(plan.prefixes).toEqual([
      { url: `${shard0}/attempt=01`, prefix: "data/r1/shard=00000/attempt=01/" },
      { url: `${shard0}/attempt=02-77`, prefix: "data/r1/shard=00000/attempt=02-77/" },
    ]);
    expect(plan.refused).toEqual([]);
  });

  it("tells sibling prefixes apart segment-wise: attempt=01 is neither inside nor around attempt=010", () => {
    const plan = planLoserCleanup({
      root: ROOT,
      attempts: [
        loser(`${shard0}/attempt=01`),
        loser(`${shard0}/attempt=0`),
        loser(`${shard0}/attempt=010-5`),
      ],
      winnerUrls: [`${shard0}/attempt=010`, `${ROOT}/data/r1/shard=000001/attempt=00`],
    });
    expect(plan.prefixes.map((p) => p.prefix)).toEqual([
      "data/r1/shard=00000/attempt=01/",
      "data/r1/shard=00000/attempt=0/",
      "data/r1/shard=00000/attempt=010-5/",
    ]);
    expect(plan.refused).toEqual([]);
  });

  it("refuses a loser that equals, contains or lies inside a winner, of this run or another", () => {
    const plan = planLoserCleanup({
      root: ROOT,
      attempts: [
        loser(`${shard0}/attempt=00`),
        loser(`${shard0}/attempt=00/`),
        loser(shard0),
        loser(`${shard0}/attempt=00/part-0.parquet`),
        loser(`${ROOT}/data/r0/shard=00000`),
        loser(`${shard0}/attempt=01`),
      ],
      winnerUrls: [`${shard0}/attempt=00`, `${ROOT}/data/r0/shard=00000/attempt=03/`],
    });
    expect(plan.prefixes.map((p) => p.url)).toEqual([`${shard0}/attempt=01`]);
    expect(plan.refused).toEqual([
      { url: `${shard0}/attempt=00`, reason: `it is the winner ${shard0}/attempt=00` },
      { url: shard0, reason: `it contains the winner ${shard0}/attempt=00` },
      {
        url: `${shard0}/attempt=00/part-0.parquet`,
        reason: `it lies inside the winner ${shard0}/attempt=00`,
      },
      {
        url: `${ROOT}/data/r0/shard=00000`,
        reason: `it contains the winner ${ROOT}/data/r0/shard=00000/attempt=03/`,
      },
    ]);
  });

  it("compares winners by key too, whatever the spelling of their scheme or trailing slash", () => {
    const plan = planLoserCleanup({
      root: ROOT,
      attempts: [loser(`${shard0}/attempt=00`), loser(`${shard0}/attempt=00/x`)],
      winnerUrls: ["S3://lake/events/data/r1/shard=00000/attempt=00/"],
    });
    expect(plan.prefixes).toEqual([]);
    expect(plan.refused.map((r) => r.reason.split(" ").slice(0, 3).join(" "))).toEqual([
      "it is the",
      "it lies inside",
    ]);
  });

  it("refuses URLs that escape the root, and reserved keys, without throwing the plan away", () => {
    const plan = planLoserCleanup({
      root: ROOT,
      attempts: [
        loser("s3://lake/events2/data/r1/shard=00000/attempt=01"),
        loser("s3://other/events/data/r1/shard=00000/attempt=01"),
        loser(`${ROOT}/data/r1/../../x`),
        loser(`${ROOT}/data/r1/%2e%2e/x`),
        loser("file:///events/data/r1"),
        loser(ROOT),
        loser(`${ROOT}/_CURRENT`),
        loser(`${ROOT}/manifests`),
        loser(`${ROOT}/data`),
        loser(`${ROOT}/_archive/run-r1.jsonl`),
        loser(`${shard0}/attempt=09`),
      ],
      winnerUrls: [],
    });
    expect(plan.prefixes).toEqual([
      { url: `${shard0}/attempt=09`, prefix: "data/r1/shard=00000/attempt=09/" },
    ]);
    expect(plan.refused).toHaveLength(10);
    expect(plan.refused[0]?.reason).toMatch(
      /not under the dataset root s3:\/\/lake\/events: it lies outside the root/,
    );
    expect(plan.refused[1]?.reason).toMatch(/another bucket/);
    expect(plan.refused[2]?.reason).toMatch(/'\.\.' path segment/);
    expect(plan.refused[3]?.reason).toMatch(/percent-encoded/);
    expect(plan.refused[4]?.reason).toMatch(/another scheme/);
    expect(plan.refused[5]?.reason).toMatch(/the root itself/);
    expect(plan.refused.slice(6).map((r) => r.reason)).toEqual([
      "it is the dataset's _CURRENT pointer",
      "it is the whole manifests/ area of the dataset",
      "it is the whole data/ area of the dataset",
      "it lies in the dataset's _archive/",
    ]);
  });

  it("deduplicates by key, keeping the first spelling", () => {
    const plan = planLoserCleanup({
      root: ROOT,
      attempts: [
        loser(`${shard0}/attempt=01`),
        { url: `${shard0}/attempt=01/`, status: "CLEANUP_PENDING" },
        loser(`${shard0}/attempt=01`),
        loser(`${shard0}/attempt=00`),
        loser(`${shard0}/attempt=00`),
      ],
      winnerUrls: [`${shard0}/attempt=00`],
    });
    expect(plan.prefixes).toEqual([
      { url: `${shard0}/attempt=01`, prefix: "data/r1/shard=00000/attempt=01/" },
    ]);
    expect(plan.refused).toHaveLength(1);
  });

  it("works for file:// roots", () => {
    const plan = planLoserCleanup({
      root: "file:///var/lake/events",
      attempts: [
        loser("file:///var/lake/events/data/r1/shard=00000/attempt=01"),
        loser("file:///var/lake/x"),
      ],
      winnerUrls: ["file:///var/lake/events/data/r1/shard=00000/attempt=00"],
    });
    expect(plan.prefixes.map((p) => p.prefix)).toEqual(["data/r1/shard=00000/attempt=01/"]);
    expect(plan.refused.map((r) => r.url)).toEqual(["file:///var/lake/x"]);
  });
});
