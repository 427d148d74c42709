// One streaming-AEAD segment: AES-256-GCM under the envelope's segment key with the nonce
// prefix(7) || segment counter (uint32 BE) || last-segment flag (1 byte), as Tink's
// AES-GCM-HKDF streaming. Part of "Sealed results and the envelope format": the counter
// defeats reordering, the flag defeats truncation and extension, the key defeats splicing.

import { createCipheriv, createDecipheriv, type KeyObject } from "node:crypto";

export const TAG_LENGTH = 16;
/** The counter is 4 bytes: an envelope holds at most 2^32 segments. */
export const MAX_SEGMENTS = 2 ** 32;

export function segmentNonce(prefix: Uint8Array, index: number, last: boolean): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.set(prefix, 0);
  nonce.writeUInt32BE(index, 7);
  nonce[11] = last ? 1 : 0;
  return nonce;
}

/** Encrypts a segment given as pieces; returns ciphertext pieces followed by the tag. */
export function encryptSegment(key: KeyObject, prefix: Uint8Array, index: number, last: boolean, pieces: Uint8Array[]): Buffer[] {
  const cipher = createCipheriv("aes-256-gcm", key, segmentNonce(prefix, index, last));
  const out: Buffer[] = [];
  for (const piece of pieces) {
    const ct = cipher.update(piece);
    if (ct.length > 0) out.push(ct);
  }
  const tail = cipher.final();
  if (tail.length > 0) out.push(tail);
  out.push(cipher.getAuthTag());
  return out;
}

/**
 * Decrypts a segment (ciphertext pieces without the tag, then the tag). Returns the plaintext
 * pieces only once the tag has verified; returns undefined, with the partial plaintext wiped,
 * when it does not.
 */
export function decryptSegment(
  key: KeyObject,
  prefix: Uint8Array,
  index: number,
  last: boolean,
  pieces: Uint8Array[],
  tag: Uint8Array,
): Buffer[] | undefined {
  const decipher = createDecipheriv("aes-256-gcm", key, segmentNonce(prefix, index, last));
  decipher.setAuthTag(tag);
  const out: Buffer[] = [];
  for (const piece of pieces) {
    const pt = decipher.update(piece);
    if (pt.length > 0) out.push(pt);
  }
  try {
    const tail = decipher.final();
    if (tail.length > 0) out.push(tail);
    return out;
  } catch {
    for (const pt of out) pt.fill(0);
    return undefined;
  }
}
