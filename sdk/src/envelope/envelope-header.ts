// The envelope header (format version 1): byte layout, encoding and strict parsing. Part of
// "Sealed results and the envelope format". Layout, all integers big-endian:
//
//   off  len  field
//   0    4    magic "TPEV"
//   4    1    format version = 1
//   5    1    key mode: 1 = content key HPKE-sealed to a recipient, 2 = external DEK id
//   6    4    plaintext segment size P (MIN_SEGMENT_SIZE..MAX_SEGMENT_SIZE)
//   10   32   salt (random per envelope; HKDF salt)
//   42   7    nonce prefix (random per envelope)
//   49   32   key commitment = HKDF-SHA256(content key, salt, COMMITMENT_INFO)
//   81   2    key block length L
//   83   L    key block: mode 1: enc (32) || HPKE ciphertext of the content key (32 + 16)
//                        mode 2: DEK id, UTF-8, 1..255 bytes
//
// The whole header (all 83 + L bytes) is hashed into the segment key's derivation, so
// changing any byte of it makes every segment fail to authenticate.

import { formatError } from "./envelope-errors.js";

export const MAGIC = Buffer.from("TPEV", "ascii");
export const FORMAT_VERSION = 1;
export const KEY_MODE_HPKE = 1;
export const KEY_MODE_DEK = 2;
export const SALT_LENGTH = 32;
export const NONCE_PREFIX_LENGTH = 7;
export const COMMITMENT_LENGTH = 32;
export const FIXED_HEADER_LENGTH = 83;
export const HPKE_KEY_BLOCK_LENGTH = 32 + 32 + 16;
export const MAX_DEK_ID_LENGTH = 255;
export const MIN_SEGMENT_SIZE = 16;
/** Bounds what a decryptor must buffer for one segment, whatever a hostile header says. */
export const MAX_SEGMENT_SIZE = 64 * 1024 * 1024;

export type KeyBlock =
  | { mode: typeof KEY_MODE_HPKE; enc: Uint8Array; wrappedKey: Uint8Array }
  | { mode: typeof KEY_MODE_DEK; dekId: string };

export interface EnvelopeHeader {
  version: number;
  segmentSize: number;
  salt: Uint8Array;
  noncePrefix: Uint8Array;
  commitment: Uint8Array;
  keyBlock: KeyBlock;
  /** The serialized header, exactly as it appears at the start of the envelope. */
  bytes: Uint8Array;
}

export function encodeHeader(fields: Omit<EnvelopeHeader, "bytes" | "version">): Uint8Array {
  const keyBlock = encodeKeyBlock(fields.keyBlock);
  const out = Buffer.alloc(FIXED_HEADER_LENGTH + keyBlock.length);
  MAGIC.copy(out, 0);
  out[4] = FORMAT_VERSION;
  out[5] = fields.keyBlock.mode;
  out.writeUInt32BE(fields.segmentSize, 6);
  out.set(fields.salt, 10);
  out.set(fields.noncePrefix, 42);
  out.set(fields.commitment, 49);
  out.writeUInt16BE(keyBlock.length, 81);
  out.set(keyBlock, FIXED_HEADER_LENGTH);
  return out;
}

function encodeKeyBlock(block: KeyBlock): Uint8Array {
  if (block.mode === KEY_MODE_HPKE) return Buffer.concat([block.enc, block.wrappedKey]);
  return Buffer.from(block.dekId, "utf8");
}

/**
 * Validates the fixed part (the first FIXED_HEADER_LENGTH bytes) and returns the key block
 * length that follows it. Rejects anything this version does not define.
 */
export function parseFixedHeader(fixed: Uint8Array): { keyBlockLength: number } {
  const b = Buffer.from(fixed.buffer, fixed.byteOffset, fixed.length);
  if (!b.subarray(0, 4).equals(MAGIC)) throw formatError("bad magic bytes (expected \"TPEV\")");
  if (b[4] !== FORMAT_VERSION) throw formatError(`unsupported format version ${b[4]} (this SDK reads version ${FORMAT_VERSION})`);
  const mode = b[5];
  if (mode !== KEY_MODE_HPKE && mode !== KEY_MODE_DEK) throw formatError(`unknown key mode ${mode}`);
  const segmentSize = b.readUInt32BE(6);
  if (segmentSize < MIN_SEGMENT_SIZE || segmentSize > MAX_SEGMENT_SIZE) {
    throw formatError(`segment size ${segmentSize} is outside ${MIN_SEGMENT_SIZE}..${MAX_SEGMENT_SIZE}`);
  }
  const keyBlockLength = b.readUInt16BE(81);
  if (mode === KEY_MODE_HPKE && keyBlockLength !== HPKE_KEY_BLOCK_LENGTH) {
    throw formatError(`HPKE key block is ${keyBlockLength} bytes, expected ${HPKE_KEY_BLOCK_LENGTH}`);
  }
  if (mode === KEY_MODE_DEK && (keyBlockLength < 1 || keyBlockLength > MAX_DEK_ID_LENGTH)) {
    throw formatError(`DEK id is ${keyBlockLength} bytes, expected 1..${MAX_DEK_ID_LENGTH}`);
  }
  return { keyBlockLength };
}

/** Parses a complete header (fixed part and key block, nothing after it). */
export function parseHeader(bytes: Uint8Array): EnvelopeHeader {
  if (bytes.length < FIXED_HEADER_LENGTH) throw formatError("header is shorter than its fixed part");
  const { keyBlockLength } = parseFixedHeader(bytes.subarray(0, FIXED_HEADER_LENGTH));
  if (bytes.length !== FIXED_HEADER_LENGTH + keyBlockLength) throw formatError("header length does not match its key block length");
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  const block = b.subarray(FIXED_HEADER_LENGTH);
  let keyBlock: KeyBlock;
  if (b[5] === KEY_MODE_HPKE) {
    keyBlock = { mode: KEY_MODE_HPKE, enc: block.subarray(0, 32), wrappedKey: block.subarray(32) };
  } else {
    keyBlock = { mode: KEY_MODE_DEK, dekId: decodeDekId(block) };
  }
  return {
    version: b[4]!,
    segmentSize: b.readUInt32BE(6),
    salt: b.subarray(10, 42),
    noncePrefix: b.subarray(42, 49),
    commitment: b.subarray(49, 81),
    keyBlock,
    bytes,
  };
}

function decodeDekId(raw: Uint8Array): string {
  let dekId: string;
  try {
    dekId = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(raw);
  } catch {
    throw formatError("DEK id is not valid UTF-8");
  }
  // Only the canonical UTF-8 form is accepted, so one DEK id has one header encoding.
  if (!Buffer.from(dekId, "utf8").equals(raw)) throw formatError("DEK id is not canonical UTF-8");
  return dekId;
}
