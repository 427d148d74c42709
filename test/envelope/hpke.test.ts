// Single-shot HPKE seal/open: round trips, binding to info and aad, wrong keys, tampering and
// X25519 key import/export (raw and OKP/X25519 JWK).

import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { open, seal } from "../../sdk/src/envelope/hpke.js";
import {
  exportX25519PrivateJwk,
  exportX25519PublicJwk,
  generateX25519KeyPair,
  importX25519Jwk,
} from "../../sdk/src/envelope/x25519-keys.js";

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

function expectReason(fn: () => unknown, reason: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(TrustplaneError);
  expect((caught as TrustplaneError).reason).toBe(reason);
}

describe("HPKE seal/open", () => {
  const recipient = generateX25519KeyPair();
  const info = utf8("sha256 of the signed request");
  const aad = utf8("host-7|req-42");

  it("round-trips any plaintext, info and aad", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ maxLength: 64 }), (pt, i, a) => {
        const sealed = seal(recipient.publicKey, pt, { info: i, aad: a });
        expect(sealed.enc).toHaveLength(32);
        expect(sealed.ciphertext).toHaveLength(pt.length + 16);
        expect(open(recipient.privateKey, sealed.enc, sealed.ciphertext, { info: i, aad: a })).toEqual(pt);
      }),
      { numRuns: 60 },
    );
  });

  it("uses a fresh ephemeral key for every seal", () => {
    const a = seal(recipient.publicKey, utf8("x"), { info, aad });
    const b = seal(recipient.publicKey, utf8("x"), { info, aad });
    expect(Buffer.from(a.enc).equals(b.enc)).toBe(false);
    expect(Buffer.from(a.ciphertext).equals(b.ciphertext)).toBe(false);
  });

  it("does not open with another recipient's private key", () => {
    const sealed = seal(recipient.publicKey, utf8("secret"), { info, aad });
    expectReason(() => open(generateX25519KeyPair().privateKey, sealed.enc, sealed.ciphertext, { info, aad }), "HPKE_OPEN_FAILED");
  });

  it("is bound to info: another info does not open", () => {
    const sealed = seal(recipient.publicKey, utf8("secret"), { info, aad });
    expectReason(() => open(recipient.privateKey, sealed.enc, sealed.ciphertext, { info: utf8("other digest"), aad }), "HPKE_OPEN_FAILED");
    expectReason(() => open(recipient.privateKey, sealed.enc, sealed.ciphertext, { aad }), "HPKE_OPEN_FAILED");
  });

  it("is bound to aad: another aad does not open", () => {
    const sealed = seal(recipient.publicKey, utf8("secret"), { info, aad });
    expectReason(() => open(recipient.privateKey, sealed.enc, sealed.ciphertext, { info, aad: utf8("host-8|req-42") }), "HPKE_OPEN_FAILED");
  });

  it("any single bit flip in enc or ciphertext fails to open", () => {
    const sealed = seal(recipient.publicKey, utf8("a sealed result of some length"), { info, aad });
    const whole = Buffer.concat([sealed.enc, sealed.ciphertext]);
    fc.assert(
      fc.property(fc.nat({ max: whole.length * 8 - 1 }), (bit) => {
        const bad = Buffer.from(whole);
        bad[bit >> 3]! ^= 1 << (bit & 7);
        expect(() => open(recipient.privateKey, bad.subarray(0, 32), bad.subarray(32), { info, aad })).toThrow(TrustplaneError);
      }),
      { numRuns: 150 },
    );
  });

  it("refuses a truncated ciphertext", () => {
    const sealed = seal(recipient.publicKey, utf8("secret"), { info, aad });
    expectReason(() => open(recipient.privateKey, sealed.enc, sealed.ciphertext.subarray(0, 15), { info, aad }), "HPKE_OPEN_FAILED");
    expectReason(() => open(recipient.privateKey, sealed.enc, sealed.ciphertext.subarray(1), { info, aad }), "HPKE_OPEN_FAILED");
  });

  it("refuses keys that are not 32 bytes and the low-order all-zero public key", () => {
    expectReason(() => seal(new Uint8Array(31), utf8("x")), "INVALID_X25519_KEY");
    expectReason(() => seal(new Uint8Array(32), utf8("x")), "INVALID_X25519_KEY");
    const sealed = seal(recipient.publicKey, utf8("x"));
    expectReason(() => open(recipient.privateKey, new Uint8Array(32), sealed.ciphertext), "INVALID_X25519_KEY");
    expectReason(() => open(new Uint8Array(33), sealed.enc, sealed.ciphertext), "INVALID_X25519_KEY");
  });
});

describe("X25519 keys: raw and JWK", () => {
  it("exports and imports OKP/X25519 JWKs", () => {
    const pair = generateX25519KeyPair();
    const pub = exportX25519PublicJwk(pair.publicKey);
    expect(pub).toEqual({ kty: "OKP", crv: "X25519", x: Buffer.from(pair.publicKey).toString("base64url") });
    expect(importX25519Jwk(pub)).toEqual({ publicKey: pair.publicKey });
    const priv = exportX25519PrivateJwk(pair.privateKey);
    expect(priv.x).toBe(pub.x);
    const imported = importX25519Jwk(JSON.parse(JSON.stringify(priv)));
    expect(imported.privateKey).toEqual(pair.privateKey);
    const sealed = seal(imported.publicKey, utf8("via jwk"));
    expect(open(imported.privateKey!, sealed.enc, sealed.ciphertext)).toEqual(utf8("via jwk"));
  });

  it("rejects JWKs of another type, curve, size, or with x not matching d", () => {
    const pair = generateX25519KeyPair();
    const pub = exportX25519PublicJwk(pair.publicKey);
    expectReason(() => importX25519Jwk({ ...pub, crv: "Ed25519" }), "INVALID_X25519_KEY");
    expectReason(() => importX25519Jwk({ ...pub, kty: "EC" }), "INVALID_X25519_KEY");
    expectReason(() => importX25519Jwk({ ...pub, x: pub.x.slice(0, 20) }), "INVALID_X25519_KEY");
    expectReason(() => importX25519Jwk({ ...pub, x: pub.x + "==" }), "INVALID_X25519_KEY");
    expectReason(() => importX25519Jwk(null), "INVALID_X25519_KEY");
    const other = exportX25519PrivateJwk(generateX25519KeyPair().privateKey);
    expectReason(() => importX25519Jwk({ ...pub, d: other.d }), "INVALID_X25519_KEY");
  });
});
