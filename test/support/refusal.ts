import { expect } from "vitest";
import { type ErrorBody, errorBody } from "../../src/errors.js";

/**
 * The JSON error body of the refusal `call` must end in, after checking it is the kind `is`
 * accepts (a call that succeeds fails the test).
 *
 * @example
 * ```ts
 * expect(await refusalBody(() => ledger.publish("r1"), isIllegalTransitionError)).toMatchObject({ runId: "r1" })
 * ```
 */
export async function refusalBody(
  call: () => Promise<unknown>,
  is: (e: unknown) => boolean,
): Promise<ErrorBody["error"]> {
  const e = await call().then(
    () => {
      throw new Error("expected a refusal");
    },
    (err: unknown) => err,
  );
  expect(is(e)).toBe(true);
  return errorBody(e).error;
}
