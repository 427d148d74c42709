// Streaming envelope decryption: parses the header, recovers the content key (caller's DEK or
// HPKE-unwrapped with the recipient's private key), checks the key commitment before touching
// any segment, then releases each segment's plaintext only after that segment authenticated.
// Part of "Sealed results and the envelope format". After a failure nothing more is yielded.

import { invalidArgument, TrustplaneError } from "../errors.js";
import { ByteQueue } from "./byte-queue.js";
import { contentKeyAad } from "./content-key-aad.js";
import {
  formatError,
  keyCommitmentError,
  keyModeError,
  keyUnwrapError,
  tamperedError,
  truncatedError,
} from "./envelope-errors.js";
import {
  FIXED_HEADER_LENGTH,
  KEY_MODE_DEK,
  MAGIC,
  parseFixedHeader,
  parseHeader,
  type EnvelopeHeader,
} from "./envelope-header.js";
import { commitmentMatches, CONTENT_KEY_LENGTH, deriveSegmentKey } from "./envelope-key-schedule.js";
import { open } from "./hpke.js";
import { decryptSegment, MAX_SEGMENTS, TAG_LENGTH } from "./segment-cipher.js";
import type { X25519PrivateKeyInput } from "./x25519-keys.js";

export interface DekDecryptionKey {
  /** The 32-byte DEK, or a function that finds it from the header's DEK id. */
  dek: Uint8Array | ((dekId: string) => Uint8Array | Promise<Uint8Array>);
  aad?: Uint8Array;
}

export interface RecipientDecryptionKey {
  /** X25519 private key (raw 32 bytes, or imported once) matching the recipient key the envelope was sealed to. */
  recipientPrivateKey: X25519PrivateKeyInput;
  info?: Uint8Array;
  aad?: Uint8Array;
}

export type EnvelopeDecryptionKey = DekDecryptionKey | RecipientDecryptionKey;

export interface DecryptOptions {
  /** Refuse envelopes whose segments are larger than this (bounds memory); default 64 MiB. */
  maxSegmentSize?: number;
}

const EMPTY = new Uint8Array(0);

export async function* decryptStream(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  key: EnvelopeDecryptionKey,
  options: DecryptOptions = {},
): AsyncGenerator<Uint8Array, void, undefined> {
  const iterator = toAsyncIterator(source);
  const queue = new ByteQueue();
  let ended = false;
  /** Pulls source chunks until more than `n` bytes are queued or the source ends. */
  const fillBeyond = async (n: number): Promise<void> => {
    while (!ended && queue.length <= n) {
      const next = await iterator.next();
      if (next.done) ended = true;
      else queue.push(next.value);
    }
  };

  try {
    await fillBeyond(FIXED_HEADER_LENGTH - 1);
    if (queue.length >= MAGIC.length && !Buffer.from(queue.peek(MAGIC.length)).equals(MAGIC)) {
      throw formatError('bad magic bytes (expected "TPEV")');
    }
    if (queue.length < FIXED_HEADER_LENGTH) throw truncatedError(`it ends inside the header (${queue.length} bytes)`);
    const { keyBlockLength } = parseFixedHeader(queue.peek(FIXED_HEADER_LENGTH));
    const headerLength = FIXED_HEADER_LENGTH + keyBlockLength;
    await fillBeyond(headerLength - 1);
    if (queue.length < headerLength) throw truncatedError("it ends inside the header's key block");
    const header = parseHeader(Buffer.from(queue.take(headerLength)));
    if (options.maxSegmentSize !== undefined && header.segmentSize > options.maxSegmentSize) {
      throw invalidArgument("maxSegmentSize", `envelope segments are ${header.segmentSize} bytes, above the limit`, "ENVELOPE_SEGMENT_SIZE");
    }

    const contentKey = await recoverContentKey(header, key);
    // Key commitment before any segment is decrypted: a wrong key never produces plaintext.
    const committed = commitmentMatches(contentKey, header.salt, header.commitment);
    if (!committed) {
      contentKey.fill(0);
      throw keyCommitmentError();
    }
    const segmentKey = deriveSegmentKey(contentKey, header.salt, header.bytes, key.aad ?? EMPTY);
    contentKey.fill(0);

    const segmentCiphertext = header.segmentSize + TAG_LENGTH;
    for (let index = 0; ; index++) {
      if (index >= MAX_SEGMENTS) throw tamperedError("more than 2^32 segments");
      await fillBeyond(segmentCiphertext);
      const last = queue.length <= segmentCiphertext;
      if (last && queue.length < TAG_LENGTH) {
        throw truncatedError(index === 0 ? "no segment follows the header" : `it ends inside segment ${index}`);
      }
      const size = last ? queue.length : segmentCiphertext;
      const body = queue.takePieces(size - TAG_LENGTH);
      const tag = queue.take(TAG_LENGTH);
      const plaintext = decryptSegment(segmentKey, header.noncePrefix, index, last, body, tag);
      if (plaintext === undefined) {
        // Diagnose without releasing anything: the same bytes under the other flag tell a
        // truncated stream (a non-final segment at the end) or an extended one (data after
        // the final segment) from altered bytes.
        const other = decryptSegment(segmentKey, header.noncePrefix, index, !last, body, tag);
        if (other !== undefined) {
          for (const pt of other) pt.fill(0);
          if (last) throw truncatedError(`segment ${index} is not the final segment, and nothing follows it`);
          throw tamperedError(`data follows the final segment ${index}`);
        }
        throw tamperedError(`segment ${index} did not authenticate`);
      }
      yield* plaintext;
      if (last) return;
    }
  } finally {
    // Stop the source when the consumer stops early or a check failed.
    if (!ended) await iterator.return?.();
  }
}

async function recoverContentKey(header: EnvelopeHeader, key: EnvelopeDecryptionKey): Promise<Buffer> {
  const block = header.keyBlock;
  if (block.mode === KEY_MODE_DEK) {
    if (!("dek" in key)) throw keyModeError(`referenced by DEK id "${block.dekId}"`, "a recipient private key");
    const dek = typeof key.dek === "function" ? await key.dek(block.dekId) : key.dek;
    if (!(dek instanceof Uint8Array) || dek.length !== CONTENT_KEY_LENGTH) {
      throw invalidArgument("dek", `must be ${CONTENT_KEY_LENGTH} bytes (an AES-256 key)`, "ENVELOPE_DEK");
    }
    return Buffer.from(dek);
  }
  if (!("recipientPrivateKey" in key)) throw keyModeError("HPKE-sealed to a recipient key", "a DEK");
  try {
    const contentKey = open(key.recipientPrivateKey, block.enc, block.wrappedKey, {
      info: key.info ?? EMPTY,
      aad: contentKeyAad(key.aad ?? EMPTY),
    });
    return Buffer.from(contentKey.buffer, contentKey.byteOffset, contentKey.length);
  } catch (err) {
    if (err instanceof TrustplaneError && err.reason === "HPKE_OPEN_FAILED") throw keyUnwrapError();
    throw err;
  }
}

function toAsyncIterator(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): AsyncIterator<Uint8Array> | Iterator<Uint8Array> {
  if (Symbol.asyncIterator in source) return (source as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  return (source as Iterable<Uint8Array>)[Symbol.iterator]();
}
