import type { RegisterCommand } from "../command-runtime.js";
import { withExamples } from "../help-text.js";

/**
 * `migrate`: creates or upgrades the ledger schema. `--json` prints `{ "version" }`.
 *
 * @example `shardledger migrate --json`
 */
export const registerMigrate: RegisterCommand = (program, runtime) => {
  const command = program
    .command("migrate")
    .description("create or upgrade the ledger schema (the only command that changes it)")
    .action(
      runtime.action(async (ctx) => {
        const ledger = await ctx.ledger({ migrating: true });
        const { version } = await ledger.migrate();
        return {
          json: { version },
          human: (style) => `schema ${style.bold(ctx.globals.schema)} is at version ${style.bold(version)}\n`,
        };
      }),
    );
  withExamples(command, [
    "shardledger migrate",
    "shardledger --database postgres://ledger@db.internal/ledger --schema shardledger migrate --json",
  ]);
};
