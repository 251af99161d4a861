/**
 * Every ILLEGAL_TRANSITION names what the README's error table promises: the command as the user
 * called it (never an internal step such as `selectWinners`), the state it was refused in, and the
 * run and dataset it is about. A client deciding what to do next reads these fields, not the
 * message.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isIllegalTransitionError } from "../../src/errors.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger } from "../support/ledger.js";
import { refusalBody } from "../support/refusal.js";
import { writeAndPublish } from "../support/runs.js";

describe(`ILLEGAL_TRANSITION details (${BACKEND})`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  beforeEach(async () => {
    t = await openTestLedger();
    await t.ledger.createDataset({ datasetId: "ds", root: t.root });
  });
  afterEach(async () => {
    await t.close();
  });

  const refusal = (call: () => Promise<unknown>) => refusalBody(call, isIllegalTransitionError);
  const publish = (runId: string) =>
    writeAndPublish(t.ledger, { dir: t.dir, root: t.root, datasetId: "ds", runId, numShards: 1 });

  it("publish of a run already published", async () => {
    await publish("r1");
    expect(await refusal(() => t.ledger.publish("r1"))).toMatchObject({
      command: "publish",
      state: "SUCCEEDED",
      runId: "r1",
      datasetId: "ds",
    });
  });

  it("publish of a FAILED run names publish, not the step that refused it", async () => {
    await t.ledger.startRun({ datasetId: "ds", numShards: 1, runId: "r1" });
    await t.ledger.failRun("r1", "writer crashed");
    expect(await refusal(() => t.ledger.publish("r1"))).toMatchObject({
      command: "publish",
      state: "FAILED",
      runId: "r1",
      datasetId: "ds",
    });
    // The step's own refusal travels as the cause, for a debugger's stack.
    const error = await t.ledger.publish("r1").catch((e: unknown) => e);
    expect((error as Error).cause).toMatchObject({ details: { command: "selectWinners", state: "FAILED" } });
  });

  it("rollback to the current run, and to a run that is not SUCCEEDED", async () => {
    await publish("r1");
    expect(await refusal(() => t.ledger.rollback("ds", "r1"))).toMatchObject({
      command: "rollback",
      state: "SUCCEEDED",
      runId: "r1",
      datasetId: "ds",
    });
    await t.ledger.startRun({ datasetId: "ds", numShards: 1, runId: "r2" });
    expect(await refusal(() => t.ledger.rollback("ds", "r2"))).toMatchObject({
      command: "rollback",
      state: "STARTED",
      runId: "r2",
      datasetId: "ds",
    });
  });

  it("createDataset of a registered id with another root names the dataset", async () => {
    expect(
      await refusal(() => t.ledger.createDataset({ datasetId: "ds", root: `${t.root}/elsewhere` })),
    ).toMatchObject({ command: "createDataset", state: "registered", datasetId: "ds" });
  });
});
