// Every way an envelope must fail to open, each with its own test and reason code: truncation,
// reordering, splicing, header tampering, wrong key, key commitment, extended tail, wrong
// recipient / info / aad, format errors, and random single-bit flips (never wrong plaintext).

import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { randomBytes } from "node:crypto";
import { TrustplaneError } from "../../sdk/src/errors.js";
import {
  decryptBytes,
  decryptStream,
  encryptBytes,
  generateX25519KeyPair,
  readEnvelopeHeader,
  type EnvelopeDecryptionKey,
} from "../../sdk/src/envelope/index.js";

const S = 64; // plaintext segment size used throughout
const SEG = S + 16; // ciphertext segment size
const dek = randomBytes(32);
const recipient = generateX25519KeyPair();
const info = new TextEncoder().encode("request digest");
const aad = new TextEncoder().encode("host-1|req-1");

interface Opened {
  released: Buffer;
  error?: TrustplaneError;
}

/** Opens with the streaming API, recording what was released before any failure. */
async function openStream(env: Uint8Array, key: EnvelopeDecryptionKey, chunkSize = 13): Promise<Opened> {
  const chunks: Uint8Array[] = [];
  for (let o = 0; o < env.length; o += chunkSize) chunks.push(env.subarray(o, o + chunkSize));
  const released: Uint8Array[] = [];
  const it = decryptStream(chunks, key)[Symbol.asyncIterator]();
  try {
    for (;;) {
      const next = await it.next();
      if (next.done) break;
      released.push(next.value);
    }
  } catch (err) {
    if (!(err instanceof TrustplaneError)) throw err;
    // Nothing is yielded after a failure.
    expect(await it.next()).toEqual({ done: true, value: undefined });
    return { released: Buffer.concat(released), error: err };
  }
  return { released: Buffer.concat(released) };
}

async function expectFailure(env: Uint8Array, key: EnvelopeDecryptionKey, reason: string, status?: string): Promise<Opened> {
  const opened = await openStream(env, key);
  expect(opened.error, "the envelope opened although it must not").toBeDefined();
  expect(opened.error!.reason).toBe(reason);
  if (status) expect(opened.error!.status).toBe(status);
  await expect(decryptBytes(env, key)).rejects.toMatchObject({ reason });
  return opened;
}

async function dekEnvelope(pt: Uint8Array, dekId = "dek-0001"): Promise<Buffer> {
  return Buffer.from(await encryptBytes(pt, { dek, dekId }, { segmentSize: S }));
}

