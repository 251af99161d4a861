/**
 * Stream names. One stream per run holds the run's and its attempts' events, so that attempt
 * reports and publish conflict on one expected version; one stream per dataset holds its
 * registration, policy changes and `_CURRENT` moves.
 *
 * @example
 * ```ts
 * runStream("2026-11-23") // "run-2026-11-23"
 * ```
 */
export const runStream = (runId: string): string => `run-${runId}`;
/** @example `datasetStream("events") // "dataset-events"` */
export const datasetStream = (datasetId: string): string => `dataset-${datasetId}`;

/**
 * The stream ids a name given by a person may mean, most specific first: `run:<runId>` and
 * `dataset:<datasetId>` name one stream; any other name is a stream id itself or, failing that,
 * a run id (so `r1` finds `run-r1`, and a generated run id `run-2026…` finds `run-run-2026…`).
 * A bare dataset id is never guessed: a run and a dataset may share an id, and the answer must
 * not switch between their streams depending on which exists.
 *
 * @example
 * ```ts
 * streamCandidates("r1")          // ["r1", "run-r1"]
 * streamCandidates("dataset:ev")  // ["dataset-ev"]
 * ```
 */
export function streamCandidates(name: string): string[] {
  if (name.startsWith("run:")) return [runStream(name.slice("run:".length))];
  if (name.startsWith("dataset:")) return [datasetStream(name.slice("dataset:".length))];
  return [name, runStream(name)];
}
