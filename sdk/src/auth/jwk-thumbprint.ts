// RFC 7638 JWK thumbprints: the key id of every Trustplane key.
// Implements "One signing primitive": key id = base64url(SHA-256(required members, sorted)).
import type { JsonWebKey } from "node:crypto";
import { createHash } from "node:crypto";
import { TrustplaneError } from "../errors.js";

/** Required members per kty (RFC 7638 section 3.2), already in lexicographic order. */
const REQUIRED: Readonly<Record<string, readonly string[]>> = {
  EC: ["crv", "kty", "x", "y"],
  OKP: ["crv", "kty", "x"],
  RSA: ["e", "kty", "n"],
  oct: ["k", "kty"],
};

export function jwkThumbprint(jwk: JsonWebKey): string {
  const members = jwk.kty ? REQUIRED[jwk.kty] : undefined;
  if (!members) {
    throw new TrustplaneError("INVALID_ARGUMENT", "UNSUPPORTED_KEY", `cannot compute a thumbprint for kty ${JSON.stringify(jwk.kty)}`, "jwk");
  }
  const record = jwk as Record<string, unknown>;
  const parts: string[] = [];
  for (const m of members) {
    const v = record[m];
    if (typeof v !== "string" || v === "") {
      throw new TrustplaneError("INVALID_ARGUMENT", "INVALID_KEY", `JWK member "${m}" is missing`, "jwk");
    }
    // JSON.stringify gives the RFC 8259 string form with no whitespace, as RFC 7638 requires.
    parts.push(`${JSON.stringify(m)}:${JSON.stringify(v)}`);
  }
  return createHash("sha256").update(`{${parts.join(",")}}`, "utf8").digest("base64url");
}
