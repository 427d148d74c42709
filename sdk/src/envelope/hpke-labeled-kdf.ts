// HPKE's labeled HKDF-SHA256 (RFC 9180 §4): LabeledExtract and LabeledExpand, which prefix
// every input with "HPKE-v1" and a suite id. Part of "Sealed results and the envelope format".
// node:crypto's hkdfSync cannot express these (the labels go inside the HMAC input), so they
// are built on createHmac, as RFC 5869 defines Extract and Expand.

import { createHmac } from "node:crypto";

const HPKE_VERSION_LABEL = Buffer.from("HPKE-v1", "ascii");
/** Nh for HKDF-SHA256. */
export const SHA256_LENGTH = 32;

/** LabeledExtract(salt, label, ikm) = HKDF-Extract(salt, "HPKE-v1" || suite_id || label || ikm). */
export function labeledExtract(suiteId: Uint8Array, salt: Uint8Array, label: string, ikm: Uint8Array): Buffer {
  // An empty salt is an HMAC key of zero length, which HMAC pads to the same block as
  // Nh zero bytes: exactly RFC 5869's "if not provided, a string of HashLen zeros".
  const hmac = createHmac("sha256", salt);
  hmac.update(HPKE_VERSION_LABEL);
  hmac.update(suiteId);
  hmac.update(Buffer.from(label, "ascii"));
  hmac.update(ikm);
  return hmac.digest();
}

/**
 * LabeledExpand(prk, label, info, L) =
 *   HKDF-Expand(prk, I2OSP(L, 2) || "HPKE-v1" || suite_id || label || info, L).
 */
export function labeledExpand(
  suiteId: Uint8Array,
  prk: Uint8Array,
  label: string,
  info: Uint8Array,
  length: number,
): Buffer {
  if (!Number.isInteger(length) || length <= 0 || length > 255 * SHA256_LENGTH || length > 0xffff) {
    throw new RangeError(`labeledExpand: length ${length} is out of range`);
  }
  const lengthPrefix = Buffer.alloc(2);
  lengthPrefix.writeUInt16BE(length, 0);
  const labeledInfo = Buffer.concat([lengthPrefix, HPKE_VERSION_LABEL, suiteId, Buffer.from(label, "ascii"), info]);
  const out = Buffer.alloc(length);
  let previous: Buffer = Buffer.alloc(0);
  for (let counter = 1, offset = 0; offset < length; counter++) {
    const hmac = createHmac("sha256", prk);
    hmac.update(previous);
    hmac.update(labeledInfo);
    hmac.update(Uint8Array.of(counter));
    previous = hmac.digest();
    offset += previous.copy(out, offset);
  }
  previous.fill(0);
  return out;
}
