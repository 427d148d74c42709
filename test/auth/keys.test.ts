// Keys of the signing primitive: RFC 7638 thumbprints, generate/import/export, sign/verify
// round trips for Ed25519, ES256 and HS256, and the import rejections.
import { describe, expect, it } from "vitest";
import { TrustplaneError } from "../../sdk/src/errors.js";
import {
  exportPrivateJwk,
  generateSigningKey,
  importSigningKey,
  importVerificationKey,
  jwkThumbprint,
  type Algorithm,
  VerificationKeyCache,
} from "../../sdk/src/auth/index.js";

const RFC7638_JWK = {
  kty: "RSA",
  n: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
  e: "AQAB",
  alg: "RS256",
  kid: "2011-04-29",
};

function reasonOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(TrustplaneError);
    expect((e as TrustplaneError).status).toBe("INVALID_ARGUMENT");
    return (e as TrustplaneError).reason;
  }
  throw new Error("expected a TrustplaneError");
}

describe("jwkThumbprint", () => {
  it("matches RFC 7638 section 3.1", () => {
    expect(jwkThumbprint(RFC7638_JWK)).toBe("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
  });
  it("ignores optional members and member order", () => {
    const k = generateSigningKey("ES256").publicJwk;
    const reordered = { y: k.y, x: k.x, kid: "x", use: "sig", crv: k.crv, kty: k.kty };
    expect(jwkThumbprint(reordered)).toBe(jwkThumbprint(k));
  });
});

describe.each<Algorithm>(["Ed25519", "ES256", "HS256"])("%s keys", (alg) => {
  it("sign/verify round-trips and rejects a flipped bit", () => {
    const key = generateSigningKey(alg);
    expect(key.algorithm).toBe(alg);
    const v = importVerificationKey(key.publicJwk);
    expect(v.keyId).toBe(key.keyId);
    expect(v.keyId).toBe(jwkThumbprint(key.publicJwk));
    const data = Buffer.from("hello trustplane");
    const sig = key.sign(data);
    expect(sig.length).toBe(alg === "HS256" ? 32 : 64);
    expect(v.verify(data, sig)).toBe(true);
    const bad = Buffer.from(sig);
    bad[3]! ^= 1;
    expect(v.verify(data, bad)).toBe(false);
    expect(v.verify(Buffer.from("hello trustplanf"), sig)).toBe(false);
    expect(v.verify(data, sig.subarray(0, sig.length - 1))).toBe(false);
  });
  it("exports and re-imports the private JWK", () => {
    const key = generateSigningKey(alg);
    const again = importSigningKey(JSON.stringify(exportPrivateJwk(key)));
    expect(again.keyId).toBe(key.keyId);
    const data = Buffer.from("x");
    expect(importVerificationKey(key.publicJwk).verify(data, again.sign(data))).toBe(true);
    // The private JWK is not reachable through the key object itself.
    expect(JSON.stringify(key)).not.toContain(String(exportPrivateJwk(key).d ?? "\u0000"));
  });
});

describe("import rejections", () => {
  it("rejects private members in a verification key", () => {
    const priv = exportPrivateJwk(generateSigningKey("Ed25519"));
    expect(reasonOf(() => importVerificationKey(priv))).toBe("PRIVATE_KEY_MATERIAL");
    const privEc = exportPrivateJwk(generateSigningKey("ES256"));
    expect(reasonOf(() => importVerificationKey(JSON.stringify(privEc)))).toBe("PRIVATE_KEY_MATERIAL");
  });
  it("rejects unknown kty and crv", () => {
    expect(reasonOf(() => importVerificationKey(RFC7638_JWK))).toBe("UNSUPPORTED_KEY");
    expect(reasonOf(() => importVerificationKey({ kty: "EC", crv: "P-384", x: "AA", y: "AA" }))).toBe("UNSUPPORTED_KEY");
    expect(reasonOf(() => importVerificationKey({ kty: "OKP", crv: "X25519", x: "AA" }))).toBe("UNSUPPORTED_KEY");
  });
  it("rejects an alg that disagrees with the key type", () => {
    const pub = { ...generateSigningKey("Ed25519").publicJwk, alg: "HS256" };
    expect(reasonOf(() => importVerificationKey(pub))).toBe("UNSUPPORTED_KEY");
  });
  it("rejects short HMAC secrets, bad JSON, wrong lengths and off-curve points", () => {
    expect(reasonOf(() => importVerificationKey({ kty: "oct", k: Buffer.alloc(16, 1).toString("base64url") }))).toBe("INVALID_KEY");
    expect(reasonOf(() => importVerificationKey("{not json"))).toBe("INVALID_KEY");
    expect(reasonOf(() => importVerificationKey({ kty: "OKP", crv: "Ed25519", x: Buffer.alloc(31).toString("base64url") }))).toBe("INVALID_KEY");
    const ec = generateSigningKey("ES256").publicJwk;
    const y = Buffer.from(ec.y as string, "base64url");
    y[31]! ^= 1;
    expect(reasonOf(() => importVerificationKey({ ...ec, y: y.toString("base64url") }))).toBe("INVALID_KEY");
  });
  it("rejects non-canonical base64url (one key, two key ids)", () => {
    const pub = generateSigningKey("Ed25519").publicJwk;
    expect(reasonOf(() => importVerificationKey({ ...pub, x: `${pub.x}=` }))).toBe("INVALID_KEY");
  });
  it("rejects a private JWK whose public half belongs to another key", () => {
    const a = exportPrivateJwk(generateSigningKey("Ed25519"));
    const b = generateSigningKey("Ed25519").publicJwk;
    expect(reasonOf(() => importSigningKey({ ...a, x: b.x }))).toBe("INVALID_KEY");
  });
});

describe("VerificationKeyCache", () => {
  it("returns the same imported key for the same JWK and stays bounded (LRU)", () => {
    const cache = new VerificationKeyCache(2);
    const [a, b, c] = [generateSigningKey(), generateSigningKey("ES256"), generateSigningKey("HS256")];
    const ka = cache.get(JSON.stringify(a.publicJwk));
    expect(cache.get(JSON.stringify(a.publicJwk))).toBe(ka);
    expect(cache.get(b.publicJwk).keyId).toBe(b.keyId);
    cache.get(JSON.stringify(a.publicJwk)); // a is now the most recent
    cache.get(c.publicJwk);
    expect(cache.size).toBe(2);
    expect(cache.get(JSON.stringify(a.publicJwk))).toBe(ka);
  });
});
