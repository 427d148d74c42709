// Opening a sealed privileged result (seed 002): only the recipient's X25519 key opens it, the
// seal is bound to the exact signed request (info) and to host + request id (aad), and the
// host's signature inside is verified before the result is believed. A truncated, spliced or
// re-targeted result fails with its own reason.
import { createHash } from "node:crypto";
import { verifyEnvelopeSync, type VerificationKey } from "../auth/index.js";
import { open, type X25519PrivateKeyInput } from "../envelope/index.js";
import { TrustplaneError } from "../errors.js";
import { SignedEnvelope } from "../gen/trustplane/auth/v1/auth.js";
import { PrivilegedResult, type SealedResult } from "../gen/trustplane/privileged/v1/privileged.js";
import { PRIVILEGED_RESULT_TYPE, resultAad, resultInfo } from "./payload-types.js";

export interface OpenResultInput {
  sealed: SealedResult;
  /** The recipient key, raw or imported once (importX25519RecipientKey) when opening many results. */
  recipientPrivateKey: X25519PrivateKeyInput;
  /** The exact bytes of the signed request envelope this result answers. */
  requestEnvelope: Uint8Array;
  /** The host's signing key (from its CA-certified host keys). */
  hostKey: VerificationKey;
  hostId: string;
  requestId: string;
}

function bad(reason: string, message: string): TrustplaneError {
  return new TrustplaneError("DATA_LOSS", reason, message, "result");
}

export function openSealedResult(input: OpenResultInput): PrivilegedResult {
  const { sealed } = input;
  if (sealed.hostId !== input.hostId || sealed.requestId !== input.requestId) {
    throw bad("RESULT_MISMATCH", `the result is labelled for ${sealed.hostId}/${sealed.requestId}, not ${input.hostId}/${input.requestId}`);
  }
  let plaintext: Uint8Array;
  try {
    plaintext = open(input.recipientPrivateKey, sealed.enc, sealed.ciphertext, { info: resultInfo(input.requestEnvelope), aad: resultAad(input.hostId, input.requestId) });
  } catch {
    throw bad("RESULT_SEAL_INVALID", "the sealed result does not open with this key for this request (wrong key, truncated, spliced or re-targeted)");
  }
  let envelope: SignedEnvelope;
  try {
    envelope = SignedEnvelope.decode(plaintext);
  } catch {
    throw bad("RESULT_MALFORMED", "the opened result is not a signed envelope");
  }
  let payload: Uint8Array;
  try {
    payload = verifyEnvelopeSync(envelope, { expectedType: PRIVILEGED_RESULT_TYPE, resolveKey: (keyId) => (keyId === input.hostKey.keyId ? input.hostKey : undefined) }).payload;
  } catch (e) {
    throw bad("RESULT_SIGNATURE_INVALID", `the result is not signed by host ${input.hostId}'s key (${e instanceof TrustplaneError ? e.reason : (e as Error).message})`);
  }
  let result: PrivilegedResult;
  try {
    result = PrivilegedResult.decode(payload);
  } catch {
    throw bad("RESULT_MALFORMED", "the host-signed result does not parse");
  }
  // The seal's labels are not signed; the host's own statement of what it answered is.
  if (result.hostId !== input.hostId) throw bad("RESULT_MISMATCH", `the host signed a result for host ${result.hostId}, not ${input.hostId}`);
  if (result.requestId !== input.requestId) throw bad("RESULT_MISMATCH", `the host signed a result for request ${result.requestId}, not ${input.requestId}`);
  if (!Buffer.from(result.requestDigest).equals(createHash("sha256").update(input.requestEnvelope).digest())) {
    throw bad("RESULT_MISMATCH", "the host's result answers a different request (its request digest differs)");
  }
  return result;
}
