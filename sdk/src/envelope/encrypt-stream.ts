// Streaming envelope encryption: header, then AES-256-GCM segments of a fixed plaintext size,
// never holding more than one segment plus one source chunk. Part of "Sealed results and the
// envelope format". The content key is either the caller's DEK (referenced by id) or a fresh
// random key HPKE-sealed to a recipient's X25519 key.

import { randomBytes } from "node:crypto";
import { invalidArgument, TrustplaneError } from "../errors.js";
import { ByteQueue } from "./byte-queue.js";
import {
  encodeHeader,
  KEY_MODE_DEK,
  KEY_MODE_HPKE,
  MAX_DEK_ID_LENGTH,
  MAX_SEGMENT_SIZE,
  MIN_SEGMENT_SIZE,
  NONCE_PREFIX_LENGTH,
  SALT_LENGTH,
  type KeyBlock,
} from "./envelope-header.js";
import { CONTENT_KEY_LENGTH, deriveCommitment, deriveSegmentKey } from "./envelope-key-schedule.js";
import { seal } from "./hpke.js";
import { contentKeyAad } from "./content-key-aad.js";
import { encryptSegment, MAX_SEGMENTS } from "./segment-cipher.js";
import { checkRawKey } from "./x25519-keys.js";

/**
 * Default plaintext segment size: 1 MiB. Per-segment costs (a cipher setup, a 16-byte tag, a
 * few generator steps) stay well under 1% of the AES-GCM work at this size, a decryptor
 * buffers at most one segment (~1 MiB) before releasing authenticated plaintext, and a power
 * of two lines segments up with page-sized memory dumps and 64 KiB file-stream chunks.
 */
export const DEFAULT_SEGMENT_SIZE = 1024 * 1024;

export interface DekEncryptionKey {
  /** A 32-byte data encryption key held by the caller. Never stored in the envelope. */
  dek: Uint8Array;
  /** How the opener finds the DEK again; stored in the header in clear (1..255 UTF-8 bytes). */
  dekId: string;
  /** Associated data the opener must present again (not stored). */
  aad?: Uint8Array;
}

export interface RecipientEncryptionKey {
  /** Raw 32-byte X25519 public key the content key is HPKE-sealed to. */
  recipientPublicKey: Uint8Array;
  /** HPKE info (e.g. the signed request's digest); the opener must present it again. */
  info?: Uint8Array;
  /** Associated data (e.g. host id and request id); the opener must present it again. */
  aad?: Uint8Array;
}

export type EnvelopeEncryptionKey = DekEncryptionKey | RecipientEncryptionKey;

export interface EncryptOptions {
  /** Plaintext bytes per segment (MIN_SEGMENT_SIZE..MAX_SEGMENT_SIZE); default 1 MiB. */
  segmentSize?: number;
}

const EMPTY = new Uint8Array(0);

export async function* encryptStream(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  key: EnvelopeEncryptionKey,
  options: EncryptOptions = {},
): AsyncGenerator<Uint8Array, void, undefined> {
  const segmentSize = options.segmentSize ?? DEFAULT_SEGMENT_SIZE;
  if (!Number.isInteger(segmentSize) || segmentSize < MIN_SEGMENT_SIZE || segmentSize > MAX_SEGMENT_SIZE) {
    throw invalidArgument("segmentSize", `must be an integer in ${MIN_SEGMENT_SIZE}..${MAX_SEGMENT_SIZE}`, "ENVELOPE_SEGMENT_SIZE");
  }
  const aad = key.aad ?? EMPTY;
  const salt = randomBytes(SALT_LENGTH);
  const noncePrefix = randomBytes(NONCE_PREFIX_LENGTH);
  const contentKey = contentKeyFor(key);
  let header: Uint8Array;
  try {
    const keyBlock = keyBlockFor(key, contentKey);
    header = encodeHeader({ segmentSize, salt, noncePrefix, commitment: deriveCommitment(contentKey, salt), keyBlock });
  } catch (err) {
    contentKey.fill(0);
    throw err;
  }
  const segmentKey = deriveSegmentKey(contentKey, salt, header, aad);
  contentKey.fill(0);

  yield header;
  const queue = new ByteQueue();
  let index = 0;
  const nextIndex = (): number => {
    if (index >= MAX_SEGMENTS) {
      throw new TrustplaneError("OUT_OF_RANGE", "ENVELOPE_TOO_LARGE", "plaintext exceeds 2^32 segments; use a larger segmentSize");
    }
    return index++;
  };
  for await (const chunk of source) {
    queue.push(chunk);
    // A segment is encrypted as non-final only once a byte after it exists, so the final
    // segment is always known and may be full-sized (Tink's rule, and how truncation shows).
    while (queue.length > segmentSize) {
      yield* encryptSegment(segmentKey, noncePrefix, nextIndex(), false, queue.takePieces(segmentSize));
    }
  }
  yield* encryptSegment(segmentKey, noncePrefix, nextIndex(), true, queue.takePieces(queue.length));
}

function contentKeyFor(key: EnvelopeEncryptionKey): Buffer {
  if ("dek" in key) {
    if (!(key.dek instanceof Uint8Array) || key.dek.length !== CONTENT_KEY_LENGTH) {
      throw invalidArgument("dek", `must be ${CONTENT_KEY_LENGTH} bytes (an AES-256 key)`, "ENVELOPE_DEK");
    }
    // A private copy, so wiping it never touches the caller's buffer.
    return Buffer.from(key.dek);
  }
  checkRawKey(key.recipientPublicKey, "recipientPublicKey");
  return randomBytes(CONTENT_KEY_LENGTH);
}

function keyBlockFor(key: EnvelopeEncryptionKey, contentKey: Uint8Array): KeyBlock {
  if ("dek" in key) {
    const idLength = typeof key.dekId === "string" ? Buffer.byteLength(key.dekId, "utf8") : 0;
    if (idLength < 1 || idLength > MAX_DEK_ID_LENGTH) {
      throw invalidArgument("dekId", `must be a string of 1..${MAX_DEK_ID_LENGTH} UTF-8 bytes`, "ENVELOPE_DEK_ID");
    }
    return { mode: KEY_MODE_DEK, dekId: key.dekId };
  }
  const sealed = seal(key.recipientPublicKey, contentKey, { info: key.info ?? EMPTY, aad: contentKeyAad(key.aad ?? EMPTY) });
  return { mode: KEY_MODE_HPKE, enc: sealed.enc, wrappedKey: sealed.ciphertext };
}
