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
