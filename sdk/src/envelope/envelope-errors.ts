// The envelope's failure modes as TrustplaneErrors with stable reason codes. Part of "Sealed
// results and the envelope format": truncation, reordering, splicing, header tampering, a wrong
// key and an extended tail all fail to open, each with its own reason.

import { TrustplaneError } from "../errors.js";

export const ENVELOPE_REASONS = {
  /** Not an envelope, an unsupported version, or a malformed header field. */
  FORMAT: "ENVELOPE_FORMAT",
  /** The stream ends before its final segment (or inside the header). */
  TRUNCATED: "ENVELOPE_TRUNCATED",
  /** A segment failed authentication: altered, reordered, spliced, or followed by extra data. */
  TAMPERED: "ENVELOPE_TAMPERED",
  /** The key does not match the header's key commitment: wrong DEK, or the header was altered. */
  KEY_COMMITMENT: "ENVELOPE_KEY_COMMITMENT",
  /** The HPKE-sealed content key did not open with this recipient key, info and aad. */
  KEY_UNWRAP: "ENVELOPE_KEY_UNWRAP",
  /** The caller's key kind (DEK or recipient key) does not match how the envelope was made. */
  KEY_MODE: "ENVELOPE_KEY_MODE",
} as const;

export function formatError(message: string): TrustplaneError {
  return new TrustplaneError("INVALID_ARGUMENT", ENVELOPE_REASONS.FORMAT, `not a valid Trustplane envelope: ${message}`);
}

export function truncatedError(message: string): TrustplaneError {
  return new TrustplaneError(
    "DATA_LOSS",
    ENVELOPE_REASONS.TRUNCATED,
    `envelope is truncated: ${message}; fetch the complete object again`,
  );
}

export function tamperedError(message: string): TrustplaneError {
  return new TrustplaneError(
    "DATA_LOSS",
    ENVELOPE_REASONS.TAMPERED,
    `envelope failed authentication: ${message}; the data was altered, reordered, spliced from another envelope, ` +
      "or opened with other aad; nothing after this point was released",
  );
}

export function keyCommitmentError(): TrustplaneError {
  return new TrustplaneError(
    "INVALID_ARGUMENT",
    ENVELOPE_REASONS.KEY_COMMITMENT,
    "envelope key commitment does not match: it was encrypted under another DEK, or its header was altered; " +
      "check the DEK for this envelope's DEK id",
  );
}

export function keyUnwrapError(): TrustplaneError {
  return new TrustplaneError(
    "INVALID_ARGUMENT",
    ENVELOPE_REASONS.KEY_UNWRAP,
    "envelope content key did not open: it was sealed to another recipient key or with other info/aad, " +
      "or its key block was altered; use the private key matching the recipient key it was sealed to",
  );
}

export function keyModeError(envelopeMode: string, given: string): TrustplaneError {
  return new TrustplaneError(
    "INVALID_ARGUMENT",
    ENVELOPE_REASONS.KEY_MODE,
    `envelope content key is ${envelopeMode} but ${given} was given; open it with the matching key kind`,
  );
}
