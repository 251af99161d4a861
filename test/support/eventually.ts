/**
 * Polls `probe` until it returns a value `done` accepts, or throws after `timeoutMs`. The global
 * log is read only up to the cluster's oldest running transaction (its xmin), and other test files
 * share the server, so a reader may have to wait its turn, exactly as a real subscriber does.
 */
export async function eventually<T>(
  probe: () => Promise<T>,
  done: (value: T) => boolean,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (done(value) || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