describe("envelope failure modes", () => {
  const pt = randomBytes(3 * S + 10); // segments: 64, 64, 64, 10 (final)

  it("opens when untouched (control)", async () => {
    const env = await dekEnvelope(pt);
    const opened = await openStream(env, { dek });
    expect(opened.error).toBeUndefined();
    expect(opened.released.equals(pt)).toBe(true);
  });

  it("truncation: a stream missing its final segment fails with ENVELOPE_TRUNCATED", async () => {
    const env = await dekEnvelope(pt);
    const h = readEnvelopeHeader(env).headerLength;
    for (const segments of [1, 2, 3]) {
      const cut = env.subarray(0, h + segments * SEG);
      const opened = await expectFailure(cut, { dek }, "ENVELOPE_TRUNCATED", "DATA_LOSS");
      // Segments before the cut authenticated and may be released; the cut one may not.
      expect(opened.released.equals(pt.subarray(0, (segments - 1) * S))).toBe(true);
    }
  });

  it("truncation: a stream whose length is an exact multiple of the segment size loses its final full segment", async () => {
    const full = randomBytes(2 * S);
    const env = await dekEnvelope(full);
    const h = readEnvelopeHeader(env).headerLength;
    expect(env.length).toBe(h + 2 * SEG);
    await expectFailure(env.subarray(0, h + SEG), { dek }, "ENVELOPE_TRUNCATED");
  });

  it("truncation: inside the header, right after it, and an empty input", async () => {
    const env = await dekEnvelope(pt);
    const h = readEnvelopeHeader(env).headerLength;
    await expectFailure(env.subarray(0, 40), { dek }, "ENVELOPE_TRUNCATED");
    await expectFailure(env.subarray(0, h - 1), { dek }, "ENVELOPE_TRUNCATED");
    await expectFailure(env.subarray(0, h), { dek }, "ENVELOPE_TRUNCATED");
    await expectFailure(env.subarray(0, h + 5), { dek }, "ENVELOPE_TRUNCATED");
    await expectFailure(new Uint8Array(0), { dek }, "ENVELOPE_TRUNCATED");
  });

  it("reordering: swapping two segments fails with ENVELOPE_TAMPERED", async () => {
    const env = await dekEnvelope(pt);
    const h = readEnvelopeHeader(env).headerLength;
    const swapped = Buffer.concat([
      env.subarray(0, h),
      env.subarray(h + SEG, h + 2 * SEG),
      env.subarray(h, h + SEG),
      env.subarray(h + 2 * SEG),
    ]);
    const opened = await expectFailure(swapped, { dek }, "ENVELOPE_TAMPERED", "DATA_LOSS");
    expect(opened.released.length).toBe(0);
  });

  it("reordering: dropping a middle segment fails", async () => {
    const env = await dekEnvelope(pt);
    const h = readEnvelopeHeader(env).headerLength;
    const dropped = Buffer.concat([env.subarray(0, h + SEG), env.subarray(h + 2 * SEG)]);
    const opened = await expectFailure(dropped, { dek }, "ENVELOPE_TAMPERED");
    expect(opened.released.equals(pt.subarray(0, S))).toBe(true);
  });

  it("splicing: a segment from another envelope under the same DEK fails", async () => {
    const a = await dekEnvelope(pt);
    const b = await dekEnvelope(pt); // same DEK, same plaintext, same segment size and DEK id
    const h = readEnvelopeHeader(a).headerLength;
    const spliced = Buffer.concat([a.subarray(0, h + SEG), b.subarray(h + SEG, h + 2 * SEG), a.subarray(h + 2 * SEG)]);
    const opened = await expectFailure(spliced, { dek }, "ENVELOPE_TAMPERED");
    expect(opened.released.equals(pt.subarray(0, S))).toBe(true);
    // The header of one with the segments of the other fails too.
    await expectFailure(Buffer.concat([a.subarray(0, h), b.subarray(h)]), { dek }, "ENVELOPE_TAMPERED");
  });

  it("header tampering: another DEK id of the same length fails although the DEK is right", async () => {
    const env = await dekEnvelope(pt, "dek-0001");
    const forged = Buffer.from(env);
    const at = forged.indexOf(Buffer.from("dek-0001"));
    forged.write("dek-0002", at);
    expect(readEnvelopeHeader(forged).dekId).toBe("dek-0002");
    const opened = await expectFailure(forged, { dek: () => dek }, "ENVELOPE_TAMPERED");
    expect(opened.released.length).toBe(0);
  });

  it("header tampering: a smaller declared segment size fails", async () => {
    const env = await dekEnvelope(pt);
    const forged = Buffer.from(env);
    forged.writeUInt32BE(S / 2, 6);
    await expectFailure(forged, { dek }, "ENVELOPE_TAMPERED");
  });

  it("header tampering: any single bit flip in the header fails and releases nothing", async () => {
    const env = await dekEnvelope(pt);
    const h = readEnvelopeHeader(env).headerLength;
    for (let bit = 0; bit < h * 8; bit++) {
      const forged = Buffer.from(env);
      forged[bit >> 3]! ^= 1 << (bit & 7);
      const opened = await openStream(forged, { dek: () => dek });
      expect(opened.error, `header bit ${bit}`).toBeInstanceOf(TrustplaneError);
      expect(opened.released.length, `header bit ${bit}`).toBe(0);
    }
  });

  it("wrong key: another DEK fails with ENVELOPE_KEY_COMMITMENT before any segment is decrypted", async () => {
    const env = await dekEnvelope(pt);
    const opened = await expectFailure(env, { dek: randomBytes(32) }, "ENVELOPE_KEY_COMMITMENT", "INVALID_ARGUMENT");
    expect(opened.released.length).toBe(0);
  });

  it("key commitment: an altered commitment fails with ENVELOPE_KEY_COMMITMENT even with the right DEK", async () => {
    const env = await dekEnvelope(pt);
    const forged = Buffer.from(env);
    forged[49 + 5]! ^= 0x01; // inside the 32-byte commitment at offset 49
    await expectFailure(forged, { dek }, "ENVELOPE_KEY_COMMITMENT");
  });

  it("extended tail: any bytes after the final segment fail with ENVELOPE_TAMPERED", async () => {
    for (const plain of [pt, randomBytes(2 * S)]) {
      const env = await dekEnvelope(plain);
      const h = readEnvelopeHeader(env).headerLength;
      for (const extra of [Buffer.alloc(1), randomBytes(16), env.subarray(h, h + SEG), env.subarray(env.length - 26)]) {
        await expectFailure(Buffer.concat([env, extra]), { dek }, "ENVELOPE_TAMPERED");
      }
    }
  });

  it("extended tail: appending after a full final segment is named as such", async () => {
    const env = await dekEnvelope(randomBytes(2 * S));
    const opened = await expectFailure(Buffer.concat([env, Buffer.alloc(3)]), { dek }, "ENVELOPE_TAMPERED");
    expect(opened.error!.message).toContain("follows the final segment");
  });

  it("ciphertext tampering: plaintext of a segment is released only after that segment authenticated", async () => {
    const env = await dekEnvelope(pt);
    const h = readEnvelopeHeader(env).headerLength;
    const forged = Buffer.from(env);
    forged[h + SEG + 3]! ^= 0x80; // inside segment 1's ciphertext, not its tag
    const opened = await expectFailure(forged, { dek }, "ENVELOPE_TAMPERED");
    expect(opened.released.equals(pt.subarray(0, S))).toBe(true);
  });

  it("random single-bit flips anywhere fail and never yield wrong plaintext", async () => {
    const env = await dekEnvelope(pt);
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: env.length * 8 - 1 }), fc.integer({ min: 1, max: 200 }), async (bit, chunkSize) => {
        const forged = Buffer.from(env);
        forged[bit >> 3]! ^= 1 << (bit & 7);
        const opened = await openStream(forged, { dek: () => dek }, chunkSize);
        expect(opened.error).toBeInstanceOf(TrustplaneError);
        // Whatever was released is an authentic prefix of the plaintext, segment by segment.
        expect(opened.released.length % S).toBe(0);
        expect(opened.released.equals(pt.subarray(0, opened.released.length))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it("random single-bit flips in a sealed (HPKE) envelope fail too", async () => {
    const env = Buffer.from(await encryptBytes(pt, { recipientPublicKey: recipient.publicKey, info, aad }, { segmentSize: S }));
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: env.length * 8 - 1 }), async (bit) => {
        const forged = Buffer.from(env);
        forged[bit >> 3]! ^= 1 << (bit & 7);
        const opened = await openStream(forged, { recipientPrivateKey: recipient.privateKey, info, aad });
        expect(opened.error).toBeInstanceOf(TrustplaneError);
        expect(opened.released.equals(pt.subarray(0, opened.released.length))).toBe(true);
      }),
      { numRuns: 200 },
    );
  });
});

