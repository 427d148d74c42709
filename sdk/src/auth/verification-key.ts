// Verification keys for the signing primitive: a public JWK (or an HMAC shared secret)
// turned once into a cached node:crypto KeyObject, so the per-call hot path is one verify.
// Implements "One signing primitive": Ed25519, ECDSA P-256 (raw r||s) and HMAC-SHA256.
import type { JsonWebKey } from "node:crypto";
import { createHmac, createPublicKey, createSecretKey, timingSafeEqual, verify as cryptoVerify, type KeyObject } from "node:crypto";
import { TrustplaneError } from "../errors.js";
import { algorithmOfJwk, MIN_HMAC_SECRET_BYTES, type Algorithm } from "./algorithm.js";
import { decodeJwkMember, publicMembers } from "./jwk-members.js";
import { jwkThumbprint } from "./jwk-thumbprint.js";

export interface VerificationKey {
  /** RFC 7638 thumbprint of `jwk`. */
  keyId: string;
  algorithm: Algorithm;
  /** Public members only (for HS256 the shared secret JWK). */
  jwk: JsonWebKey;
  verify(data: Uint8Array, sig: Uint8Array): boolean;
}

/** Members that would make an asymmetric JWK a private key. */
const PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "oth"];

export function parseJwk(jwk: JsonWebKey | string): JsonWebKey {
  if (typeof jwk !== "string") {
    if (jwk === null || typeof jwk !== "object") {
      throw new TrustplaneError("INVALID_ARGUMENT", "INVALID_KEY", "a JWK must be a JSON object", "jwk");
    }
    return jwk;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(jwk);
  } catch {
    throw new TrustplaneError("INVALID_ARGUMENT", "INVALID_KEY", "the JWK is not valid JSON", "jwk");
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new TrustplaneError("INVALID_ARGUMENT", "INVALID_KEY", "a JWK must be a JSON object", "jwk");
  }
  return parsed as JsonWebKey;
}

/** Ed25519 and P-256 signatures are always 64 bytes (P-256 as IEEE P1363 r||s). */
const SIGNATURE_BYTES = 64;
const HMAC_BYTES = 32;

export function importVerificationKey(input: JsonWebKey | string): VerificationKey {
  const jwk = parseJwk(input);
  const algorithm = algorithmOfJwk(jwk);
  if (algorithm === "HS256") {
    const secret = decodeJwkMember(jwk, "k");
    if (secret.length < MIN_HMAC_SECRET_BYTES) {
      throw new TrustplaneError("INVALID_ARGUMENT", "INVALID_KEY", `HMAC secrets must be at least ${MIN_HMAC_SECRET_BYTES} bytes`, "jwk");
    }
    const keyObject = createSecretKey(secret);
    const pub = publicMembers(jwk);
    return {
      keyId: jwkThumbprint(pub),
      algorithm,
      jwk: pub,
      verify(data, sig) {
        if (sig.length !== HMAC_BYTES) return false;
        const mac = createHmac("sha256", keyObject).update(data).digest();
        return timingSafeEqual(mac, sig);
      },
    };
  }
  for (const m of PRIVATE_MEMBERS) {
    if ((jwk as Record<string, unknown>)[m] !== undefined) {
      throw new TrustplaneError(
        "INVALID_ARGUMENT",
        "PRIVATE_KEY_MATERIAL",
        `the JWK holds private member "${m}": send only the public key (never share a private key)`,
        "jwk",
      );
    }
  }
  decodeJwkMember(jwk, "x", 32);
  if (algorithm === "ES256") decodeJwkMember(jwk, "y", 32);
  const pub = publicMembers(jwk);
  let keyObject: KeyObject;
  try {
    keyObject = createPublicKey({ key: pub, format: "jwk" });
  } catch (e) {
    throw new TrustplaneError("INVALID_ARGUMENT", "INVALID_KEY", `the JWK is not a valid ${algorithm} public key: ${(e as Error).message}`, "jwk");
  }
  const verifyFn =
    algorithm === "Ed25519"
      ? (data: Uint8Array, sig: Uint8Array) => cryptoVerify(null, data, keyObject, sig)
      : (data: Uint8Array, sig: Uint8Array) => cryptoVerify("sha256", data, { key: keyObject, dsaEncoding: "ieee-p1363" }, sig);
  return {
    keyId: jwkThumbprint(pub),
    algorithm,
    jwk: pub,
    verify(data, sig) {
      if (sig.length !== SIGNATURE_BYTES) return false;
      try {
        return verifyFn(data, sig);
      } catch {
        return false;
      }
    },
  };
}
