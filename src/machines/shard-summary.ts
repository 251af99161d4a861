/**
 * A list of shards short enough for a message: the first 20, then how many in all.
 *
 * @example
 * ```ts
 * summariseShards([3, 7]) // "3, 7"
 * ```
 */
export function summariseShards(shards: readonly number[]): string {
  const shown = shards.slice(0, 20).join(", ");
  return shards.length > 20 ? `${shown}, … (${shards.length} in all)` : shown;
}
