// Public API of the signing primitive (architecture: "One signing primitive for every service"):
// PAE, keys and thumbprints, envelopes, certificates, canonical encoding, call statements.
export { pae, CALL_STATEMENT_TYPE, CERTIFICATE_TYPE } from "./pae.js";
export type { Algorithm } from "./algorithm.js";
export type { JsonWebKey } from "node:crypto";
export { jwkThumbprint } from "./jwk-thumbprint.js";
export { generateSigningKey, importSigningKey, exportPrivateJwk, type SigningKey } from "./signing-key.js";
export { importVerificationKey, type VerificationKey } from "./verification-key.js";
export { VerificationKeyCache } from "./verification-key-cache.js";
export {
  signEnvelope,
  verifyEnvelope,
  verifyEnvelopeSync,
  MAX_ENVELOPE_SIGNATURES,
  type EnvelopeSigner,
  type SignedEnvelope,
  type VerifiedEnvelope,
  type VerifyEnvelopeOptions,
} from "./envelope.js";
export {
  issueCertificate,
  verifyCertificate,
  hostPatternMatches,
  type Certificate,
  type CertificateInput,
  type VerifyCertificateOptions,
} from "./certificate.js";
export { canonicalize, canonicalEncode, canonicalForEncode, type MessageEncoder } from "./canonical.js";
export {
  signCall,
  newNonce,
  sha256,
  StreamDigest,
  streamDigest,
  CallStatement,
  STATEMENT_METADATA,
  SIGNATURE_METADATA,
  KEY_ID_METADATA,
  CERTIFICATE_METADATA,
  NONCE_BYTES,
  type SignCallInput,
  type SignedCall,
} from "./call-statement.js";
