import { ValidationError } from "../../errors.js";
import type { RecordedEvent } from "../../events/envelope.js";
import type { RegisterCommand } from "../command-runtime.js";
import { optionalIntegerFlag } from "../flags.js";
import { withExamples } from "../help-text.js";
import type { Style } from "../style.js";
import { renderTable } from "../table.js";
import { when } from "../views.js";

interface EventsOptions {
  stream?: string;
  from?: string;
  limit?: string;
}

const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 100_000;

/**
 * `events [--stream ID] [--from P] [--limit N]`: reads the log. `--from` is inclusive: the first
 * global position (or, with `--stream`, the first stream version) to print. `--stream` takes a
 * stream id, a run id, `run:<runId>` or `dataset:<datasetId>`; a stream with no events is not
 * found (exit 2). `--json` prints an array of event envelopes (`envelopeToJson`).
 *
 * @example `shardledger events --stream 2026-11-23 --from 1 --limit 50 --json`
 */
export const registerEvents: RegisterCommand = (program, runtime) => {
  const command = program
    .command("events")
    .description("read the event log: the global log in order, or one stream")
    .option(
      "--stream <id>",
      "only this stream: a run id, run-<runId>, dataset:<datasetId> or dataset-<datasetId> (unknown: exit 2)",
    )
    .option("--from <n>", "first global position to print, or first stream version with --stream (inclusive)")
    .option("--limit <n>", `at most this many events (default ${DEFAULT_LIMIT}, max ${MAX_LIMIT})`)
    .action(
      runtime.action<EventsOptions>(async (ctx, _args, options) => {
        const from = optionalIntegerFlag("--from", options.from, { min: 0 });
        const limit =
          optionalIntegerFlag("--limit", options.limit, { min: 1, max: MAX_LIMIT }) ?? DEFAULT_LIMIT;
        if (options.stream !== undefined && options.stream.length === 0) {
          throw new ValidationError("--stream", "must not be empty");
        }
        const ledger = await ctx.ledger();
        // The ledger reads a stream from a version (inclusive) but the global log after a position
        // (exclusive, a checkpoint); the CLI's --from is inclusive for both.
        const events =
          options.stream !== undefined
            ? await ledger.events({ stream: options.stream, from: Math.max(1, from ?? 1), limit })
            : await ledger.events({ from: Math.max(0, (from ?? 1) - 1), limit });
        // envelope.ts carries the metadata schema (zod): loaded here, not at CLI start.
        const { envelopeToJson } = await import("../../events/envelope.js");
        return { json: events.map(envelopeToJson), human: (style) => renderEvents(style, events) };
      }),
    );
  withExamples(command, [
    "shardledger events --limit 20",
    "shardledger events --stream 2026-11-23            # a run's stream (run-2026-11-23)",
    "shardledger events --stream dataset:events        # a dataset's stream (dataset-events)",
    "shardledger events --from 1200 --limit 500 --json",
  ]);
};

function renderEvents(style: Style, events: readonly RecordedEvent[]): string {
  if (events.length === 0) return style.dim("no events\n");
  return renderTable(
    style,
    ["POSITION", "STREAM", "VERSION", "TYPE", "RECORDED", "DATA"],
    events.map((e) => [
      e.globalPosition,
      e.streamId,
      e.streamVersion,
      style.cyan(e.type),
      when(e.recordedAt),
      summarise(e.data),
    ]),
  );
}

function summarise(data: unknown): string {
  const text = JSON.stringify(data) ?? "";
  return text.length > 80 ? `${text.slice(0, 79)}…` : text;
}
