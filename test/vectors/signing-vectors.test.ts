// Re-derives every published signing vector (test/vectors/signing.json) with the current code:
// keys and thumbprints, canonical request bytes, statements, PAE, deterministic signatures,
// and runs each call vector through the server's CallVerifier.
import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { canonicalEncode } from "../../sdk/src/auth/canonical.js";
import { signCall } from "../../sdk/src/auth/call-statement.js";
import { jwkThumbprint } from "../../sdk/src/auth/jwk-thumbprint.js";
import { CALL_STATEMENT_TYPE, pae } from "../../sdk/src/auth/pae.js";
import { importSigningKey } from "../../sdk/src/auth/signing-key.js";
import { streamDigest } from "../../sdk/src/auth/stream-digest.js";
import { importVerificationKey } from "../../sdk/src/auth/verification-key.js";
import * as authV1 from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { CallVerifier } from "../../server/src/runtime/auth/call-verifier.js";
import { MemoryNonceStore } from "../../server/src/runtime/auth/memory-nonce-store.js";
import { vectors } from "./signing-vectors.js";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const unhex = (s: string) => Buffer.from(s, "hex");

describe("signing vectors", () => {
  it("covers all three algorithms, deterministic and verify-only", () => {
    expect(new Set(vectors.calls.map((c) => vectors.keys[c.key]!.algorithm))).toEqual(new Set(["Ed25519", "ES256", "HS256"]));
    expect(vectors.calls.filter((c) => !c.deterministic).length).toBeGreaterThan(0);
  });

  it.each(Object.entries(vectors.keys))("key %s imports to its published public JWK and key id", (_name, k) => {
    const key = importSigningKey(k.privateJwk);
    expect(key.algorithm).toBe(k.algorithm);
    expect(key.publicJwk).toEqual(k.publicJwk);
    expect(key.keyId).toBe(k.keyId);
  });

  it.each(vectors.thumbprints.map((t) => [t.name, t] as const))("thumbprint %s", (_n, t) => {
    expect(jwkThumbprint(t.jwk)).toBe(t.thumbprint);
  });

  it("stream digests", () => {
    for (const s of vectors.streamDigests) expect(hex(streamDigest(s.messagesHex.map(unhex)))).toBe(s.digestHex);
  });

  it.each(vectors.calls.map((c) => [c.name, c] as const))("call %s re-derives", (_n, c) => {
    const codec = authV1[c.requestType] as unknown as { fromJSON(o: unknown): unknown; encode(m: unknown): { finish(): Uint8Array } };
    const requestBytes = canonicalEncode(codec, codec.fromJSON(c.requestJson));
    expect(hex(requestBytes)).toBe(c.requestHex);
    const digest = c.streamTailHex ? streamDigest([requestBytes, ...c.streamTailHex.map(unhex)]) : undefined;
    expect(digest ? hex(digest) : "").toBe(c.streamDigestHex);
    const key = importSigningKey(vectors.keys[c.key]!.privateJwk);
    const signed = signCall({
      method: c.method,
      requestBytes,
      streamDigest: digest,
      key,
      targetHost: c.targetHost,
      nowMs: c.timestampMs,
      nonce: unhex(c.nonceHex),
    });
    expect(hex(signed.statement)).toBe(c.statementHex);
    expect(hex(pae(CALL_STATEMENT_TYPE, signed.statement))).toBe(c.paeHex);
    if (c.deterministic) expect(hex(signed.signature)).toBe(c.signatureHex);
    const vk = importVerificationKey(vectors.keys[c.key]!.publicJwk);
    expect(vk.verify(unhex(c.paeHex), unhex(c.signatureHex))).toBe(true);
    const flipped = unhex(c.paeHex);
    flipped[flipped.length - 1]! ^= 1;
    expect(vk.verify(flipped, unhex(c.signatureHex))).toBe(false);
  });

  it.each(vectors.calls.map((c) => [c.name, c] as const))("call %s passes the server's CallVerifier", async (_n, c) => {
    const k = vectors.keys[c.key]!;
    const verifier = new CallVerifier({
      keys: { resolve: async (id) => (id === k.keyId ? { principal: "vector", key: importVerificationKey(k.publicJwk), revoked: false } : undefined) },
      caKeys: () => [],
      nonces: new MemoryNonceStore({ now: () => c.timestampMs }),
      policy: { authorize: async () => true },
      hostId: c.targetHost || undefined,
      now: () => c.timestampMs,
    });
    const md = new grpc.Metadata();
    md.set("tp-statement-bin", unhex(c.statementHex));
    md.set("tp-signature-bin", unhex(c.signatureHex));
    md.set("tp-key-id", k.keyId);
    const caller = await verifier.verify(c.method, md, unhex(c.requestHex));
    expect(caller.principal).toBe("vector");
    expect(hex(caller.statement.requestDigest)).toBe(c.requestSha256Hex);
  });
});
