// PAE, SignedEnvelope and CA certificates: the portable half of the signing primitive.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { Certificate, SignedEnvelope } from "../../sdk/src/gen/trustplane/auth/v1/auth.js";
import {
  CERTIFICATE_TYPE,
  generateSigningKey,
  hostPatternMatches,
  importVerificationKey,
  issueCertificate,
  pae,
  signEnvelope,
  verifyCertificate,
  verifyEnvelope,
} from "../../sdk/src/auth/index.js";

async function rejection(p: Promise<unknown> | (() => unknown)): Promise<TrustplaneError> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    expect(e).toBeInstanceOf(TrustplaneError);
    return e as TrustplaneError;
  }
  throw new Error("expected a rejection");
}

describe("pae", () => {
  it("matches the DSSE v1 definition (byte lengths, not string lengths)", () => {
    expect(pae("http://example.com/HelloWorld", Buffer.from("hello world")).toString()).toBe(
      "DSSEv1 29 http://example.com/HelloWorld 11 hello world",
    );
    expect(pae("t\u00e9", new Uint8Array(0)).toString("utf8")).toBe("DSSEv1 3 t\u00e9 0 ");
  });
});

describe("envelopes", () => {
  const key = generateSigningKey();
  const vk = importVerificationKey(key.publicJwk);
  const resolveKey = (id: string) => (id === vk.keyId ? vk : undefined);
  const payload = Buffer.from("payload bytes");

  it("verifies and returns the received payload", async () => {
    const env = signEnvelope("t/x", payload, [key]);
    const bytes = SignedEnvelope.encode(env).finish();
    const got = await verifyEnvelope(SignedEnvelope.decode(bytes), { expectedType: "t/x", resolveKey });
    expect(Buffer.from(got.payload).equals(payload)).toBe(true);
    expect(got.keyId).toBe(key.keyId);
  });
  it("rejects a tampered payload with SIGNATURE_INVALID", async () => {
    const env = signEnvelope("t/x", payload, [key]);
    env.payload = Buffer.from("payload bytez");
    expect((await rejection(verifyEnvelope(env, { expectedType: "t/x", resolveKey }))).reason).toBe("SIGNATURE_INVALID");
  });
  it("rejects a relabelled type as SIGNATURE_INVALID (type is signed) and a wrong expected type as PAYLOAD_TYPE_MISMATCH", async () => {
    const env = signEnvelope("t/x", payload, [key]);
    expect((await rejection(verifyEnvelope({ ...env, payloadType: "t/y" }, { expectedType: "t/y", resolveKey }))).reason).toBe(
      "SIGNATURE_INVALID",
    );
    expect((await rejection(verifyEnvelope(env, { expectedType: "t/y", resolveKey }))).reason).toBe("PAYLOAD_TYPE_MISMATCH");
  });
  it("rejects unknown signers with UNKNOWN_KEY, and a resolver answering with another key", async () => {
    const other = generateSigningKey();
    const env = signEnvelope("t/x", payload, [other]);
    expect((await rejection(verifyEnvelope(env, { expectedType: "t/x", resolveKey }))).reason).toBe("UNKNOWN_KEY");
    expect((await rejection(verifyEnvelope(env, { expectedType: "t/x", resolveKey: () => vk }))).reason).toBe("UNKNOWN_KEY");
  });
  it("refuses envelopes with too many signatures before resolving keys", async () => {
    const env = signEnvelope("t/x", payload, Array.from({ length: 9 }, () => key));
    let resolved = 0;
    const e = await rejection(verifyEnvelope(env, { expectedType: "t/x", resolveKey: (id) => (resolved++, resolveKey(id)) }));
    expect(e.reason).toBe("SIGNATURE_INVALID");
    expect(resolved).toBe(0);
  });

  it("accepts when any one of several signatures verifies and reports its certificate", async () => {
    const other = generateSigningKey("ES256");
    const env = signEnvelope("t/x", payload, [other, { key, certificate: Buffer.from([1, 2]) }]);
    const got = await verifyEnvelope(env, { expectedType: "t/x", resolveKey: async (id) => resolveKey(id) });
    expect(got.keyId).toBe(key.keyId);
    expect(Buffer.from(got.certificate!).equals(Buffer.from([1, 2]))).toBe(true);
  });
});

