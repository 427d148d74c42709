// Strict decoding of the base64url members of a JWK (x, y, d, k) for the signing primitive.
// Non-canonical base64url would let one key appear under two thumbprints (two key ids),
// so a member must re-encode to exactly the text it was given.
import type { JsonWebKey } from "node:crypto";
import { TrustplaneError } from "../errors.js";

export function decodeJwkMember(jwk: JsonWebKey, member: string, expectedBytes?: number): Buffer {
  const text = (jwk as Record<string, unknown>)[member];
  if (typeof text !== "string" || text === "") {
    throw new TrustplaneError("INVALID_ARGUMENT", "INVALID_KEY", `JWK member "${member}" is missing`, "jwk");
  }
  const bytes = Buffer.from(text, "base64url");
  if (bytes.toString("base64url") !== text) {
    throw new TrustplaneError("INVALID_ARGUMENT", "INVALID_KEY", `JWK member "${member}" is not canonical base64url`, "jwk");
  }
  if (expectedBytes !== undefined && bytes.length !== expectedBytes) {
    throw new TrustplaneError("INVALID_ARGUMENT", "INVALID_KEY", `JWK member "${member}" must be ${expectedBytes} bytes, got ${bytes.length}`, "jwk");
  }
  return bytes;
}

/** The public members that identify a key, in the form we store and hand out. */
export function publicMembers(jwk: JsonWebKey): JsonWebKey {
  switch (jwk.kty) {
    case "OKP":
      return { kty: "OKP", crv: jwk.crv, x: jwk.x };
    case "EC":
      return { kty: "EC", crv: jwk.crv, x: jwk.x, y: jwk.y };
    default:
      // oct: the "public" form of a shared secret is the secret itself.
      return { kty: "oct", k: jwk.k };
  }
}
