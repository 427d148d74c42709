// Reads an envelope's public header fields without any key, e.g. so a job VM learns which DEK
// id to ask the key holder for before it starts decrypting. Part of "Sealed results and the
// envelope format". Nothing read here is authenticated until decryption succeeds.

import { formatError, truncatedError } from "./envelope-errors.js";
import { FIXED_HEADER_LENGTH, KEY_MODE_DEK, parseFixedHeader, parseHeader } from "./envelope-header.js";

export interface EnvelopeHeaderInfo {
  version: number;
  /** "dek": the content key is the DEK named by dekId; "recipient": it is HPKE-sealed. */
  keyMode: "dek" | "recipient";
  dekId?: string;
  segmentSize: number;
  /** Bytes the header occupies at the start of the envelope. */
  headerLength: number;
}

/** Parses the header at the start of `prefix` (which may hold more of the envelope). */
export function readEnvelopeHeader(prefix: Uint8Array): EnvelopeHeaderInfo {
  if (prefix.length < FIXED_HEADER_LENGTH) {
    if (prefix.length >= 4 && Buffer.from(prefix.subarray(0, 4)).toString("latin1") !== "TPEV") throw formatError("bad magic bytes");
    throw truncatedError(`${prefix.length} bytes is shorter than an envelope header`);
  }
  const { keyBlockLength } = parseFixedHeader(prefix.subarray(0, FIXED_HEADER_LENGTH));
  const headerLength = FIXED_HEADER_LENGTH + keyBlockLength;
  if (prefix.length < headerLength) throw truncatedError("it ends inside the header's key block");
  const header = parseHeader(prefix.subarray(0, headerLength));
  return {
    version: header.version,
    keyMode: header.keyBlock.mode === KEY_MODE_DEK ? "dek" : "recipient",
    ...(header.keyBlock.mode === KEY_MODE_DEK ? { dekId: header.keyBlock.dekId } : {}),
    segmentSize: header.segmentSize,
    headerLength,
  };
}
