/**
 * A SAFETY_RAIL refusal of a caller's input names the input field, as every refusal of input does
 * (README, "Exit codes and JSON errors": `field` names the flag, argument or input field when one
 * was wrong): `url` for an attempt's url outside its run's data area, `root` for a dataset root
 * that nests in another's. Nothing is written.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isSafetyRailError } from "../../src/errors.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger } from "../support/ledger.js";
import { refusalBody } from "../support/refusal.js";

describe(`SAFETY_RAIL names the input field (${BACKEND})`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  beforeEach(async () => {
    t = await openTestLedger();
    await t.ledger.createDataset({ datasetId: "ds", root: t.root });
    await t.ledger.startRun({ datasetId: "ds", numShards: 2, runId: "r1" });
  });
  afterEach(async () => {
    await t.close();
  });

  const refusal = (call: () => Promise<unknown>) => refusalBody(call, isSafetyRailError);

  it.each([
    ["outside the root", "s3://elsewhere/x/data/r1/shard=00000/attempt=00"],
    ["a sibling sharing the root's text", "ROOT2/data/r1/shard=00000/attempt=00"],
    ["escaping with an encoded ..", "ROOT/data/r1/%2E%2E/%2E%2E/_CURRENT"],
    ["the dataset's pointer", "ROOT/_CURRENT"],
    ["another run's data area", "ROOT/data/r2/shard=00000/attempt=00"],
  ])("an attempt url %s: field url, and no event", async (_, template) => {
    const url = template.replace("ROOT", t.root);
    const before = (await t.ledger.events({ stream: "run-r1", limit: 1000 })).length;
    expect(before).toBeGreaterThan(0); // RunStarted: the count below is of the right stream
    const body = await refusal(() => t.ledger.attemptSucceeded({ runId: "r1", shard: 0, attempt: 0, url }));
    expect(body).toMatchObject({ code: "SAFETY_RAIL", field: "url", url, rule: expect.any(String) });
    expect((await t.ledger.events({ stream: "run-r1", limit: 1000 })).length).toBe(before);
  });

  it("the same in a batch item", async () => {
    const [result] = await t.ledger.reportAttempts([
      { kind: "succeeded", runId: "r1", shard: 0, attempt: 0, url: `${t.root}/_CURRENT` },
    ]);
    expect(result).toMatchObject({ ok: false, error: { code: "SAFETY_RAIL", field: "url" } });
  });

  it("a dataset root nested in another's: field root", async () => {
    expect(
      await refusal(() => t.ledger.createDataset({ datasetId: "inner", root: `${t.root}/inner` })),
    ).toMatchObject({
      code: "SAFETY_RAIL",
      field: "root",
      otherDatasetId: "ds",
    });
  });
});
