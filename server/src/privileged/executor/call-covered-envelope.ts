// When the envelope of a direct Submit need not be verified a second time (seed 002, on the
// architecture's "One signing primitive"): the carrier's own verified call signature may
// already cover it. The argument is written at callSignedEnvelope; the executor applies it.
import { Certificate } from "../../../../sdk/src/gen/trustplane/auth/v1/auth.js";
import type { Caller } from "../../runtime/auth/caller.js";

/**
 * Where the executor got the envelope bytes: "in-call" when they are a field of the request
 * bytes whose digest the carrier's verified call statement signs (a direct SubmitRequest);
 * "sealed" when they were opened from a sealed request (or came from anywhere else).
 */
export type EnvelopeSource = "in-call" | "sealed";

/**
 * Whether the carrier's verified call signature makes the envelope's own signature redundant.
 *
 * The service binder verified, before the executor runs, that key K signed
 * PAE("…call-statement+proto", statement), the statement naming this method (Submit or
 * SubmitStream), this host, a fresh call nonce, a timestamp inside the skew, and SHA-256 of the
 * exact request bytes received. For an "in-call" envelope those bytes contain the envelope
 * verbatim: payload type, payload and signature list. When the envelope's one signature is by
 * the same K (same key id, i.e. RFC 7638 thumbprint of the same public key) under the same
 * certificate, K has itself asked for exactly this payload to run on this host as a privileged
 * request, so the second Ed25519 verify over PAE("…privileged-request+proto", payload) would
 * add no statement K did not already make. Neither signature can stand in for the other
 * anywhere else: PAE binds distinct payload types, so a call signature is never accepted as a
 * request signature or the reverse, and everything after the signature (payload type, window,
 * host, request nonce, certificate chain and restrictions, carrier) is checked as always.
 *
 * Both signatures stay verified for carried requests (the carrier's call says nothing about
 * the signer's intent) and for sealed ones (the call digest covers a ciphertext whose contents
 * the caller may not know, e.g. one handed to it for submission).
 */
export function callSignedEnvelope(carrier: Caller, signerKeyId: string, signerCertificate: Uint8Array): boolean {
  if (carrier.keyId !== signerKeyId || !carrier.certificate) return false;
  return Buffer.from(Certificate.encode(carrier.certificate).finish()).equals(signerCertificate);
}
