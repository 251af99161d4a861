import { datasetJson } from "../../ledger/json-shapes.js";
import type { RegisterCommand } from "../command-runtime.js";
import { withExamples } from "../help-text.js";
import { renderDatasets } from "../views.js";

/**
 * `datasets`: every registered dataset and its policies. `--json` prints an array of datasets.
 *
 * @example `shardledger datasets --json`
 */
export const registerDatasets: RegisterCommand = (program, runtime) => {
  const command = program
    .command("datasets")
    .description("list the registered datasets, their policies and current runs")
    .action(
      runtime.action(async (ctx) => {
        const ledger = await ctx.ledger();
        const datasets = (await ledger.datasets()).map(datasetJson);
        return { json: datasets, human: (style) => renderDatasets(style, datasets) };
      }),
    );
  withExamples(command, ["shardledger datasets", "shardledger datasets --json"]);
};
