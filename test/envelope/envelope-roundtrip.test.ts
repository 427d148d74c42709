// Envelope round trips: every size class around the segment size, both key modes, and
// fast-check over random chunkings of plaintext and envelope (segment boundaries must not
// depend on how the source chunks arrive).

import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { randomBytes } from "node:crypto";
import {
  decryptBytes,
  decryptStream,
  DEFAULT_SEGMENT_SIZE,
  encryptBytes,
  encryptStream,
  generateX25519KeyPair,
  readEnvelopeHeader,
} from "../../sdk/src/envelope/index.js";

const S = 64;
const dek = randomBytes(32);
const recipient = generateX25519KeyPair();
const info = new TextEncoder().encode("digest of request 42");
const aad = new TextEncoder().encode("host-1|req-42");

function chunked(data: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (data.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of [...points, data.length]) {
    out.push(data.subarray(prev, p)); // empty chunks included on purpose
    prev = p;
  }
  return out;
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const p of source) parts.push(p);
  return Buffer.concat(parts);
}

function expectedLength(headerLength: number, n: number, segmentSize: number): number {
  const segments = Math.max(1, Math.ceil(n / segmentSize));
  return headerLength + n + 16 * segments;
}

describe("envelope round trips", () => {
  const sizes = [0, 1, S - 1, S, S + 1, 2 * S, 3 * S + 5, 10 * S];

  it.each(sizes)("DEK mode, %i bytes, segment size 64", async (n) => {
    const pt = randomBytes(n);
    const env = await encryptBytes(pt, { dek, dekId: "tenant-a/dek-1" }, { segmentSize: S });
    const header = readEnvelopeHeader(env);
    expect(header).toMatchObject({ version: 1, keyMode: "dek", dekId: "tenant-a/dek-1", segmentSize: S });
    expect(env.length).toBe(expectedLength(header.headerLength, n, S));
    expect(Buffer.from(await decryptBytes(env, { dek })).equals(pt)).toBe(true);
  });

  it.each(sizes)("recipient (HPKE) mode, %i bytes, segment size 64", async (n) => {
    const pt = randomBytes(n);
    const env = await encryptBytes(pt, { recipientPublicKey: recipient.publicKey, info, aad }, { segmentSize: S });
    const header = readEnvelopeHeader(env);
    expect(header).toMatchObject({ keyMode: "recipient", segmentSize: S });
    expect(header.dekId).toBeUndefined();
    expect(env.length).toBe(expectedLength(header.headerLength, n, S));
    const back = await decryptBytes(env, { recipientPrivateKey: recipient.privateKey, info, aad });
    expect(Buffer.from(back).equals(pt)).toBe(true);
  });

  it("uses 1 MiB segments by default and round-trips around that boundary", async () => {
    for (const n of [DEFAULT_SEGMENT_SIZE - 1, DEFAULT_SEGMENT_SIZE, DEFAULT_SEGMENT_SIZE + 1]) {
      const pt = randomBytes(n);
      const env = await encryptBytes(pt, { dek, dekId: "d" });
      const header = readEnvelopeHeader(env);
      expect(header.segmentSize).toBe(DEFAULT_SEGMENT_SIZE);
      expect(env.length).toBe(expectedLength(header.headerLength, n, DEFAULT_SEGMENT_SIZE));
      expect(Buffer.from(await decryptBytes(env, { dek })).equals(pt)).toBe(true);
    }
  });

  it("looks the DEK up by the header's DEK id when given a resolver", async () => {
    const env = await encryptBytes(Buffer.from("hello"), { dek, dekId: "dek-7" });
    const asked: string[] = [];
    const back = await decryptBytes(env, { dek: async (id) => (asked.push(id), dek) });
    expect(Buffer.from(back).toString()).toBe("hello");
    expect(asked).toEqual(["dek-7"]);
  });

  it("encrypts the same plaintext differently each time (fresh salt and nonce prefix)", async () => {
    const pt = Buffer.from("same bytes");
    const a = await encryptBytes(pt, { dek, dekId: "d" });
    const b = await encryptBytes(pt, { dek, dekId: "d" });
    expect(Buffer.from(a).equals(b)).toBe(false);
  });

  it("does not modify or wipe the caller's DEK", async () => {
    const mine = Buffer.from(dek);
    await encryptBytes(Buffer.from("x"), { dek: mine, dekId: "d" });
    expect(mine.equals(dek)).toBe(true);
  });

  it("segment boundaries do not depend on source chunking (random chunkings both ways)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 700 }),
        fc.integer({ min: 16, max: 100 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        fc.boolean(),
        async (pt, segmentSize, cutsIn, cutsOut, hpke) => {
          const key = hpke ? { recipientPublicKey: recipient.publicKey, info, aad } : { dek, dekId: "d" };
          const openKey = hpke ? { recipientPrivateKey: recipient.privateKey, info, aad } : { dek };
          const env = await collect(encryptStream(chunked(pt, cutsIn), key, { segmentSize }));
          const { headerLength } = readEnvelopeHeader(env);
          // A fixed segmentation is the only one with this length and that a fixed-size
          // parser opens, whatever the chunking was on either side.
          expect(env.length).toBe(expectedLength(headerLength, pt.length, segmentSize));
          const back = await collect(decryptStream(chunked(env, cutsOut), openKey));
          expect(back.equals(Buffer.from(pt))).toBe(true);
        },
      ),
      { numRuns: 120 },
    );
  });

  it("accepts sync iterables and node Buffers as sources", async () => {
    const pt = randomBytes(300);
    const env = await collect(encryptStream([pt.subarray(0, 7), pt.subarray(7)], { dek, dekId: "d" }, { segmentSize: 32 }));
    expect((await collect(decryptStream([env], { dek }))).equals(pt)).toBe(true);
  });

  it("rejects bad parameters with INVALID_ARGUMENT", async () => {
    const bad = [
      () => encryptBytes(Buffer.from("x"), { dek: randomBytes(16), dekId: "d" }),
      () => encryptBytes(Buffer.from("x"), { dek, dekId: "" }),
      () => encryptBytes(Buffer.from("x"), { dek, dekId: "x".repeat(256) }),
      () => encryptBytes(Buffer.from("x"), { dek, dekId: "d" }, { segmentSize: 15 }),
      () => encryptBytes(Buffer.from("x"), { dek, dekId: "d" }, { segmentSize: 64 * 1024 * 1024 + 1 }),
      () => encryptBytes(Buffer.from("x"), { recipientPublicKey: new Uint8Array(31) }),
    ];
    for (const f of bad) await expect(f()).rejects.toMatchObject({ name: "TrustplaneError", status: "INVALID_ARGUMENT" });
  });
});

describe("envelope sources", () => {
  it("refuses string chunks instead of encrypting their text", async () => {
    const source = ["not", "bytes"] as unknown as Uint8Array[];
    await expect(collect(encryptStream(source, { dek, dekId: "d" }))).rejects.toMatchObject({ reason: "ENVELOPE_SOURCE" });
  });
});
