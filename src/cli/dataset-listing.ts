import type { Ledger } from "../ledger/open-ledger.js";
import type { CommandHandler } from "./command-runtime.js";
import { idArgument } from "./flags.js";
import type { Style } from "./style.js";

/**
 * The handler of a command that lists something of one dataset (`runs`, `floors`, `rollups`):
 * checks the `<datasetId>` argument, opens the ledger, makes sure the dataset exists (an unknown
 * one is NOT_FOUND, exit 2, never an empty list), queries, and prints `--json` or a table.
 *
 * @example
 * ```ts
 * program.command("runs").argument("<datasetId>").action(
 *   runtime.action(datasetListing((ledger, id) => ledger.runs(id), renderRuns)),
 * )
 * ```
 */
export function datasetListing<T>(
  list: (ledger: Ledger, datasetId: string) => Promise<T>,
  render: (style: Style, listed: T) => string,
): CommandHandler<unknown> {
  return async (ctx, [datasetId]) => {
    const id = idArgument("<datasetId>", datasetId as string);
    const ledger = await ctx.ledger();
    await ledger.dataset(id);
    const listed = await list(ledger, id);
    return { json: listed, human: (style) => render(style, listed) };
  };
}
