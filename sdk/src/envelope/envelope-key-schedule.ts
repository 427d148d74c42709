// Per-envelope keys: the key commitment and the segment key, both HKDF-SHA256 from the content
// key (random and HPKE-sealed, or the caller's DEK) and the header's salt. Part of "Sealed
// results and the envelope format": the segment key follows Tink's AES-GCM-HKDF streaming
// (HKDF with a per-stream salt), and the commitment follows the AWS Encryption SDK's key
// commitment (a KDF output stored in the header and compared before any decryption).

import { createHash, createSecretKey, hkdfSync, timingSafeEqual, type KeyObject } from "node:crypto";

const COMMITMENT_INFO = Buffer.from("trustplane/envelope/v1 key commitment", "ascii");
const SEGMENT_KEY_INFO = Buffer.from("trustplane/envelope/v1 segment key", "ascii");
export const CONTENT_KEY_LENGTH = 32;

/** commitment = HKDF-SHA256(IKM = content key, salt, "…key commitment", 32). */
export function deriveCommitment(contentKey: Uint8Array, salt: Uint8Array): Buffer {
  return Buffer.from(hkdfSync("sha256", contentKey, salt, COMMITMENT_INFO, 32));
}

/** Constant-time comparison of a stored commitment with the one the given key produces. */
export function commitmentMatches(contentKey: Uint8Array, salt: Uint8Array, stored: Uint8Array): boolean {
  const expected = deriveCommitment(contentKey, salt);
  const ok = stored.length === expected.length && timingSafeEqual(expected, stored);
  expected.fill(0);
  return ok;
}

/**
 * segment key = HKDF-SHA256(IKM = content key, salt,
 *   "…segment key" || SHA-256(header) || SHA-256(aad), 32).
 * The header digest binds every header byte (segment size, key block, commitment, nonce
 * prefix) to every segment; the aad digest binds the caller's associated data.
 */
export function deriveSegmentKey(contentKey: Uint8Array, salt: Uint8Array, header: Uint8Array, aad: Uint8Array): KeyObject {
  const info = Buffer.concat([
    SEGMENT_KEY_INFO,
    createHash("sha256").update(header).digest(),
    createHash("sha256").update(aad).digest(),
  ]);
  const raw = Buffer.from(hkdfSync("sha256", contentKey, salt, info, 32));
  // A KeyObject keeps the key in native memory; the JS copy is wiped at once.
  const key = createSecretKey(raw);
  raw.fill(0);
  return key;
}
