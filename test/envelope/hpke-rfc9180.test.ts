// RFC 9180 known-answer tests for the HPKE suite Trustplane uses (0x0020/0x0001/0x0002), with
// the sender's ephemeral key fixed as the vector does, plus interop with @hpke/core.

import { describe, expect, it } from "vitest";
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import vector from "../vectors/hpke-x25519-sha256-aes256gcm.json" with { type: "json" };
import { setupBaseRecipient, setupBaseSender } from "../../sdk/src/envelope/hpke-context.js";
import { open, openAndExport, seal, sealAndExport } from "../../sdk/src/envelope/hpke.js";
import { generateX25519KeyPair, x25519PublicKeyFromPrivate } from "../../sdk/src/envelope/x25519-keys.js";

const hex = (s: string): Buffer => Buffer.from(s, "hex");
const toHex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const arrayBuffer = (b: Uint8Array): ArrayBuffer => new Uint8Array(b).buffer;

describe("HPKE RFC 9180 vector, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, base mode", () => {
  it("is the suite and mode it claims to be", () => {
    expect([vector.mode, vector.kem_id, vector.kdf_id, vector.aead_id]).toEqual([0, 0x20, 1, 2]);
  });

  it("derives the vector's public keys from its private keys", () => {
    expect(toHex(x25519PublicKeyFromPrivate(hex(vector.skRm)))).toBe(vector.pkRm);
    expect(toHex(x25519PublicKeyFromPrivate(hex(vector.skEm)))).toBe(vector.pkEm);
  });

  it("sender: enc, shared_secret, key, base_nonce, exporter_secret and every ciphertext", () => {
    const { enc, context, sharedSecret } = setupBaseSender(hex(vector.pkRm), hex(vector.info), hex(vector.skEm));
    expect(toHex(enc)).toBe(vector.enc);
    expect(toHex(sharedSecret)).toBe(vector.shared_secret);
    const schedule = context.keyScheduleForTesting;
    expect(toHex(schedule.key)).toBe(vector.key);
    expect(toHex(schedule.baseNonce)).toBe(vector.base_nonce);
    expect(toHex(schedule.exporterSecret)).toBe(vector.exporter_secret);
    let seq = 0;
    for (const e of vector.encryptions) {
      // Advance the context to the vector's sequence number; nonces depend only on it.
      for (; seq < e.seq; seq++) context.seal(new Uint8Array(0), new Uint8Array(0));
      expect(toHex(context.seal(hex(e.aad), hex(e.pt))), `seq ${e.seq}`).toBe(e.ct);
      seq++;
    }
  });

  it("recipient: decapsulates enc with skRm to the same secrets and opens every ciphertext", () => {
    const { context, sharedSecret } = setupBaseRecipient(hex(vector.enc), hex(vector.skRm), hex(vector.info));
    expect(toHex(sharedSecret)).toBe(vector.shared_secret);
    expect(toHex(context.keyScheduleForTesting.key)).toBe(vector.key);
    expect(toHex(context.keyScheduleForTesting.baseNonce)).toBe(vector.base_nonce);
    const first = vector.encryptions[0]!;
    expect(toHex(context.open(hex(first.aad), hex(first.ct))!)).toBe(first.pt);
  });

  it("the single-shot open() opens the vector's first ciphertext (sequence 0)", () => {
    const first = vector.encryptions[0]!;
    const pt = open(hex(vector.skRm), hex(vector.enc), hex(first.ct), { info: hex(vector.info), aad: hex(first.aad) });
    expect(toHex(pt)).toBe(first.pt);
  });
});

describe("HPKE interop with @hpke/core (an independent implementation)", () => {
  const suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });
  const info = new TextEncoder().encode("request digest");
  const aad = new TextEncoder().encode("host-1/req-1");
  const plaintext = new TextEncoder().encode("a signed result");

  it("@hpke/core opens what seal() produced", async () => {
    const { publicKey, privateKey } = generateX25519KeyPair();
    const sealed = seal(publicKey, plaintext, { info, aad });
    const recipientKey = await suite.kem.importKey(
      "jwk",
      { kty: "OKP", crv: "X25519", x: Buffer.from(publicKey).toString("base64url"), d: Buffer.from(privateKey).toString("base64url") },
      false,
    );
    const opened = await suite.open(
      { recipientKey, enc: arrayBuffer(sealed.enc), info: arrayBuffer(info) },
      arrayBuffer(sealed.ciphertext),
      arrayBuffer(aad),
    );
    expect(new Uint8Array(opened)).toEqual(plaintext);
  });

  it("open() opens what @hpke/core sealed", async () => {
    const { publicKey, privateKey } = generateX25519KeyPair();
    const recipientPublicKey = await suite.kem.importKey("jwk", { kty: "OKP", crv: "X25519", x: Buffer.from(publicKey).toString("base64url") }, true);
    const sealed = await suite.seal({ recipientPublicKey, info: arrayBuffer(info) }, arrayBuffer(plaintext), arrayBuffer(aad));
    expect(open(privateKey, new Uint8Array(sealed.enc), new Uint8Array(sealed.ct), { info, aad })).toEqual(plaintext);
  });

  it("the exported secret (RFC 9180 §5.3) is @hpke/core's, on both sides", async () => {
    const { publicKey, privateKey } = generateX25519KeyPair();
    const exporterContext = new TextEncoder().encode("trustplane job session secret v1");
    // Sender here, recipient in @hpke/core.
    const sealed = sealAndExport(publicKey, plaintext, { info, aad }, exporterContext, 32);
    const recipientKey = await suite.kem.importKey(
      "jwk",
      { kty: "OKP", crv: "X25519", x: Buffer.from(publicKey).toString("base64url"), d: Buffer.from(privateKey).toString("base64url") },
      false,
    );
    const rctx = await suite.createRecipientContext({ recipientKey, enc: arrayBuffer(sealed.enc), info: arrayBuffer(info) });
    expect(Buffer.from(await rctx.export(arrayBuffer(exporterContext), 32))).toEqual(sealed.exported);
    // Sender in @hpke/core, recipient here.
    const recipientPublicKey = await suite.kem.importKey("jwk", { kty: "OKP", crv: "X25519", x: Buffer.from(publicKey).toString("base64url") }, true);
    const sctx = await suite.createSenderContext({ recipientPublicKey, info: arrayBuffer(info) });
    const ct = await sctx.seal(arrayBuffer(plaintext), arrayBuffer(aad));
    const opened = openAndExport(privateKey, new Uint8Array(sctx.enc), new Uint8Array(ct), { info, aad }, exporterContext, 32);
    expect(opened.plaintext).toEqual(plaintext);
    expect(opened.exported).toEqual(Buffer.from(await sctx.export(arrayBuffer(exporterContext), 32)));
  });
});