describe("sealed (HPKE) envelopes: recipient key, info and aad", () => {
  const pt = randomBytes(2 * S + 1);
  const seal = async (): Promise<Buffer> =>
    Buffer.from(await encryptBytes(pt, { recipientPublicKey: recipient.publicKey, info, aad }, { segmentSize: S }));

  it("opens with the recipient's key, info and aad (control)", async () => {
    const opened = await openStream(await seal(), { recipientPrivateKey: recipient.privateKey, info, aad });
    expect(opened.error).toBeUndefined();
    expect(opened.released.equals(pt)).toBe(true);
  });

  it("another recipient's private key fails with ENVELOPE_KEY_UNWRAP", async () => {
    await expectFailure(await seal(), { recipientPrivateKey: generateX25519KeyPair().privateKey, info, aad }, "ENVELOPE_KEY_UNWRAP");
  });

  it("other info fails", async () => {
    await expectFailure(await seal(), { recipientPrivateKey: recipient.privateKey, info: new Uint8Array([1]), aad }, "ENVELOPE_KEY_UNWRAP");
    await expectFailure(await seal(), { recipientPrivateKey: recipient.privateKey, aad }, "ENVELOPE_KEY_UNWRAP");
  });

  it("other aad fails", async () => {
    await expectFailure(await seal(), { recipientPrivateKey: recipient.privateKey, info, aad: new Uint8Array([1]) }, "ENVELOPE_KEY_UNWRAP");
  });

  it("a DEK envelope is bound to its aad too", async () => {
    const env = Buffer.from(await encryptBytes(pt, { dek, dekId: "d", aad }, { segmentSize: S }));
    expect(Buffer.from(await decryptBytes(env, { dek, aad })).equals(pt)).toBe(true);
    await expectFailure(env, { dek }, "ENVELOPE_TAMPERED");
    await expectFailure(env, { dek, aad: new Uint8Array([9]) }, "ENVELOPE_TAMPERED");
  });

  it("the wrong key kind fails with ENVELOPE_KEY_MODE", async () => {
    await expectFailure(await seal(), { dek }, "ENVELOPE_KEY_MODE");
    await expectFailure(await dekEnvelope(pt), { recipientPrivateKey: recipient.privateKey }, "ENVELOPE_KEY_MODE");
  });
});

describe("format errors", () => {
  it("bad magic, unknown version, unknown key mode and out-of-range sizes fail with ENVELOPE_FORMAT", async () => {
    const env = await dekEnvelope(Buffer.from("payload"));
    const variants: Array<(b: Buffer) => void> = [
      (b) => b.write("XXXX", 0),
      (b) => (b[4] = 2),
      (b) => (b[5] = 9),
      (b) => b.writeUInt32BE(15, 6),
      (b) => b.writeUInt32BE(64 * 1024 * 1024 + 1, 6),
      (b) => b.writeUInt16BE(0, 81),
    ];
    for (const change of variants) {
      const forged = Buffer.from(env);
      change(forged);
      await expectFailure(forged, { dek }, "ENVELOPE_FORMAT", "INVALID_ARGUMENT");
    }
  });

  it("a short non-envelope input is a format error, not a truncation", async () => {
    await expectFailure(Buffer.from("hello world"), { dek }, "ENVELOPE_FORMAT");
  });

  it("refuses segments above the caller's maxSegmentSize before reading them", async () => {
    const env = await encryptBytes(randomBytes(10), { dek, dekId: "d" }, { segmentSize: 4096 });
    await expect(decryptBytes(env, { dek }, { maxSegmentSize: 1024 })).rejects.toMatchObject({ reason: "ENVELOPE_SEGMENT_SIZE" });
  });
});
