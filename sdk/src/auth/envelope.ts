// Portable signed statements (SignedEnvelope): sign PAE(payload_type, payload) with one or
// more keys; verify the signature over the RECEIVED bytes, then the type, then hand out the
// payload for parsing. Implements "One signing primitive" / "Portable signed requests".
import { TrustplaneError } from "../errors.js";
import type { SignedEnvelope } from "../gen/trustplane/auth/v1/auth.js";
import { pae } from "./pae.js";
import type { SigningKey } from "./signing-key.js";
import type { VerificationKey } from "./verification-key.js";

export type { SignedEnvelope };

export type EnvelopeSigner = SigningKey | { key: SigningKey; certificate?: Uint8Array };

export function signEnvelope(payloadType: string, payload: Uint8Array, signers: EnvelopeSigner[]): SignedEnvelope {
  if (signers.length === 0) {
    throw new TrustplaneError("INVALID_ARGUMENT", "NO_SIGNER", "signEnvelope needs at least one signing key", "signers");
  }
  const signed = pae(payloadType, payload);
  return {
    payloadType,
    payload,
    signatures: signers.map((s) => {
      const { key, certificate } = "sign" in s ? { key: s, certificate: undefined } : s;
      return { keyId: key.keyId, sig: key.sign(signed), certificate: certificate ?? new Uint8Array(0) };
    }),
  };
}

/** More signatures than this is not a real envelope; refusing bounds the verifier's work. */
export const MAX_ENVELOPE_SIGNATURES = 8;

export interface VerifyEnvelopeOptions {
  expectedType: string;
  resolveKey: (keyId: string) => VerificationKey | undefined | Promise<VerificationKey | undefined>;
}

export interface VerifiedEnvelope {
  payload: Uint8Array;
  /** The key whose signature verified. */
  keyId: string;
  /** That signature's certificate envelope, when it carried one (not verified here). */
  certificate?: Uint8Array;
}

/**
 * Accepts the envelope when at least one signature by a key the resolver knows verifies.
 * The payload type is compared only after a signature verified, and the payload is returned
 * untouched (the caller parses it; nothing is re-encoded).
 */
export async function verifyEnvelope(env: SignedEnvelope, opts: VerifyEnvelopeOptions): Promise<VerifiedEnvelope> {
  checkSignatureCount(env);
  const keys = new Map<string, VerificationKey | undefined>();
  for (const s of env.signatures ?? []) {
    if (!keys.has(s.keyId)) keys.set(s.keyId, await opts.resolveKey(s.keyId));
  }
  return verifyEnvelopeSync(env, { expectedType: opts.expectedType, resolveKey: (id) => keys.get(id) });
}

/** verifyEnvelope for resolvers that answer synchronously (certificate checks against CA keys). */
export function verifyEnvelopeSync(
  env: SignedEnvelope,
  opts: { expectedType: string; resolveKey: (keyId: string) => VerificationKey | undefined },
): VerifiedEnvelope {
  checkSignatureCount(env);
  const signed = pae(env.payloadType, env.payload);
  let sawKnownKey = false;
  for (const s of env.signatures ?? []) {
    const key = opts.resolveKey(s.keyId);
    // A resolver that hands back another key must not let that key vouch for this key id.
    if (!key || key.keyId !== s.keyId) continue;
    sawKnownKey = true;
    if (!key.verify(signed, s.sig)) continue;
    if (env.payloadType !== opts.expectedType) {
      throw new TrustplaneError(
        "UNAUTHENTICATED",
        "PAYLOAD_TYPE_MISMATCH",
        `the envelope holds ${JSON.stringify(env.payloadType)}, expected ${JSON.stringify(opts.expectedType)}`,
        "payload_type",
      );
    }
    return s.certificate && s.certificate.length > 0
      ? { payload: env.payload, keyId: s.keyId, certificate: s.certificate }
      : { payload: env.payload, keyId: s.keyId };
  }
  if (!sawKnownKey) {
    throw new TrustplaneError("UNAUTHENTICATED", "UNKNOWN_KEY", "no signature on the envelope is by a key this verifier trusts", "signatures");
  }
  throw new TrustplaneError("UNAUTHENTICATED", "SIGNATURE_INVALID", "the envelope's signature does not verify", "signatures");
}

function checkSignatureCount(env: SignedEnvelope): void {
  if ((env.signatures?.length ?? 0) > MAX_ENVELOPE_SIGNATURES) {
    throw new TrustplaneError("UNAUTHENTICATED", "SIGNATURE_INVALID", `an envelope may carry at most ${MAX_ENVELOPE_SIGNATURES} signatures`, "signatures");
  }
}
