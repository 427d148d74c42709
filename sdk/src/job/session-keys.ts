// The job session's key schedule (seed 003, "secure channel"): after the proof-of-possession
// challenge both ends hold a secret nobody on the wire saw — the HPKE exporter secret of the
// challenge (encrypt variant) or an X25519 ECDH of two ephemeral keys the client signed over
// (sign variant) — and derive per-direction AES-256-GCM keys and a confirmation key from it,
// bound to the handshake transcript and to the key id that signs the client's calls.
import { createHmac, hkdfSync, timingSafeEqual } from "node:crypto";
import { pae } from "../auth/pae.js";
import { lengthPrefixed, sha256 } from "./job-bindings.js";

export const SESSION_KEYS_TYPE = "application/vnd.trustplane.job-session-keys";
/** HPKE exporter context for the encrypt variant's session secret. */
export const SESSION_EXPORTER_CONTEXT = Buffer.from("trustplane job session secret v1");

export interface HandshakeTranscript {
  sessionId: string;
  variant: number;
  /** The key id that signed the OpenSession call (the call key the session is bound to). */
  callKeyId: string;
  clientSealingKey: Uint8Array;
  clientSigningJwk: string;
  enc: Uint8Array;
  ciphertext: Uint8Array;
  nonce: Uint8Array;
  serviceEphemeralKey: Uint8Array;
  clientEphemeralKey: Uint8Array;
}

export interface SessionKeys {
  clientToService: Buffer;
  serviceToClient: Buffer;
  confirmation: Buffer;
  transcriptHash: Buffer;
}

/** SHA-256 over every handshake value, length-prefixed in a fixed order. */
export function transcriptHash(t: HandshakeTranscript): Buffer {
  return sha256(
    pae(
      SESSION_KEYS_TYPE,
      lengthPrefixed([t.sessionId, String(t.variant), t.callKeyId, t.clientSealingKey, t.clientSigningJwk, t.enc, t.ciphertext, t.nonce, t.serviceEphemeralKey, t.clientEphemeralKey]),
    ),
  );
}

export function deriveSessionKeys(secret: Uint8Array, t: HandshakeTranscript): SessionKeys {
  const hash = transcriptHash(t);
  const key = (label: string) => Buffer.from(hkdfSync("sha256", secret, hash, `trustplane job session ${label}`, 32));
  return { clientToService: key("c2s"), serviceToClient: key("s2c"), confirmation: key("confirm"), transcriptHash: hash };
}

/** The client's ChallengeResponse.confirmation: it derived the same keys for this transcript. */
export function confirmationMac(keys: SessionKeys): Buffer {
  return createHmac("sha256", keys.confirmation).update(keys.transcriptHash).digest();
}

export function confirmationMatches(keys: SessionKeys, mac: Uint8Array): boolean {
  const want = confirmationMac(keys);
  return mac.length === want.length && timingSafeEqual(want, mac);
}

export function wipeSessionKeys(keys: SessionKeys): void {
  keys.clientToService.fill(0);
  keys.serviceToClient.fill(0);
  keys.confirmation.fill(0);
}
