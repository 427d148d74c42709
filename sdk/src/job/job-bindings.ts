// What each secure-job seal and signature is bound to (seed 003), shared by the SDK, the
// service and the job runner so all sides compute the same bytes: the session challenge
// (both proof-of-possession variants) and the HPKE info of a DEK release to a job VM.
import { createHash } from "node:crypto";
import { pae } from "../auth/pae.js";

export const SESSION_PROOF_TYPE = "application/vnd.trustplane.job-session-proof";
export const SESSION_CHALLENGE_INFO = "application/vnd.trustplane.job-session-challenge";
export const DEK_RELEASE_TYPE = "application/vnd.trustplane.job-dek-release";

/** Length-prefixed concatenation: no two different part lists give the same bytes. */
export function lengthPrefixed(parts: (Uint8Array | string)[]): Buffer {
  const out: Buffer[] = [];
  for (const p of parts) {
    const b = typeof p === "string" ? Buffer.from(p, "utf8") : Buffer.from(p.buffer, p.byteOffset, p.byteLength);
    const len = Buffer.alloc(8);
    len.writeBigUInt64BE(BigInt(b.length));
    out.push(len, b);
  }
  return Buffer.concat(out);
}

/**
 * SIGN_BY_CLIENT_KEY: the client signs PAE(type, session id ‖ nonce ‖ service ephemeral key ‖
 * client ephemeral key) — the nonce only counts for this session, and the signature vouches
 * for both halves of the ECDH the session keys come from (no one can swap either in transit).
 */
export function sessionProofMessage(sessionId: string, nonce: Uint8Array, serviceEphemeralKey: Uint8Array, clientEphemeralKey: Uint8Array): Buffer {
  return pae(SESSION_PROOF_TYPE, lengthPrefixed([sessionId, nonce, serviceEphemeralKey, clientEphemeralKey]));
}

/** ENCRYPT_TO_CLIENT_KEY: HPKE info binding the sealed secret to the session id. */
export function sessionChallengeInfo(sessionId: string): Buffer {
  return pae(SESSION_CHALLENGE_INFO, lengthPrefixed([sessionId]));
}

export function sha256(data: Uint8Array): Buffer {
  return createHash("sha256").update(data).digest();
}

/** HPKE info for a DEK sealed to a job VM's ephemeral key: job id, OTK digest, code digest. */
export function dekReleaseInfo(jobId: string, otkDigest: Uint8Array, codeSha256: Uint8Array): Buffer {
  return pae(DEK_RELEASE_TYPE, lengthPrefixed([jobId, otkDigest, codeSha256]));
}
