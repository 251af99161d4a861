/**
 * Shares one run of an expensive check among concurrent callers without weakening it: a caller
 * is answered by a run that STARTED after it called, never by one already in flight (that run
 * may have looked before something changed). So at most two runs overlap a burst of callers: the
 * one in flight, and one next run that all of them wait for together.
 *
 * Maintenance uses it for the fencing check before every object-store request: sixteen deletions
 * in flight ask together, one probe answers them all, and each still sees a probe made after it
 * asked.
 *
 * @example
 * ```ts
 * const assertHeld = coalescedCheck(() => lease.assertHeld())
 * await Promise.all(prefixes.map(async (p) => { await assertHeld(); await store.deleteMany(keysOf(p)) }))
 * ```
 */
export function coalescedCheck(check: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | null = null;
  let queued: Promise<void> | null = null;
  const start = (): Promise<void> => {
    const run = check().finally(() => {
      if (running === run) running = null;
    });
    running = run;
    return run;
  };
  return () => {
    if (running === null) return start();
    // One in flight: wait for it to end, then share the next run with everyone else waiting.
    queued ??= running
      .catch(() => {})
      .then(() => {
        queued = null;
        return start();
      });
    return queued;
  };
}
