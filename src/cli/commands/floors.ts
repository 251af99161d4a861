import type { RegisterCommand } from "../command-runtime.js";
import { datasetListing } from "../dataset-listing.js";
import { withExamples } from "../help-text.js";
import { renderTable } from "../table.js";
import { when } from "../views.js";

/**
 * `floors <datasetId>`: what the failed-retention floor protects and until when. `--json` prints
 * an array of `{ datasetId, kind, runId, url, failedAt, protectedUntil }`.
 *
 * @example `shardledger floors events --json`
 */
export const registerFloors: RegisterCommand = (program, runtime) => {
  const command = program
    .command("floors")
    .description("failed runs and cleanup items kept inspectable and retryable, and until when")
    .argument("<datasetId>", "the dataset")
    .action(
      runtime.action(
        datasetListing(
          (ledger, id) => ledger.retentionFloors(id),
          (style, floors) =>
            floors.length === 0
              ? style.dim("nothing under the failed-retention floor\n")
              : renderTable(
                  style,
                  ["KIND", "RUN", "URL", "FAILED", "PROTECTED UNTIL"],
                  floors.map((f) => [f.kind, f.runId, f.url, when(f.failedAt), when(f.protectedUntil)]),
                ),
        ),
      ),
    );
  withExamples(command, ["shardledger floors events"]);
};
