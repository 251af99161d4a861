import type { Command } from "commander";
import type { DatasetPolicyChanges } from "../../datasets/dataset-config.js";
import { ValidationError } from "../../errors.js";
import { datasetJson } from "../../ledger/json-shapes.js";
import type { CliRuntime } from "../command-runtime.js";
import { idArgument, optionalIntegerFlag, withFlagNames } from "../flags.js";
import { withExamples } from "../help-text.js";
import { POLICY_FLAG_NAMES, type PolicyFlags } from "../policy-flags.js";
import { renderDataset } from "../views.js";

type DatasetUpdateOptions = PolicyFlags;

/** The id first, then the policies (the "nothing to change" message lists the latter). */
const FLAG_NAMES = { datasetId: "<id>", ...POLICY_FLAG_NAMES } as const;

/**
 * `dataset update <id> [--keep-runs N] [--retention D] [--failed-retention D] [--stale-after D]
 * [--safety-window D]`: changes a dataset's policies (a DatasetPoliciesChanged event). `--json`
 * prints the dataset as `dataset create` does. Every value is validated as at create (exit 2 naming
 * the flag, nothing written); the root cannot change. A shorter failed retention or safety window
 * never takes back protection already promised (see README "Changing a dataset's policies").
 *
 * @example `shardledger dataset update events --keep-runs 3 --failed-retention 14d --json`
 */
export function registerDatasetUpdate(group: Command, runtime: CliRuntime): void {
  const update = group
    .command("update")
    .description("change a dataset's cleanup and retention policies (the root cannot change)")
    .argument("<id>", "the dataset")
    .option("--keep-runs <n>", "keep the newest N succeeded runs")
    .option("--retention <duration>", "prune terminal runs older than this")
    .option("--failed-retention <duration>", "keep failed runs and items retryable this long (from now on)")
    .option("--stale-after <duration>", "a run silent this long counts as abandoned")
    .option(
      "--safety-window <duration>",
      "never delete replaced or unreported data younger than this (a shorter one holds the old until its promises end)",
    )
    .action(
      runtime.action<DatasetUpdateOptions>(async (ctx, [id], options) => {
        const datasetId = idArgument("<id>", id as string);
        const changes: DatasetPolicyChanges = {
          ...(options.retention !== undefined ? { retention: options.retention } : {}),
          ...(options.failedRetention !== undefined ? { failedRetention: options.failedRetention } : {}),
          ...(options.staleAfter !== undefined ? { staleAfter: options.staleAfter } : {}),
          ...(options.safetyWindow !== undefined ? { safetyWindow: options.safetyWindow } : {}),
        };
        const keepRuns = optionalIntegerFlag("--keep-runs", options.keepRuns, { min: 1 });
        if (keepRuns !== undefined) changes.keepRuns = keepRuns;
        if (Object.keys(changes).length === 0) {
          throw new ValidationError(
            "dataset update",
            `nothing to change: give at least one of ${Object.values(FLAG_NAMES).slice(1).join(", ")}`,
          );
        }
        // Validated before the database is opened: bad input never opens it, let alone writes.
        // The schemas (zod) load here, not at CLI start: `--help` never pays for them.
        const { parsePolicyChanges } = await import("../../datasets/dataset-config.js");
        withFlagNames(FLAG_NAMES, () => parsePolicyChanges(changes));
        const ledger = await ctx.ledger();
        const dataset = datasetJson(
          await withFlagNames(FLAG_NAMES, () => ledger.updateDataset(datasetId, changes)),
        );
        return { json: dataset, human: (style) => renderDataset(style, dataset) };
      }),
    );
  withExamples(
    update,
    [
      "shardledger dataset update events --keep-runs 3",
      "shardledger dataset update events --failed-retention 14d --safety-window 30m --json",
    ],
    "Durations read 30s, 15m, 12h, 7d. Values equal to the current ones change nothing. A shorter\n--failed-retention applies to what fails from now on (what is in the floor keeps its date); a\nshorter --safety-window is held at the old length until what it promised has passed.",
  );
}
