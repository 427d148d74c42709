// Test support: awaits a call that must fail and hands back its TrustplaneError (status, reason,
// field), so a test asserts on what the caller would see; a success fails the test.
import { TrustplaneError } from "../../sdk/src/errors.js";

export async function refused(p: Promise<unknown>): Promise<TrustplaneError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof TrustplaneError) return e;
    throw e;
  }
  throw new Error("call unexpectedly succeeded");
}
