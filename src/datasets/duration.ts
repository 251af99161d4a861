const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const;
const DURATION = /^(\d+)(ms|s|m|h|d|w)$/;
/** The largest duration accepted: 100 years. Anything larger is a typo, not a policy. */
export const MAX_DURATION_MS = 100 * 365 * UNIT_MS.d;

/**
 * Parses `30s`, `15m`, `12h`, `7d` (also `ms` and `w`) into milliseconds. Returns `undefined` for
 * anything else, including negative, fractional, unit-less and absurdly large values.
 *
 * @example
 * ```ts
 * parseDuration("15m") // 900000
 * parseDuration("-1d") // undefined
 * ```
 */
export function parseDuration(text: string): number | undefined {
  const m = DURATION.exec(text.trim());
  if (!m) return undefined;
  const ms = Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
  return Number.isSafeInteger(ms) && ms <= MAX_DURATION_MS ? ms : undefined;
}

/**
 * Formats milliseconds as the largest whole unit of `d`, `h`, `m`, `s` (`90000` → `90s`,
 * `604800000` → `7d`), the units the CLI documents.
 *
 * @example
 * ```ts
 * formatDuration(3_600_000) // "1h"
 * ```
 */
export function formatDuration(ms: number): string {
  for (const unit of ["d", "h", "m", "s"] as const) {
    if (ms !== 0 && ms % UNIT_MS[unit] === 0) return `${ms / UNIT_MS[unit]}${unit}`;
  }
  return ms === 0 ? "0s" : `${ms}ms`;
}
