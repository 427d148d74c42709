// node:stream adapters: pipeline() through createEncryptStream/createDecryptStream, failures
// surfacing as stream errors without emitting unauthenticated data, and readEnvelopeHeader.

import { describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import {
  createDecryptStream,
  createEncryptStream,
  encryptBytes,
  generateX25519KeyPair,
  readEnvelopeHeader,
} from "../../sdk/src/envelope/index.js";

const dek = randomBytes(32);

function sink(): { stream: Writable; bytes: () => Buffer } {
  const parts: Buffer[] = [];
  return {
    stream: new Writable({
      write(chunk: Buffer, _enc, done) {
        parts.push(chunk);
        done();
      },
    }),
    bytes: () => Buffer.concat(parts),
  };
}

function source(data: Buffer, chunk: number): Readable {
  const parts: Buffer[] = [];
  for (let o = 0; o < data.length; o += chunk) parts.push(data.subarray(o, o + chunk));
  return Readable.from(parts, { objectMode: false });
}

describe("node stream adapters", () => {
  it("pipeline encrypts and decrypts (DEK mode)", async () => {
    const pt = randomBytes(300_000);
    const enc = sink();
    await pipeline(source(pt, 7000), createEncryptStream({ dek, dekId: "d" }, { segmentSize: 65536 }), enc.stream);
    expect(readEnvelopeHeader(enc.bytes())).toMatchObject({ keyMode: "dek", dekId: "d", segmentSize: 65536 });
    const dec = sink();
    await pipeline(source(enc.bytes(), 5000), createDecryptStream({ dek }), dec.stream);
    expect(dec.bytes().equals(pt)).toBe(true);
  });

  it("pipeline encrypts and decrypts (recipient mode)", async () => {
    const pair = generateX25519KeyPair();
    const pt = randomBytes(100_000);
    const enc = sink();
    await pipeline(source(pt, 4096), createEncryptStream({ recipientPublicKey: pair.publicKey }, { segmentSize: 10_000 }), enc.stream);
    const dec = sink();
    await pipeline(source(enc.bytes(), 999), createDecryptStream({ recipientPrivateKey: pair.privateKey }), dec.stream);
    expect(dec.bytes().equals(pt)).toBe(true);
  });

  it("a tampered envelope rejects the pipeline with the envelope's error and emits only authenticated segments", async () => {
    const pt = randomBytes(4 * 1024);
    const env = Buffer.from(await encryptBytes(pt, { dek, dekId: "d" }, { segmentSize: 1024 }));
    const h = readEnvelopeHeader(env).headerLength;
    env[h + 2 * (1024 + 16) + 10]! ^= 1; // inside segment 2
    const dec = sink();
    await expect(pipeline(source(env, 333), createDecryptStream({ dek }), dec.stream)).rejects.toMatchObject({
      reason: "ENVELOPE_TAMPERED",
    });
    expect(dec.bytes().equals(pt.subarray(0, dec.bytes().length))).toBe(true);
    expect(dec.bytes().length).toBeLessThanOrEqual(2 * 1024);
  });

  it("a truncated envelope rejects the pipeline with ENVELOPE_TRUNCATED", async () => {
    const env = Buffer.from(await encryptBytes(randomBytes(3000), { dek, dekId: "d" }, { segmentSize: 1000 }));
    const h = readEnvelopeHeader(env).headerLength;
    await expect(pipeline(source(env.subarray(0, h + 2 * 1016), 100), createDecryptStream({ dek }), sink().stream)).rejects.toMatchObject({
      reason: "ENVELOPE_TRUNCATED",
    });
  });
});
