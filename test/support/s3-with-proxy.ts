import { afterAll, afterEach, beforeAll } from "vitest";
import { type S3FaultProxy, startS3FaultProxy } from "./s3-fault-proxy.js";
import { type S3rverHandle, startS3rver } from "./s3rver.js";

/**
 * Starts a real S3-protocol server (s3rver) with `buckets` and an injecting proxy in front of it
 * for the enclosing test file or `describe`, stops both afterwards, and (by default) drops every
 * programmed fault and counter after each test. The handles are filled in by `beforeAll`.
 *
 * @example
 * ```ts
 * const env = useS3WithFaultProxy(["lake"])
 * it("…", () => { env.proxy.slowDown(2); … })
 * ```
 */
export function useS3WithFaultProxy(
  buckets: readonly string[],
  options: { resetAfterEach?: boolean } = {},
): { s3: S3rverHandle; proxy: S3FaultProxy } {
  const env = {} as { s3: S3rverHandle; proxy: S3FaultProxy };
  beforeAll(async () => {
    env.s3 = await startS3rver({ buckets });
    env.proxy = await startS3FaultProxy({ target: env.s3.endpoint });
  });
  // Registered first, so it runs after the caller's own afterAll (hooks unwind like a stack).
  afterAll(async () => {
    await env.proxy?.stop();
    await env.s3?.stop();
  });
  if (options.resetAfterEach !== false) {
    afterEach(() => {
      env.proxy?.clearFaults();
      env.proxy?.resetCounts();
    });
  }
  return env;
}
