// The three signature algorithms of the signing primitive and how a JWK maps to one.
// Implements "One signing primitive": Ed25519 (default), ECDSA P-256, HMAC-SHA256.
import type { JsonWebKey } from "node:crypto";
import { TrustplaneError } from "../errors.js";

export type Algorithm = "Ed25519" | "ES256" | "HS256";

/** JOSE "alg" values we accept in a JWK next to our own names. */
const JOSE_ALG: Readonly<Record<Algorithm, readonly string[]>> = {
  Ed25519: ["EdDSA", "Ed25519"],
  ES256: ["ES256"],
  HS256: ["HS256"],
};

/**
 * Decides the algorithm from kty/crv only (never from "alg" alone, so a key cannot be
 * talked into another algorithm); an "alg" member that disagrees is rejected.
 */
export function algorithmOfJwk(jwk: JsonWebKey): Algorithm {
  let alg: Algorithm;
  if (jwk.kty === "OKP" && jwk.crv === "Ed25519") alg = "Ed25519";
  else if (jwk.kty === "EC" && jwk.crv === "P-256") alg = "ES256";
  else if (jwk.kty === "oct") alg = "HS256";
  else {
    throw new TrustplaneError(
      "INVALID_ARGUMENT",
      "UNSUPPORTED_KEY",
      `unsupported JWK (kty ${JSON.stringify(jwk.kty)}, crv ${JSON.stringify(jwk.crv)}): use OKP/Ed25519, EC/P-256 or oct (HMAC-SHA256)`,
      "jwk",
    );
  }
  if (jwk.alg !== undefined && (typeof jwk.alg !== "string" || !JOSE_ALG[alg].includes(jwk.alg))) {
    throw new TrustplaneError("INVALID_ARGUMENT", "UNSUPPORTED_KEY", `JWK alg ${JSON.stringify(jwk.alg)} does not match its key type (${alg})`, "jwk");
  }
  return alg;
}

/** HMAC secrets shorter than the hash output weaken HMAC-SHA256; refuse them. */
export const MIN_HMAC_SECRET_BYTES = 32;
