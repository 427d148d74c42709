// Streamed privileged results (memory dumps): the executor's SubmitStream parts (signed header,
// envelope chunks sealed as the output is read, signed trailer with the plaintext's SHA-256)
// and the SDK's streaming open into a file. Every way of altering the stream is refused and
// leaves no output file behind; re-chunking the ciphertext does not matter.
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import type { PrivilegedResult, SubmitStreamResponse } from "../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { openSealedResult, openSealedResultStream } from "../../sdk/src/privileged/index.js";
import { HOST, makeHarness, sealAsHost } from "./executor-harness.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "tp-stream-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

const h = makeHarness();
const security = h.operator("security", ["memory"]);
const DATA = randomBytes(3 * 1024 * 1024 + 12345);
let disposed = 0;
const diagnostics = h.answer;
h.answer = async (name, req) => {
  if (name !== "dump_guest_memory") return diagnostics(name, req);
  return {
  memoryDump: { vmId: "vm-1", format: "raw", guestMemoryBytes: DATA.length },
  stream: {
    size: DATA.length,
    async *chunks() {
      // Odd piece sizes, so segments never line up with what the source yields.
      for (let off = 0; off < DATA.length; off += 700_001) yield DATA.subarray(off, off + 700_001);
    },
    dispose: async () => {
      disposed++;
    },
  },
  };
};

async function collect(gen: AsyncIterable<SubmitStreamResponse>): Promise<SubmitStreamResponse[]> {
  const out: SubmitStreamResponse[] = [];
  for await (const p of gen) out.push(p);
  return out;
}

async function* replay(parts: SubmitStreamResponse[]): AsyncGenerator<SubmitStreamResponse> {
  yield* parts;
}

/** A dump request, its streamed answer, and a way to open any variant of that answer. */
async function dump() {
  const s = h.signed(security, { dumpGuestMemory: { vmId: "vm-1", format: "raw" } });
  const parts = await collect(h.executor.executeStream(s.bytes, h.caller(security)));
  const openParts = (variant: SubmitStreamResponse[]) => {
    const outFile = path.join(dir, `out-${n++}.bin`);
    return {
      outFile,
      opened: openSealedResultStream({ parts: replay(variant), recipientPrivateKey: s.me.privateKey, requestEnvelope: s.bytes, hostKey: h.hostVerification, hostId: HOST, requestId: s.req.requestId, outFile }),
    };
  };
  const forge = (fields: Partial<PrivilegedResult>) => sealAsHost(h, s, fields);
  return { s, parts, openParts, forge };
}

async function refusedWith(p: { outFile: string; opened: Promise<unknown> }, reason: string | RegExp) {
  const err = await p.opened.then(
    () => undefined,
    (e: Error & { reason?: string; status?: string }) => e,
  );
  expect(err, "the altered stream opened").toBeDefined();
  expect(err!.status).toBe("DATA_LOSS");
  if (typeof reason === "string") expect(err!.reason).toBe(reason);
  else expect(err!.reason).toMatch(reason);
  expect(existsSync(p.outFile)).toBe(false);
  expect(readdirSync(dir).filter((f) => f.endsWith(".partial"))).toEqual([]);
}

