import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isSafetyRailError, type SafetyRailError } from "../../src/errors.js";
import type { Ledger } from "../../src/ledger/open-ledger.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger } from "../support/ledger.js";

/** A second dataset on the same root, or nested in or around it, would share `_CURRENT` and run prefixes. */
describe(`dataset roots never coincide or nest (${BACKEND})`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let ledger: Ledger;

  beforeEach(async () => {
    t = await openTestLedger();
    ledger = t.ledger;
  });
  afterEach(() => t.close());

  async function refused(datasetId: string, root: string): Promise<SafetyRailError> {
    const before = (await ledger.events({ limit: 1000 })).length;
    const error = await ledger.createDataset({ datasetId, root }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(isSafetyRailError(error), `${datasetId} on ${root}: ${String(error)}`).toBe(true);
    expect((await ledger.events({ limit: 1000 })).length, "nothing written").toBe(before);
    await expect(ledger.dataset(datasetId)).rejects.toMatchObject({ code: "NOT_FOUND" });
    return error as SafetyRailError;
  }

  it("refuses a root equal to, inside or containing another dataset's, naming that dataset", async () => {
    await ledger.createDataset({ datasetId: "a", root: `${t.root}/lake/a` });

    const same = await refused("b", `${t.root}/lake/a`);
    expect(same.message).toMatch(/dataset a\b/);
    expect(same.details).toMatchObject({
      datasetId: "b",
      root: `${t.root}/lake/a`,
      otherDatasetId: "a",
      otherRoot: `${t.root}/lake/a`,
      relation: "same",
    });
    // A trailing slash is the same root.
    expect((await refused("b", `${t.root}/lake/a/`)).details).toMatchObject({ relation: "same" });

    const inside = await refused("b", `${t.root}/lake/a/data`);
    expect(inside.message).toMatch(/dataset a\b/);
    expect(inside.details).toMatchObject({ otherDatasetId: "a", relation: "inside" });

    const containing = await refused("b", `${t.root}/lake`);
    expect(containing.message).toMatch(/dataset a\b/);
    expect(containing.details).toMatchObject({ otherDatasetId: "a", relation: "contains" });

    // Segments, not strings: a sibling that merely shares a string prefix is fine.
    await ledger.createDataset({ datasetId: "ab", root: `${t.root}/lake/ab` });
    await ledger.createDataset({ datasetId: "a2", root: `${t.root}/lake/a2/x` });
    expect((await ledger.datasets()).map((d) => d.datasetId).sort()).toEqual(["a", "a2", "ab"]);
  });

  it("compares s3 roots by scheme, bucket (ignoring case) and path segments", async () => {
    await ledger.createDataset({ datasetId: "events", root: "s3://lake/warehouse/events" });

    expect((await refused("e2", "S3://LAKE/warehouse/events")).details).toMatchObject({
      otherDatasetId: "events",
      relation: "same",
    });
    expect((await refused("e3", "s3://Lake/warehouse/events/data")).details).toMatchObject({
      relation: "inside",
    });
    expect((await refused("e4", "s3://lake/warehouse")).details).toMatchObject({ relation: "contains" });
    // The bucket itself contains everything in it.
    expect((await refused("e5", "s3://lake")).details).toMatchObject({ relation: "contains" });

    await ledger.createDataset({ datasetId: "ab", root: "s3://lake/warehouse/eventsx" });
    await ledger.createDataset({ datasetId: "other-bucket", root: "s3://lake2/warehouse/events" });
    await ledger.createDataset({ datasetId: "file", root: "file:///lake/warehouse/events" });

    // A whole-bucket dataset refuses every later root in its bucket, and is refused beside one.
    await ledger.createDataset({ datasetId: "whole", root: "s3://bucket-b" });
    expect((await refused("under-whole", "s3://bucket-b/a")).details).toMatchObject({
      otherDatasetId: "whole",
      relation: "inside",
    });
  });

  it("keeps re-registering the identical dataset idempotent", async () => {
    const first = await ledger.createDataset({ datasetId: "a", root: `${t.root}/a`, keepRuns: 3 });
    const events = (await ledger.events({ limit: 1000 })).length;
    expect(await ledger.createDataset({ datasetId: "a", root: `${t.root}/a/`, keepRuns: 3 })).toEqual(first);
    expect((await ledger.events({ limit: 1000 })).length).toBe(events);
  });

  it("refuses one of two concurrent registrations of nesting roots", async () => {
    const other = await t.reopen();
    const outcomes = await Promise.allSettled([
      ledger.createDataset({ datasetId: "outer", root: `${t.root}/race` }),
      other.createDataset({ datasetId: "inner", root: `${t.root}/race/inner` }),
    ]);
    const fulfilled = outcomes.filter((o) => o.status === "fulfilled");
    const rejected = outcomes.filter((o) => o.status === "rejected");
    expect(fulfilled).toHaveLength(1);
    expect(rejected).toHaveLength(1);
    expect(isSafetyRailError((rejected[0] as PromiseRejectedResult).reason)).toBe(true);
    expect(await ledger.datasets()).toHaveLength(1);
  });
});
