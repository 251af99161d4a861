/**
 * Runs `work` over the items of `source` with at most `limit` in flight. Items are pulled lazily,
 * one at a time, when a worker is free: an async generator that plans work (appends an event
 * before it yields what the event planned) is never asked for more than the workers take, so it
 * runs ahead of them by at most what it buffers itself. The first error stops further pulls; the
 * items in flight finish, then it is thrown.
 *
 * @example
 * ```ts
 * await forEachBounded(prefixes, 16, async (prefix) => {
 *   await deletePrefix(store, prefix, { policy })
 * })
 * ```
 */
export async function forEachBounded<T>(
  source: Iterable<T> | AsyncIterable<T>,
  limit: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  if (!Number.isInteger(limit) || limit < 1)
    throw new RangeError(`limit must be an integer ≥ 1, got ${limit}`);
  const iterator =
    Symbol.asyncIterator in source
      ? (source as AsyncIterable<T>)[Symbol.asyncIterator]()
      : (source as Iterable<T>)[Symbol.iterator]();
  let failed: { error: unknown } | null = null;
  let done = false;
  // Pulls are serialised: an iterator's next() must not be called again before it settled.
  let pulling: Promise<unknown> = Promise.resolve();
  const pull = (): Promise<IteratorResult<T>> => {
    const next = pulling.then(() => iterator.next());
    pulling = next.catch(() => {});
    return next;
  };
  const worker = async () => {
    while (!done && failed === null) {
      let step: IteratorResult<T>;
      try {
        step = await pull();
      } catch (error) {
        failed ??= { error };
        return;
      }
      if (step.done) {
        done = true;
        return;
      }
      if (failed !== null) return;
      try {
        await work(step.value);
      } catch (error) {
        failed ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: limit }, worker));
  if (failed !== null) {
    await iterator.return?.();
    throw (failed as { error: unknown }).error;
  }
}