describe("streamed privileged results", () => {
  it("are a signed header, envelope chunks and a signed trailer naming the plaintext's digest", async () => {
    const { s, parts, openParts } = await dump();
    expect(parts[0]!.result).toBeDefined();
    expect(parts.at(-1)!.trailer).toBeDefined();
    expect(parts.slice(1, -1).every((p) => p.chunk && p.chunk.length <= 1024 * 1024 + 1024)).toBe(true);
    const header = openSealedResult({ sealed: parts[0]!.result!, recipientPrivateKey: s.me.privateKey, requestEnvelope: s.bytes, hostKey: h.hostVerification, hostId: HOST, requestId: s.req.requestId });
    expect(header.streamSize).toBe(DATA.length);
    expect(header.streamSha256).toHaveLength(0);
    const { outFile, opened } = openParts(parts);
    const r = await opened;
    expect(r.bytes).toBe(DATA.length);
    expect(readFileSync(outFile).equals(DATA)).toBe(true);
    expect(h.audit.at(-1)).toMatchObject({ outcome: "ok", operation: "dump_guest_memory", signer: "security", vmId: "vm-1" });
    expect(h.audit.at(-1)!.detail).toContain(`streamed ${DATA.length} bytes`);
  });

  it("refuses a stream without its trailer", async () => {
    const { parts, openParts } = await dump();
    await refusedWith(openParts(parts.slice(0, -1)), "STREAM_TRUNCATED");
  });

  it("refuses a header announcing a stream with nothing after it", async () => {
    const { parts, openParts } = await dump();
    await refusedWith(openParts(parts.slice(0, 1)), /STREAM_TRUNCATED|ENVELOPE_TRUNCATED/);
  });

  it("refuses a dropped, truncated or reordered chunk", async () => {
    const { parts, openParts } = await dump();
    const chunks = parts.slice(1, -1);
    expect(chunks.length).toBeGreaterThanOrEqual(3);
    await refusedWith(openParts([parts[0]!, chunks[0]!, ...chunks.slice(2), parts.at(-1)!]), /ENVELOPE_/);
    await refusedWith(openParts([parts[0]!, ...chunks.slice(0, -1), parts.at(-1)!]), /ENVELOPE_/);
    await refusedWith(openParts([parts[0]!, chunks[0]!, chunks[2]!, chunks[1]!, ...chunks.slice(3), parts.at(-1)!]), /ENVELOPE_/);
  });

  it("refuses a trailer the host signed over other plaintext", async () => {
    const { parts, openParts, forge } = await dump();
    const wrong = forge({ streamSize: DATA.length, streamSha256: randomBytes(32) });
    await refusedWith(openParts([...parts.slice(0, -1), { trailer: wrong }]), "STREAM_DIGEST_MISMATCH");
  });

  it("refuses a trailer naming another size, even with the right digest", async () => {
    const { parts, openParts, forge } = await dump();
    const digest = createHash("sha256").update(DATA).digest();
    await refusedWith(openParts([...parts.slice(0, -1), { trailer: forge({ streamSize: DATA.length + 1, streamSha256: digest }) }]), "STREAM_TRUNCATED");
  });

  it("refuses a stream longer than its header announced", async () => {
    const { parts, openParts, forge } = await dump();
    const shortHeader = forge({ streamSize: DATA.length - 1, memoryDump: { vmId: "vm-1", format: "raw", guestMemoryBytes: DATA.length } });
    await refusedWith(openParts([{ result: shortHeader }, ...parts.slice(1)]), "STREAM_TOO_LONG");
  });

  it("refuses a trailer sent first, a second header, and parts after the trailer", async () => {
    const { parts, openParts } = await dump();
    await refusedWith(openParts([{ result: parts.at(-1)!.trailer! }, ...parts.slice(1)]), "STREAM_INVALID");
    await refusedWith(openParts([parts[0]!, parts[1]!, parts[0]!, ...parts.slice(2)]), "STREAM_INVALID");
    await refusedWith(openParts([...parts, parts[1]!]), "STREAM_INVALID");
  });

  it("refuses the trailer of another request", async () => {
    const a = await dump();
    const b = await dump();
    await refusedWith(a.openParts([...a.parts.slice(0, -1), b.parts.at(-1)!]), /^RESULT_(MISMATCH|SEAL_INVALID)$/);
  });

  it("opens whatever way the ciphertext is re-chunked, and refuses any flipped byte (property)", async () => {
    const { parts, openParts } = await dump();
    const ciphertext = Buffer.concat(parts.slice(1, -1).map((p) => p.chunk!));
    await fc.assert(
      // Arbitrary cut points (single bytes included) for the first pieces, then 1 MiB pieces:
      // cycling a one-byte size over 3 MiB would test nothing more and take minutes.
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 2_000_000 }), { minLength: 1, maxLength: 12 }), async (sizes) => {
        const chunks: SubmitStreamResponse[] = [];
        for (let off = 0, i = 0; off < ciphertext.length; i++) {
          const n = sizes[i] ?? 1024 * 1024;
          chunks.push({ chunk: ciphertext.subarray(off, off + n) });
          off += n;
        }
        const { outFile, opened } = openParts([parts[0]!, ...chunks, parts.at(-1)!]);
        expect((await opened).bytes).toBe(DATA.length);
        rmSync(outFile);
      }),
      { numRuns: 8 },
    );
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: ciphertext.length - 1 }), fc.integer({ min: 1, max: 255 }), async (at, mask) => {
        const altered = Buffer.from(ciphertext);
        altered[at]! ^= mask;
        await refusedWith(openParts([parts[0]!, { chunk: altered }, parts.at(-1)!]), /ENVELOPE_|STREAM_/);
      }),
      { numRuns: 12 },
    );
  }, 120_000);

  it("answers a non-streamed operation with one result part, and refuses parts after it", async () => {
    const inspector = h.operator("inspector", ["inspect"]);
    const s = h.signed(inspector, { collectHostDiagnostics: {} });
    const parts = await collect(h.executor.executeStream(s.bytes, h.caller(inspector)));
    expect(parts).toHaveLength(1);
    const open = (variant: SubmitStreamResponse[], outFile: string) =>
      openSealedResultStream({ parts: replay(variant), recipientPrivateKey: s.me.privateKey, requestEnvelope: s.bytes, hostKey: h.hostVerification, hostId: HOST, requestId: s.req.requestId, outFile });
    const r = await open(parts, path.join(dir, "diag.bin"));
    expect([r.bytes, r.result.hostDiagnostics?.kernel]).toEqual([0, "test"]);
    expect(existsSync(path.join(dir, "diag.bin"))).toBe(false);
    await refusedWith({ outFile: path.join(dir, "diag2.bin"), opened: open([...parts, { chunk: randomBytes(10) }], path.join(dir, "diag2.bin")) }, "STREAM_INVALID");
  });

  it("answers a retry of a streamed request with STREAM_ALREADY_SENT, without dumping again", async () => {
    const s = h.signed(security, { dumpGuestMemory: { vmId: "vm-1", format: "raw" } });
    const runs = h.runs.length;
    await collect(h.executor.executeStream(s.bytes, h.caller(security)));
    const retry = await collect(h.executor.executeStream(s.bytes, h.caller(security))).then(
      () => undefined,
      (e: Error & { reason?: string; status?: string }) => e,
    );
    expect([retry?.status, retry?.reason]).toEqual(["FAILED_PRECONDITION", "STREAM_ALREADY_SENT"]);
    expect(retry?.message).toMatch(/sign a new request/);
    expect(h.runs.length).toBe(runs + 1);
    expect(h.audit.at(-1)).toMatchObject({ requestId: s.req.requestId, outcome: "STREAM_ALREADY_SENT" });
  });

  it("answers a retry of a one-shot SubmitStream with the same sealed result", async () => {
    const inspector = h.operator("inspector-2", ["inspect"]);
    const s = h.signed(inspector, { collectHostDiagnostics: {} });
    const runs = h.runs.length;
    const first = await collect(h.executor.executeStream(s.bytes, h.caller(inspector)));
    expect(await collect(h.executor.executeStream(s.bytes, h.caller(inspector)))).toEqual(first);
    expect(h.runs.length).toBe(runs + 1);
  });

  it("disposes of the dump and audits CANCELLED when the caller stops reading", async () => {
    const s = h.signed(security, { dumpGuestMemory: { vmId: "vm-1", format: "raw" } });
    const before = disposed;
    const gen = h.executor.executeStream(s.bytes, h.caller(security));
    await gen.next();
    await gen.next();
    await gen.return(undefined);
    expect(disposed).toBe(before + 1);
    expect(h.audit.at(-1)).toMatchObject({ outcome: "CANCELLED", requestId: s.req.requestId });
  });
});
