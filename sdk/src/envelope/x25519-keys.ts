// X25519 key pairs for HPKE recipients: generation, raw 32-byte and JWK (OKP/X25519, RFC 8037)
// import/export, and conversion to node:crypto KeyObjects. Part of "Sealed results and the
// envelope format": the recipient key inside a signed request is a raw 32-byte X25519 key.

import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { invalidArgument } from "../errors.js";

export const X25519_KEY_LENGTH = 32;

// RFC 8410 PKCS#8 wrapper: a raw X25519 private key is the last 32 bytes of this encoding.
const PKCS8_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");
// Keys cross into node:crypto as JWKs: on Node 20 / OpenSSL 3 a JWK import takes ~6-36 us
// where the DER decoders take ~75 us (SPKI) and ~350 us (PKCS#8), which dominated a seal.

export interface X25519KeyPair {
  /** Raw 32-byte public key (RFC 7748 u-coordinate). */
  publicKey: Uint8Array;
  /** Raw 32-byte private scalar. Wipe with fill(0) when done. */
  privateKey: Uint8Array;
}

/** An OKP/X25519 JSON Web Key (RFC 8037); `d` is present only on private keys. */
export interface X25519Jwk {
  kty: "OKP";
  crv: "X25519";
  x: string;
  d?: string;
  kid?: string;
}

export function generateX25519KeyPair(): X25519KeyPair {
  const { publicKey, privateKey } = generateKeyPairSync("x25519");
  return { publicKey: rawPublicKey(publicKey), privateKey: rawPrivateKey(privateKey) };
}

export function checkRawKey(key: Uint8Array, field: string): void {
  if (!(key instanceof Uint8Array) || key.length !== X25519_KEY_LENGTH) {
    throw invalidArgument(field, `must be a raw ${X25519_KEY_LENGTH}-byte X25519 key`, "INVALID_X25519_KEY");
  }
}

export function publicKeyObject(raw: Uint8Array, field = "publicKey"): KeyObject {
  checkRawKey(raw, field);
  return createPublicKey({ key: { kty: "OKP", crv: "X25519", x: Buffer.from(raw).toString("base64url") }, format: "jwk" });
}

export function privateKeyObject(raw: Uint8Array, field = "privateKey"): KeyObject {
  checkRawKey(raw, field);
  try {
    // Node 20 requires `x` to be a string on a private OKP JWK but derives the key from `d`
    // alone; the public key is recomputed from the private one wherever it is needed.
    return createPrivateKey({ key: { kty: "OKP", crv: "X25519", x: "", d: Buffer.from(raw).toString("base64url") }, format: "jwk" });
  } catch {
    // A Node that validates `x` against `d` takes the slower, unambiguous PKCS#8 route.
    const der = Buffer.concat([PKCS8_PREFIX, raw]);
    try {
      return createPrivateKey({ key: der, format: "der", type: "pkcs8" });
    } finally {
      der.fill(0);
    }
  }
}

export function rawPublicKey(key: KeyObject): Uint8Array {
  return new Uint8Array(Buffer.from(jwkMember(key, "x"), "base64url"));
}

export function rawPrivateKey(key: KeyObject): Uint8Array {
  return new Uint8Array(Buffer.from(jwkMember(key, "d"), "base64url"));
}

function jwkMember(key: KeyObject, member: "x" | "d"): string {
  const value = key.export({ format: "jwk" })[member];
  if (typeof value !== "string") throw new TypeError(`X25519 key has no JWK member ${member}`);
  return value;
}

/**
 * A recipient's X25519 private key imported into node:crypto once, with its public key, for
 * opening many seals: each open then skips the private-key import and the public-key
 * derivation (together about two thirds of an open's cost when given raw bytes).
 */
export interface X25519RecipientKey {
  readonly keyObject: KeyObject;
  /** Raw 32-byte public key (pkR of the HPKE KEM context). */
  readonly publicKey: Uint8Array;
}

export function importX25519RecipientKey(privateKey: Uint8Array): X25519RecipientKey {
  const keyObject = privateKeyObject(privateKey, "recipientPrivateKey");
  return { keyObject, publicKey: rawPublicKey(createPublicKey(keyObject)) };
}

/** A raw private key or one imported with importX25519RecipientKey. */
export type X25519PrivateKeyInput = Uint8Array | X25519RecipientKey;

export function isRecipientKey(key: X25519PrivateKeyInput): key is X25519RecipientKey {
  return !(key instanceof Uint8Array) && typeof key === "object" && key !== null && "keyObject" in key;
}

/** The public key that belongs to a raw private key. */
export function x25519PublicKeyFromPrivate(privateKey: Uint8Array): Uint8Array {
  return rawPublicKey(createPublicKey(privateKeyObject(privateKey)));
}

export function exportX25519PublicJwk(publicKey: Uint8Array): X25519Jwk {
  checkRawKey(publicKey, "publicKey");
  return { kty: "OKP", crv: "X25519", x: Buffer.from(publicKey).toString("base64url") };
}

export function exportX25519PrivateJwk(privateKey: Uint8Array): X25519Jwk {
  return {
    ...exportX25519PublicJwk(x25519PublicKeyFromPrivate(privateKey)),
    d: Buffer.from(privateKey).toString("base64url"),
  };
}

/** Imports an OKP/X25519 JWK; returns the raw keys it holds and rejects inconsistent ones. */
export function importX25519Jwk(jwk: unknown): { publicKey: Uint8Array; privateKey?: Uint8Array } {
  const j = jwk as Partial<X25519Jwk> | null;
  if (j === null || typeof j !== "object" || j.kty !== "OKP" || j.crv !== "X25519") {
    throw invalidArgument("jwk", 'must be an OKP JWK with crv "X25519"', "INVALID_X25519_KEY");
  }
  const publicKey = decodeMember(j.x, "jwk.x");
  if (j.d === undefined) return { publicKey };
  const privateKey = decodeMember(j.d, "jwk.d");
  if (!Buffer.from(x25519PublicKeyFromPrivate(privateKey)).equals(publicKey)) {
    privateKey.fill(0);
    throw invalidArgument("jwk.x", "does not match the private key in jwk.d", "INVALID_X25519_KEY");
  }
  return { publicKey, privateKey };
}

function decodeMember(value: unknown, field: string): Uint8Array {
  if (typeof value !== "string" || !/^[A-Za-z0-9_-]*$/.test(value)) {
    throw invalidArgument(field, "must be unpadded base64url", "INVALID_X25519_KEY");
  }
  const raw = new Uint8Array(Buffer.from(value, "base64url"));
  checkRawKey(raw, field);
  return raw;
}
