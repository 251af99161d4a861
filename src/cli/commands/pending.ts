import type { PendingCleanupItem } from "../../projections/views.js";
import type { RegisterCommand } from "../command-runtime.js";
import { idArgument } from "../flags.js";
import { withExamples } from "../help-text.js";
import type { Style } from "../style.js";
import { renderTable } from "../table.js";
import { when } from "../views.js";

/**
 * `pending [--dataset ID]`: the pending-cleanup set (what `cleanup` will delete or retry).
 * `--json` prints an array of items `{ runId, datasetId, url, reason, state, tries, lastError…,
 * nextRetryAt, … }`.
 *
 * @example `shardledger pending --dataset events --json`
 */
export const registerPending: RegisterCommand = (program, runtime) => {
  const command = program
    .command("pending")
    .description("the pending-cleanup set: planned deletions and failed ones awaiting retry")
    .option("--dataset <id>", "only this dataset")
    .action(
      runtime.action<{ dataset?: string }>(async (ctx, _args, options) => {
        const datasetId =
          options.dataset === undefined ? undefined : idArgument("--dataset", options.dataset);
        const ledger = await ctx.ledger();
        if (datasetId !== undefined) await ledger.dataset(datasetId);
        const items = await ledger.pendingCleanup(datasetId === undefined ? {} : { datasetId });
        return { json: items, human: (style) => renderPending(style, items) };
      }),
    );
  withExamples(command, ["shardledger pending --dataset events", "shardledger pending --json | jq length"]);
};

function renderPending(style: Style, items: readonly PendingCleanupItem[]): string {
  if (items.length === 0) return style.dim("nothing pending\n");
  return renderTable(
    style,
    ["DATASET", "RUN", "URL", "REASON", "STATE", "TRIES", "LAST ERROR", "NEXT RETRY"],
    items.map((i) => [
      i.datasetId,
      i.runId,
      i.url,
      i.reason,
      style.status(i.state),
      i.tries,
      i.lastErrorCode === null ? null : `${i.lastErrorCode}: ${i.lastErrorMessage ?? ""}`,
      when(i.nextRetryAt),
    ]),
  );
}