describe("certificates", () => {
  const ca = generateSigningKey();
  const caVk = importVerificationKey(ca.publicJwk);
  const holder = generateSigningKey("ES256");
  const now = 1_700_000_000_000;
  const base = {
    principal: "alice",
    publicKeyJwk: JSON.stringify(holder.publicJwk),
    notBeforeMs: now - 1000,
    notAfterMs: now + 60_000,
    hostPattern: "host-eu-*",
  };
  const bytes = (c = base, k = ca) => SignedEnvelope.encode(issueCertificate(k, c)).finish();

  it("issues and verifies", () => {
    const cert = verifyCertificate(bytes(), { caKeys: [caVk], nowMs: now, keyId: holder.keyId, hostId: "host-eu-1" });
    expect(cert.principal).toBe("alice");
    expect(cert.keyId).toBe(holder.keyId);
    expect(cert.caKeyId).toBe(ca.keyId);
  });
  it("rejects a certificate from another CA", async () => {
    const e = await rejection(() => verifyCertificate(bytes(base, generateSigningKey()), { caKeys: [caVk], nowMs: now }));
    expect([e.status, e.reason]).toEqual(["UNAUTHENTICATED", "CERTIFICATE_INVALID"]);
  });
  it("rejects outside the validity window", async () => {
    for (const t of [now - 2000, now + 60_000]) {
      expect((await rejection(() => verifyCertificate(bytes(), { caKeys: [caVk], nowMs: t }))).reason).toBe("CERTIFICATE_EXPIRED");
    }
  });
  it("rejects another key id and another host", async () => {
    expect((await rejection(() => verifyCertificate(bytes(), { caKeys: [caVk], nowMs: now, keyId: ca.keyId }))).reason).toBe("CERTIFICATE_INVALID");
    expect((await rejection(() => verifyCertificate(bytes(), { caKeys: [caVk], nowMs: now, hostId: "host-us-1" }))).reason).toBe("HOST_MISMATCH");
  });
  it("rejects unknown critical options and ignores unknown non-critical ones", async () => {
    const crit = { ...base, options: [{ name: "source-address", value: "10.0.0.0/8", critical: true }] };
    expect((await rejection(() => verifyCertificate(bytes(crit), { caKeys: [caVk], nowMs: now }))).reason).toBe("CERTIFICATE_INVALID");
    expect(verifyCertificate(bytes(crit), { caKeys: [caVk], nowMs: now, knownOptions: new Set(["source-address"]) }).principal).toBe("alice");
    const soft = { ...base, options: [{ name: "comment", value: "x", critical: false }] };
    expect(verifyCertificate(bytes(soft), { caKeys: [caVk], nowMs: now }).principal).toBe("alice");
  });
  it("rejects a certificate whose key id does not match its public key", async () => {
    const env = issueCertificate(ca, base);
    const cert = Certificate.decode(env.payload);
    cert.keyId = ca.keyId;
    const forged = SignedEnvelope.encode(signEnvelope(CERTIFICATE_TYPE, Certificate.encode(cert).finish(), [ca])).finish();
    expect((await rejection(() => verifyCertificate(forged, { caKeys: [caVk], nowMs: now }))).reason).toBe("CERTIFICATE_INVALID");
  });
  it("refuses to certify HMAC secrets", async () => {
    const e = await rejection(() => issueCertificate(ca, { ...base, publicKeyJwk: JSON.stringify(generateSigningKey("HS256").publicJwk) }));
    expect(e.reason).toBe("UNSUPPORTED_KEY");
  });
  it("hostPatternMatches agrees with an anchored regex (property)", () => {
    const text = fc.string({ unit: fc.constantFrom("a", "b", "-", "*"), maxLength: 8 });
    fc.assert(
      fc.property(text.filter((p) => p !== ""), fc.string({ unit: fc.constantFrom("a", "b", "-"), maxLength: 10 }), (pattern, host) => {
        const re = new RegExp(`^${pattern.split("*").map((s) => s.replace(/[-]/g, "\\-")).join(".*")}$`);
        expect(hostPatternMatches(pattern, host)).toBe(re.test(host));
      }),
      { numRuns: 500 },
    );
  });

  it("hostPatternMatches globs", () => {
    expect(hostPatternMatches("", "anything")).toBe(true);
    expect(hostPatternMatches("*", "h1")).toBe(true);
    expect(hostPatternMatches("host-eu-*", "host-eu-7")).toBe(true);
    expect(hostPatternMatches("host-eu-*", "host-us-7")).toBe(false);
    expect(hostPatternMatches("h*-*-z", "h1-2-z")).toBe(true);
    expect(hostPatternMatches("h*-*-z", "h1-z")).toBe(false);
    expect(hostPatternMatches("ab*ba", "aba")).toBe(false);
    expect(hostPatternMatches("host1", "host10")).toBe(false);
  });
});
