// Trusting a host's keys (seed 002) on the CA's word only, never the relaying server's: each
// HostKeyBinding must verify under a CA key the client pinned beforehand — a CA public JWK it
// holds (e.g. the file `trustplane dev` writes), or the CA key id named in the operator's own
// certificate, matched by RFC 7638 thumbprint. CA keys the response itself offers are only
// candidates for that thumbprint, so a server cannot substitute its own CA.
import type { JsonWebKey } from "node:crypto";
import { importVerificationKey, verifyEnvelopeSync, type VerificationKey } from "../auth/index.js";
import { TrustplaneError } from "../errors.js";
import { Certificate, SignedEnvelope } from "../gen/trustplane/auth/v1/auth.js";
import { HostKeyBinding, type GetHostKeysResponse } from "../gen/trustplane/privileged/v1/privileged.js";
import { HOST_KEY_BINDING_TYPE } from "./payload-types.js";

export interface CaPin {
  /** The CA public key itself (JWK JSON or object). */
  caJwk?: string | JsonWebKey;
  /** The CA key id (thumbprint), e.g. from the operator's own certificate (caKeyIdOf). */
  caKeyId?: string;
}

export interface TrustedHostKeys {
  hostId: string;
  /** Verifies the host's signature on its results. */
  signing: VerificationKey;
  /** Raw X25519 key to seal requests to the host. */
  sealing: Uint8Array;
}

function untrusted(message: string): TrustplaneError {
  return new TrustplaneError("UNAUTHENTICATED", "HOST_KEYS_UNTRUSTED", message, "hosts");
}

/** The CA key id a certificate names (the key that signed it, as issued to its holder). */
export function caKeyIdOf(certificateEnvelope: Uint8Array): string {
  try {
    return Certificate.decode(SignedEnvelope.decode(certificateEnvelope).payload).caKeyId;
  } catch {
    throw new TrustplaneError("INVALID_ARGUMENT", "CERTIFICATE_INVALID", "the certificate does not parse, so it names no CA key", "certificate");
  }
}

function pinnedKey(res: GetHostKeysResponse, pin: CaPin): VerificationKey {
  if (pin.caJwk !== undefined) {
    const key = importVerificationKey(typeof pin.caJwk === "string" ? pin.caJwk : JSON.stringify(pin.caJwk));
    if (pin.caKeyId && key.keyId !== pin.caKeyId) throw untrusted(`the pinned CA key is ${key.keyId}, not ${pin.caKeyId}`);
    return key;
  }
  if (!pin.caKeyId) throw untrusted("no CA is pinned: give the CA public key or the CA key id from your certificate");
  for (const j of res.caJwks) {
    let k: VerificationKey;
    try {
      k = importVerificationKey(j);
    } catch {
      continue;
    }
    if (k.keyId === pin.caKeyId) return k;
  }
  throw untrusted(`the server offers no CA key with the pinned id ${pin.caKeyId}`);
}

/** Host keys from a GetHostKeys answer, each binding verified under the pinned CA key only. */
export function trustedHostKeys(res: GetHostKeysResponse, pin: CaPin): Map<string, TrustedHostKeys> {
  const ca = pinnedKey(res, pin);
  const out = new Map<string, TrustedHostKeys>();
  for (const h of res.hosts) {
    if (!h.binding) throw untrusted(`host ${h.hostId} comes without a CA-signed key binding`);
    let binding: HostKeyBinding;
    try {
      binding = HostKeyBinding.decode(verifyEnvelopeSync(h.binding, { expectedType: HOST_KEY_BINDING_TYPE, resolveKey: (id) => (id === ca.keyId ? ca : undefined) }).payload);
    } catch (e) {
      throw untrusted(`the key binding of host ${h.hostId} is not signed by the pinned CA ${ca.keyId} (${e instanceof TrustplaneError ? e.reason : (e as Error).message})`);
    }
    if (binding.hostId !== h.hostId) throw untrusted(`the CA bound these keys to host ${binding.hostId}, not ${h.hostId}`);
    if (binding.caKeyId !== ca.keyId) throw untrusted(`the binding of host ${h.hostId} names CA ${binding.caKeyId}, not the pinned ${ca.keyId}`);
    if (binding.sealingPublicKey.length !== 32) throw untrusted(`host ${h.hostId}'s sealing key is not a raw X25519 key`);
    out.set(h.hostId, { hostId: h.hostId, signing: importVerificationKey(binding.signingJwk), sealing: binding.sealingPublicKey });
  }
  return out;
}
