// node:stream adapters for the streaming envelope: duplex streams (used like Transforms in
// pipeline()) whose writable side takes plaintext or envelope bytes and whose readable side
// gives the other, with backpressure. Part of "Sealed results and the envelope format".

import { Duplex } from "node:stream";
import { decryptStream, type DecryptOptions, type EnvelopeDecryptionKey } from "./decrypt-stream.js";
import { encryptStream, type EncryptOptions, type EnvelopeEncryptionKey } from "./encrypt-stream.js";

/**
 * A duplex that encrypts what is written to it into an envelope.
 *
 *   await pipeline(createReadStream("data.csv"), createEncryptStream({ dek, dekId }), createWriteStream("data.tpev"));
 */
export function createEncryptStream(key: EnvelopeEncryptionKey, options?: EncryptOptions): Duplex {
  return Duplex.from(async function* (source: AsyncIterable<Uint8Array>) {
    yield* encryptStream(source, key, options);
  });
}

/**
 * A duplex that opens an envelope written to it; it emits each segment's plaintext only after
 * that segment authenticated and errors (emitting nothing more) on the first failure.
 */
export function createDecryptStream(key: EnvelopeDecryptionKey, options?: DecryptOptions): Duplex {
  return Duplex.from(async function* (source: AsyncIterable<Uint8Array>) {
    yield* decryptStream(source, key, options);
  });
}
