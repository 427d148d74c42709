// Who made a verified call: the principal, the key that signed, roles, and the statement.
// Implements the output of the architecture's "Server checks" (signing primitive, server side).
import type { CallStatement, Certificate } from "../../../../sdk/src/gen/trustplane/auth/v1/auth.js";

export interface Caller {
  principal: string;
  keyId: string;
  roles: string[];
  /** Present when the key was accepted through a CA certificate rather than the key registry. */
  certificate?: Certificate;
  statement: CallStatement;
}
