// Memory bound: a 256 MiB round trip through encryptStream → decryptStream (never holding the
// whole payload) keeps RSS growth bounded. Asserts memory, never time.

import { describe, expect, it } from "vitest";
import { createHash, randomBytes } from "node:crypto";
import { decryptStream, encryptStream } from "../../sdk/src/envelope/index.js";

const TOTAL = 256 * 1024 * 1024;
const CHUNK = 64 * 1024;

describe("envelope streaming memory", () => {
  it("round-trips 256 MiB with RSS growth under 64 MiB", async () => {
    const dek = randomBytes(32);
    const block = randomBytes(1024 * 1024);
    const inHash = createHash("sha256");
    // Distinct chunks (a counter in each) from one random block, so no 256 MiB buffer exists.
    async function* plaintext(): AsyncGenerator<Uint8Array> {
      for (let offset = 0; offset < TOTAL; offset += CHUNK) {
        const chunk = Buffer.from(block.subarray(offset % block.length, (offset % block.length) + CHUNK));
        chunk.writeUInt32BE(offset / CHUNK, 0);
        inHash.update(chunk);
        yield chunk;
      }
    }
    // Warm up (JIT, cipher setup, allocator arenas) so the baseline is the steady state.
    for await (const _ of decryptStream(encryptStream([randomBytes(8 * 1024 * 1024)], { dek, dekId: "warm-up" }), { dek })) void _;
    const before = process.memoryUsage().rss;
    let peak = before;
    let outBytes = 0;
    const outHash = createHash("sha256");
    const envelope = encryptStream(plaintext(), { dek, dekId: "memory-test" });
    for await (const piece of decryptStream(envelope, { dek })) {
      outHash.update(piece);
      outBytes += piece.length;
      if ((outBytes & 0xfffff) === 0) peak = Math.max(peak, process.memoryUsage().rss);
    }
    peak = Math.max(peak, process.memoryUsage().rss);
    expect(outBytes).toBe(TOTAL);
    expect(outHash.digest("hex")).toBe(inHash.digest("hex"));
    const growthMiB = (peak - before) / (1024 * 1024);
    console.log(`envelope 256 MiB streaming round trip: RSS growth ${growthMiB.toFixed(1)} MiB`);
    expect(growthMiB).toBeLessThan(64);
  });
});
