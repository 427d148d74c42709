// DHKEM(X25519, HKDF-SHA256), KEM id 0x0020 (RFC 9180 §4.1): Encap and Decap on node:crypto's
// X25519. Part of "Sealed results and the envelope format". Encap takes an optional fixed
// ephemeral private key only so the RFC 9180 test vectors can be reproduced. Decap takes the
// recipient key raw or imported once (importX25519RecipientKey), which skips the private-key
// import and the pkR derivation.

import { diffieHellman, generateKeyPairSync, type KeyObject } from "node:crypto";
import { TrustplaneError } from "../errors.js";
import { labeledExpand, labeledExtract, SHA256_LENGTH } from "./hpke-labeled-kdf.js";
import { importX25519RecipientKey, isRecipientKey, privateKeyObject, publicKeyObject, rawPublicKey, x25519PublicKeyFromPrivate, type X25519PrivateKeyInput } from "./x25519-keys.js";

const KEM_SUITE_ID = Buffer.from([0x4b, 0x45, 0x4d, 0x00, 0x20]); // "KEM" || I2OSP(0x0020, 2)
const EMPTY = new Uint8Array(0);

export interface Encapsulation {
  sharedSecret: Buffer;
  /** The serialized ephemeral public key (Nenc = 32). */
  enc: Uint8Array;
}

export function encap(recipientPublicKey: Uint8Array, fixedEphemeralPrivateKey?: Uint8Array): Encapsulation {
  const pkR = publicKeyObject(recipientPublicKey, "recipientPublicKey");
  let skE: KeyObject;
  let enc: Uint8Array;
  if (fixedEphemeralPrivateKey === undefined) {
    // Generated inline on purpose: a pool refilled with async generateKeyPair was measured
    // (Node 20.20) to cost the calling thread more per key (~35-45 µs dispatch plus the
    // completion callback, about 100 µs more main-thread time per seal) than generating
    // synchronously (~40-55 µs), so it moved no work off the hot path.
    const pair = generateKeyPairSync("x25519");
    skE = pair.privateKey;
    enc = rawPublicKey(pair.publicKey);
  } else {
    skE = privateKeyObject(fixedEphemeralPrivateKey, "ephemeralPrivateKey");
    enc = x25519PublicKeyFromPrivate(fixedEphemeralPrivateKey);
  }
  const dh = x25519(skE, pkR, "recipientPublicKey");
  const sharedSecret = extractAndExpand(dh, Buffer.concat([enc, recipientPublicKey]));
  return { sharedSecret, enc };
}

export function decap(enc: Uint8Array, recipientPrivateKey: X25519PrivateKeyInput): Buffer {
  const pkE = publicKeyObject(enc, "enc");
  const skR = isRecipientKey(recipientPrivateKey) ? recipientPrivateKey : importX25519RecipientKey(recipientPrivateKey);
  const dh = x25519(skR.keyObject, pkE, "enc");
  return extractAndExpand(dh, Buffer.concat([enc, skR.publicKey]));
}

function x25519(privateKey: KeyObject, publicKey: KeyObject, field: string): Buffer {
  let dh: Buffer;
  try {
    dh = diffieHellman({ privateKey, publicKey });
  } catch {
    // OpenSSL refuses low-order points whose product is all zeros.
    throw lowOrder(field);
  }
  // RFC 9180 §7.1.4: an all-zero X25519 output must abort, whatever the library did.
  if (dh.every((b) => b === 0)) throw lowOrder(field);
  return dh;
}

function lowOrder(field: string): TrustplaneError {
  return new TrustplaneError(
    "INVALID_ARGUMENT",
    "INVALID_X25519_KEY",
    `${field}: is a low-order X25519 point; use a key made by generateX25519KeyPair()`,
    field,
  );
}

function extractAndExpand(dh: Buffer, kemContext: Uint8Array): Buffer {
  const eaePrk = labeledExtract(KEM_SUITE_ID, EMPTY, "eae_prk", dh);
  dh.fill(0);
  const sharedSecret = labeledExpand(KEM_SUITE_ID, eaePrk, "shared_secret", kemContext, SHA256_LENGTH);
  eaePrk.fill(0);
  return sharedSecret;
}

/** Raw X25519 agreement with the same low-order checks, for key exchanges outside HPKE. */
export function x25519Agree(privateKey: Uint8Array, publicKey: Uint8Array, field = "publicKey"): Buffer {
  return x25519(privateKeyObject(privateKey, "privateKey"), publicKeyObject(publicKey, field), field);
}
