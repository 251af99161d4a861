/**
 * The policy flags `dataset create` and `dataset update` share, as commander hands them over
 * (validated later by the dataset config's schema).
 *
 * @example
 * ```ts
 * const flags: PolicyFlags = { keepRuns: "3", retention: "14d" }
 * ```
 */
export interface PolicyFlags {
  keepRuns?: string;
  retention?: string;
  failedRetention?: string;
  staleAfter?: string;
  safetyWindow?: string;
}

/**
 * The flag of each policy field, so a ValidationError names what the user typed.
 *
 * @example
 * ```ts
 * POLICY_FLAG_NAMES.keepRuns // "--keep-runs"
 * ```
 */
export const POLICY_FLAG_NAMES = {
  keepRuns: "--keep-runs",
  retention: "--retention",
  failedRetention: "--failed-retention",
  staleAfter: "--stale-after",
  safetyWindow: "--safety-window",
} as const;
