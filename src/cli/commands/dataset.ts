import type { DatasetInput } from "../../datasets/dataset-config.js";
import { datasetJson } from "../../ledger/json-shapes.js";
import type { RegisterCommand } from "../command-runtime.js";
import { optionalIntegerFlag, withFlagNames } from "../flags.js";
import { withExamples } from "../help-text.js";
import { POLICY_FLAG_NAMES, type PolicyFlags } from "../policy-flags.js";
import { renderDataset } from "../views.js";
import { registerDatasetUpdate } from "./dataset-update.js";

interface DatasetCreateOptions extends PolicyFlags {
  root: string;
}

const FLAG_NAMES = { datasetId: "<id>", root: "--root", ...POLICY_FLAG_NAMES } as const;

/**
 * `dataset create <id> --root URL [policies]`: registers a dataset. `--json` prints the dataset
 * (see {@link datasetJson}). Registering the same definition again is a no-op; a different one
 * is refused (exit 3).
 *
 * @example `shardledger dataset create events --root s3://lake/events --retention 14d --json`
 */
export const registerDataset: RegisterCommand = (program, runtime) => {
  const group = program
    .command("dataset")
    .description("register datasets and change their policies (see also `datasets`, `status`)");
  withExamples(group, [
    "shardledger dataset create events --root s3://lake/events --keep-runs 5",
    "shardledger dataset update events --keep-runs 3",
  ]);

  const create = group
    .command("create")
    .description("register a dataset: its root URL and its cleanup and retention policies")
    .argument("<id>", "dataset id (letters, digits, . _ -)")
    .requiredOption("--root <url>", "root URL: s3://bucket/prefix or file:///abs/path")
    .option("--keep-runs <n>", "keep the newest N succeeded runs (default 10)")
    .option("--retention <duration>", "prune terminal runs older than this (default 30d)")
    .option("--failed-retention <duration>", "keep failed runs and items retryable this long (default 7d)")
    .option("--stale-after <duration>", "a run silent this long counts as abandoned (default 1h)")
    .option(
      "--safety-window <duration>",
      "never delete replaced or unreported data younger than this (default 1h; 0s allowed)",
    )
    .action(
      runtime.action<DatasetCreateOptions>(async (ctx, [id], options) => {
        const input: DatasetInput = {
          datasetId: id as string,
          root: options.root,
          ...(options.retention !== undefined ? { retention: options.retention } : {}),
          ...(options.failedRetention !== undefined ? { failedRetention: options.failedRetention } : {}),
          ...(options.staleAfter !== undefined ? { staleAfter: options.staleAfter } : {}),
          ...(options.safetyWindow !== undefined ? { safetyWindow: options.safetyWindow } : {}),
        };
        const keepRuns = optionalIntegerFlag("--keep-runs", options.keepRuns, { min: 1 });
        if (keepRuns !== undefined) input.keepRuns = keepRuns;
        // The schemas (zod) load here, not at CLI start: `--help` never pays for them.
        const { parseDatasetInput } = await import("../../datasets/dataset-config.js");
        withFlagNames(FLAG_NAMES, () => parseDatasetInput(input));
        const ledger = await ctx.ledger();
        const dataset = datasetJson(await withFlagNames(FLAG_NAMES, () => ledger.createDataset(input)));
        return { json: dataset, human: (style) => renderDataset(style, dataset) };
      }),
    );
  withExamples(
    create,
    [
      "shardledger dataset create events --root s3://lake/events",
      "shardledger dataset create events --root file:///data/events --keep-runs 3 --retention 14d --safety-window 30m --json",
    ],
    'Durations read 30s, 15m, 12h, 7d. --json prints the dataset with each policy as text\n(retention: "14d") and in milliseconds (retentionMs).',
  );
  registerDatasetUpdate(group, runtime);
};
