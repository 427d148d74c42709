// Differential test against an independent implementation (@noble/curves, tests only): every
// published Ed25519 and P-256 vector signature verifies with noble, and node:crypto and noble
// agree on random messages in both directions.
import fc from "fast-check";
import { ed25519 } from "@noble/curves/ed25519.js";
import { p256 } from "@noble/curves/nist.js";
import { describe, expect, it } from "vitest";
import { exportPrivateJwk, generateSigningKey } from "../../sdk/src/auth/signing-key.js";
import { importVerificationKey } from "../../sdk/src/auth/verification-key.js";
import { vectors } from "./signing-vectors.js";

const unhex = (s: string) => Buffer.from(s, "hex");
const b64u = (s: unknown) => Buffer.from(String(s), "base64url");
const p256Public = (jwk: { x?: unknown; y?: unknown }) => Buffer.concat([Buffer.from([4]), b64u(jwk.x), b64u(jwk.y)]);

describe("noble differential", () => {
  it("every Ed25519 and ES256 vector signature verifies with @noble/curves", () => {
    let checked = 0;
    for (const c of vectors.calls) {
      const k = vectors.keys[c.key]!;
      const sig = unhex(c.signatureHex);
      const msg = unhex(c.paeHex);
      if (k.algorithm === "Ed25519") {
        expect(ed25519.verify(sig, msg, b64u(k.publicJwk.x))).toBe(true);
        // noble derives the same public key from the published private scalar.
        expect(Buffer.from(ed25519.getPublicKey(b64u(k.privateJwk.d))).equals(b64u(k.publicJwk.x))).toBe(true);
        checked++;
      } else if (k.algorithm === "ES256") {
        expect(p256.verify(sig, msg, p256Public(k.publicJwk), { lowS: false })).toBe(true);
        expect(Buffer.from(p256.getPublicKey(b64u(k.privateJwk.d), false)).equals(p256Public(k.publicJwk))).toBe(true);
        checked++;
      }
    }
    expect(checked).toBeGreaterThanOrEqual(6);
  });

  const edKey = generateSigningKey("Ed25519");
  const edVk = importVerificationKey(edKey.publicJwk);
  const edSecret = b64u(exportPrivateJwk(edKey).d);
  const ecKey = generateSigningKey("ES256");
  const ecVk = importVerificationKey(ecKey.publicJwk);
  const ecSecret = b64u(exportPrivateJwk(ecKey).d);

  it("Ed25519: node and noble agree on random messages (property)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (msg) => {
        const nodeSig = edKey.sign(msg);
        expect(ed25519.verify(nodeSig, msg, b64u(edKey.publicJwk.x))).toBe(true);
        // Ed25519 is deterministic: both must produce the same bytes.
        expect(Buffer.from(ed25519.sign(msg, edSecret)).equals(Buffer.from(nodeSig))).toBe(true);
        expect(edVk.verify(msg, ed25519.sign(msg, edSecret))).toBe(true);
      }),
      { numRuns: 50 },
    );
  });

  it("P-256: node and noble agree on random messages (property)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (msg) => {
        const nodeSig = ecKey.sign(msg);
        expect(p256.verify(nodeSig, msg, p256Public(ecKey.publicJwk), { lowS: false })).toBe(true);
        expect(ecVk.verify(msg, p256.sign(msg, ecSecret))).toBe(true);
        const other = Uint8Array.from([...msg, 1]);
        expect(p256.verify(nodeSig, other, p256Public(ecKey.publicJwk), { lowS: false })).toBe(false);
      }),
      { numRuns: 30 },
    );
  });
});
