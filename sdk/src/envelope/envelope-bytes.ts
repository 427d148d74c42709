// Whole-buffer convenience over the streaming envelope, for payloads that already sit in
// memory (sealed results, small job outputs). Part of "Sealed results and the envelope format".
// Large inputs are passed to the stream functions as one chunk, so segments are views into it.

import { decryptStream, type DecryptOptions, type EnvelopeDecryptionKey } from "./decrypt-stream.js";
import { encryptStream, type EncryptOptions, type EnvelopeEncryptionKey } from "./encrypt-stream.js";

export async function encryptBytes(plaintext: Uint8Array, key: EnvelopeEncryptionKey, options?: EncryptOptions): Promise<Uint8Array> {
  return collect(encryptStream([plaintext], key, options));
}

/** Opens a whole envelope; throws (and returns nothing) if any part fails to authenticate. */
export async function decryptBytes(envelope: Uint8Array, key: EnvelopeDecryptionKey, options?: DecryptOptions): Promise<Uint8Array> {
  const pieces: Uint8Array[] = [];
  try {
    for await (const piece of decryptStream([envelope], key, options)) pieces.push(piece);
  } catch (err) {
    // Segments that did authenticate before the failure are not handed out either.
    for (const piece of pieces) piece.fill(0);
    throw err;
  }
  return join(pieces);
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const pieces: Uint8Array[] = [];
  for await (const piece of source) pieces.push(piece);
  return join(pieces);
}

function join(pieces: Uint8Array[]): Uint8Array {
  const joined = Buffer.concat(pieces);
  return new Uint8Array(joined.buffer, joined.byteOffset, joined.length);
}
