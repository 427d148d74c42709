// Per-call signatures: the CallStatement the SDK signs for every RPC and the gRPC metadata
// names that carry it. Implements "Call signatures" of the architecture: full method path,
// timestamp, nonce, target host, SHA-256 of the request's wire bytes (+ stream digest).
import { createHash, randomFillSync } from "node:crypto";
import { CallStatement } from "../gen/trustplane/auth/v1/auth.js";
import { CALL_STATEMENT_TYPE, pae } from "./pae.js";
import type { SigningKey } from "./signing-key.js";

export { StreamDigest, streamDigest } from "./stream-digest.js";
export { CallStatement };

export const STATEMENT_METADATA = "tp-statement-bin";
export const SIGNATURE_METADATA = "tp-signature-bin";
export const KEY_ID_METADATA = "tp-key-id";
export const CERTIFICATE_METADATA = "tp-certificate-bin";

export const NONCE_BYTES = 16;

export interface SignCallInput {
  /** Full gRPC method path, e.g. "/trustplane.auth.v1.AuthService/Echo". */
  method: string;
  /** The exact wire bytes of the (first) request message. */
  requestBytes: Uint8Array;
  streamDigest?: Uint8Array;
  key: SigningKey;
  /** Certificate envelope bytes for `key`, when the server knows the CA but not the key. */
  certificate?: Uint8Array;
  targetHost?: string;
  nowMs?: number;
  nonce?: Uint8Array;
}

export interface SignedCall {
  statement: Uint8Array;
  signature: Uint8Array;
  keyId: string;
  certificate?: Uint8Array;
}

/**
 * Nonces come from a pool refilled from the CSPRNG 256 at a time: one randomFillSync per
 * nonce costs more than the rest of statement building. Each nonce is a fresh copy, so a
 * caller holding one never sees pool bytes change.
 */
const noncePool = Buffer.alloc(NONCE_BYTES * 256);
let noncePoolOffset = noncePool.length;

export function newNonce(): Uint8Array {
  if (noncePoolOffset >= noncePool.length) {
    randomFillSync(noncePool);
    noncePoolOffset = 0;
  }
  const nonce = new Uint8Array(noncePool.subarray(noncePoolOffset, noncePoolOffset + NONCE_BYTES));
  // Wipe what was handed out so the pool never holds a used nonce.
  noncePool.fill(0, noncePoolOffset, noncePoolOffset + NONCE_BYTES);
  noncePoolOffset += NONCE_BYTES;
  return nonce;
}

export function sha256(data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(data).digest());
}

export function signCall(input: SignCallInput): SignedCall {
  const statement = CallStatement.encode({
    method: input.method,
    timestampMs: input.nowMs ?? Date.now(),
    nonce: input.nonce ?? newNonce(),
    targetHost: input.targetHost ?? "",
    requestDigest: sha256(input.requestBytes),
    streamDigest: input.streamDigest ?? new Uint8Array(0),
  }).finish();
  const signature = input.key.sign(pae(CALL_STATEMENT_TYPE, statement));
  const out: SignedCall = { statement, signature, keyId: input.key.keyId };
  if (input.certificate && input.certificate.length > 0) out.certificate = input.certificate;
  return out;
}
