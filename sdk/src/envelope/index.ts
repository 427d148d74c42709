// Public surface of the envelope area: single-shot HPKE sealing to X25519 keys and the
// streaming envelope format for large payloads. Implements "Sealed results and the envelope
// format" of the architecture.

export { open, seal, type HpkeBinding, type HpkeSealed } from "./hpke.js";
export {
  exportX25519PrivateJwk,
  exportX25519PublicJwk,
  generateX25519KeyPair,
  importX25519Jwk,
  importX25519RecipientKey,
  x25519PublicKeyFromPrivate,
  type X25519Jwk,
  type X25519KeyPair,
  type X25519PrivateKeyInput,
  type X25519RecipientKey,
} from "./x25519-keys.js";
export {
  DEFAULT_SEGMENT_SIZE,
  encryptStream,
  type DekEncryptionKey,
  type EncryptOptions,
  type EnvelopeEncryptionKey,
  type RecipientEncryptionKey,
} from "./encrypt-stream.js";
export {
  decryptStream,
  type DecryptOptions,
  type DekDecryptionKey,
  type EnvelopeDecryptionKey,
  type RecipientDecryptionKey,
} from "./decrypt-stream.js";
export { createDecryptStream, createEncryptStream } from "./envelope-node-streams.js";
export { decryptBytes, encryptBytes } from "./envelope-bytes.js";
export { readEnvelopeHeader, type EnvelopeHeaderInfo } from "./read-envelope-header.js";
export { ENVELOPE_REASONS } from "./envelope-errors.js";
export { MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE } from "./envelope-header.js";
