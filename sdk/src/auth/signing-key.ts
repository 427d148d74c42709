// Signing keys for the signing primitive: generate, import and export private JWKs, and
// sign with a cached node:crypto KeyObject (the per-call hot path).
// Implements "One signing primitive": Ed25519 (default), ECDSA P-256 (raw r||s), HMAC-SHA256.
import type { JsonWebKey } from "node:crypto";
import { createHmac, createPrivateKey, createPublicKey, createSecretKey, generateKeyPairSync, randomBytes, sign as cryptoSign, type KeyObject } from "node:crypto";
import { TrustplaneError } from "../errors.js";
import { algorithmOfJwk, MIN_HMAC_SECRET_BYTES, type Algorithm } from "./algorithm.js";
import { decodeJwkMember, publicMembers } from "./jwk-members.js";
import { jwkThumbprint } from "./jwk-thumbprint.js";
import { parseJwk } from "./verification-key.js";

export type { Algorithm };

export interface SigningKey {
  /** RFC 7638 thumbprint of publicJwk. */
  keyId: string;
  algorithm: Algorithm;
  /** The public JWK; for HS256 the oct JWK itself, since it is a shared secret. */
  publicJwk: JsonWebKey;
  sign(data: Uint8Array): Uint8Array;
}

/** Private JWKs live here, not on the key object, so logging or spreading a key never leaks them. */
const PRIVATE_JWKS = new WeakMap<SigningKey, JsonWebKey>();

function makeKey(algorithm: Algorithm, privateJwk: JsonWebKey, publicJwk: JsonWebKey, keyObject: KeyObject): SigningKey {
  let signFn: (data: Uint8Array) => Uint8Array;
  if (algorithm === "Ed25519") signFn = (data) => cryptoSign(null, data, keyObject);
  else if (algorithm === "ES256") signFn = (data) => cryptoSign("sha256", data, { key: keyObject, dsaEncoding: "ieee-p1363" });
  else signFn = (data) => createHmac("sha256", keyObject).update(data).digest();
  const key: SigningKey = { keyId: jwkThumbprint(publicJwk), algorithm, publicJwk, sign: signFn };
  PRIVATE_JWKS.set(key, privateJwk);
  return key;
}

export function generateSigningKey(alg: Algorithm = "Ed25519"): SigningKey {
  if (alg === "HS256") {
    return importSigningKey({ kty: "oct", k: randomBytes(32).toString("base64url") });
  }
  if (alg !== "Ed25519" && alg !== "ES256") {
    throw new TrustplaneError("INVALID_ARGUMENT", "UNSUPPORTED_KEY", `unsupported algorithm ${JSON.stringify(alg)}: use Ed25519, ES256 or HS256`, "algorithm");
  }
  const { privateKey } =
    alg === "Ed25519" ? generateKeyPairSync("ed25519") : generateKeyPairSync("ec", { namedCurve: "P-256" });
  return importSigningKey(privateKey.export({ format: "jwk" }) as JsonWebKey);
}

export function importSigningKey(input: JsonWebKey | string): SigningKey {
  const jwk = parseJwk(input);
  const algorithm = algorithmOfJwk(jwk);
  if (algorithm === "HS256") {
    const secret = decodeJwkMember(jwk, "k");
    if (secret.length < MIN_HMAC_SECRET_BYTES) {
      throw new TrustplaneError("INVALID_ARGUMENT", "INVALID_KEY", `HMAC secrets must be at least ${MIN_HMAC_SECRET_BYTES} bytes`, "jwk");
    }
    const pub = publicMembers(jwk);
    return makeKey(algorithm, { ...pub }, pub, createSecretKey(secret));
  }
  decodeJwkMember(jwk, "d", 32);
  decodeJwkMember(jwk, "x", 32);
  if (algorithm === "ES256") decodeJwkMember(jwk, "y", 32);
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey({ key: jwk, format: "jwk" });
  } catch (e) {
    throw new TrustplaneError("INVALID_ARGUMENT", "INVALID_KEY", `the JWK is not a valid ${algorithm} private key: ${(e as Error).message}`, "jwk");
  }
  // A JWK whose public members do not belong to its private scalar would sign under a key id
  // that verifies nothing; derive the public half and insist it matches.
  const derived = publicMembers(createPublicKey(keyObject).export({ format: "jwk" }) as JsonWebKey);
  const given = publicMembers(jwk);
  if (derived.x !== given.x || derived.y !== given.y) {
    throw new TrustplaneError("INVALID_ARGUMENT", "INVALID_KEY", "the JWK's public members do not match its private key", "jwk");
  }
  return makeKey(algorithm, { ...derived, d: jwk.d }, derived, keyObject);
}

/** The private JWK (for writing a key file with mode 0600); never log it. */
export function exportPrivateJwk(key: SigningKey): JsonWebKey {
  const jwk = PRIVATE_JWKS.get(key);
  if (!jwk) {
    throw new TrustplaneError("INVALID_ARGUMENT", "INVALID_KEY", "this key was not created by generateSigningKey/importSigningKey", "key");
  }
  return { ...jwk };
}
