// Host keys are trusted on the pinned CA's word only: a server answering with a binding signed
// by another CA key (and offering that key as its CA) is refused, whether the client pinned the
// CA's public key or the CA key id from its own certificate.
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { generateSigningKey, issueCertificate, signEnvelope, type SigningKey } from "../../sdk/src/auth/index.js";
import { generateX25519KeyPair } from "../../sdk/src/envelope/index.js";
import { SignedEnvelope } from "../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { HostKeyBinding, type GetHostKeysResponse } from "../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { HOST_KEY_BINDING_TYPE, caKeyIdOf, trustedHostKeys } from "../../sdk/src/privileged/index.js";

const ca = generateSigningKey("Ed25519");
const rogue = generateSigningKey("Ed25519");
const host = generateSigningKey("Ed25519");
const sealing = generateX25519KeyPair();

function answer(signer: SigningKey, fields: Partial<HostKeyBinding> = {}, offered: SigningKey[] = [signer]): GetHostKeysResponse {
  const binding = HostKeyBinding.fromPartial({ hostId: "host-a", signingKeyId: host.keyId, signingJwk: JSON.stringify(host.publicJwk), sealingPublicKey: sealing.publicKey, issuedAtMs: Date.now(), caKeyId: signer.keyId, ...fields });
  return {
    hosts: [{ hostId: "host-a", binding: signEnvelope(HOST_KEY_BINDING_TYPE, HostKeyBinding.encode(binding).finish(), [signer]), hostCertificate: undefined }],
    caJwks: offered.map((k) => JSON.stringify(k.publicJwk)),
  };
}

const operatorCert = () => {
  const key = generateSigningKey("Ed25519");
  return SignedEnvelope.encode(issueCertificate(ca, { principal: "op", publicKeyJwk: JSON.stringify(key.publicJwk), notBeforeMs: Date.now() - 1000, notAfterMs: Date.now() + 60_000, serial: randomBytes(4).toString("hex") })).finish();
};

describe("trustedHostKeys", () => {
  it("accepts a binding signed by the pinned CA (by key or by the id in the operator's certificate)", () => {
    expect(trustedHostKeys(answer(ca), { caJwk: ca.publicJwk }).get("host-a")!.signing.keyId).toBe(host.keyId);
    expect(caKeyIdOf(operatorCert())).toBe(ca.keyId);
    expect(trustedHostKeys(answer(ca, {}, [rogue, ca]), { caKeyId: caKeyIdOf(operatorCert()) }).get("host-a")!.sealing).toEqual(sealing.publicKey);
  });

  it("refuses a binding signed by another CA key, even when the server offers that key as its CA", () => {
    expect(() => trustedHostKeys(answer(rogue), { caJwk: ca.publicJwk })).toThrow(expect.objectContaining({ status: "UNAUTHENTICATED", reason: "HOST_KEYS_UNTRUSTED" }));
    expect(() => trustedHostKeys(answer(rogue), { caKeyId: caKeyIdOf(operatorCert()) })).toThrow(expect.objectContaining({ reason: "HOST_KEYS_UNTRUSTED" }));
    expect(() => trustedHostKeys(answer(rogue, {}, [rogue, ca]), { caKeyId: ca.keyId })).toThrow(expect.objectContaining({ reason: "HOST_KEYS_UNTRUSTED" }));
    // Signed by the rogue key but naming the real CA inside: only the signature check stops it.
    expect(() => trustedHostKeys(answer(rogue, { caKeyId: ca.keyId }, [rogue, ca]), { caJwk: ca.publicJwk })).toThrow(/not signed by the pinned CA/);
  });

  it("refuses a CA binding for another host, and a client with nothing pinned", () => {
    expect(() => trustedHostKeys(answer(ca, { hostId: "host-b" }), { caJwk: ca.publicJwk })).toThrow(/bound these keys to host host-b/);
    expect(() => trustedHostKeys(answer(ca), {})).toThrow(expect.objectContaining({ reason: "HOST_KEYS_UNTRUSTED" }));
  });
});
