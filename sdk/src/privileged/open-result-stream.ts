// Opening a streamed privileged result (seed 002: memory dumps through the envelope format)
// into a file: the host-signed header announces the size, the envelope chunks are decrypted
// segment by segment as they arrive (never the whole dump in memory), and the host-signed
// trailer must name the SHA-256 and size of exactly the plaintext received. Until then the
// bytes sit in a temporary file beside the output, which is renamed into place only after the
// trailer verified and removed on any failure.
import { createHash, randomBytes } from "node:crypto";
import { open as openFile, rename, rm } from "node:fs/promises";
import path from "node:path";
import { decryptStream } from "../envelope/index.js";
import { TrustplaneError } from "../errors.js";
import type { PrivilegedResult, SealedResult, SubmitStreamResponse } from "../gen/trustplane/privileged/v1/privileged.js";
import { openSealedResult, type OpenResultInput } from "./open-result.js";
import { resultAad, resultInfo } from "./payload-types.js";

export interface OpenResultStreamInput extends Omit<OpenResultInput, "sealed"> {
  /** The parts of a SubmitStream answer, in order. */
  parts: AsyncIterable<SubmitStreamResponse>;
  /** Where the verified plaintext is written (created with mode 0600). */
  outFile: string;
}

export interface OpenedResultStream {
  /** The host-signed result (the header of a stream; the whole result otherwise). */
  result: PrivilegedResult;
  /** The host-signed trailer, for streamed results. */
  trailer?: PrivilegedResult;
  /** Plaintext bytes written to outFile (0 and no file for results without a stream). */
  bytes: number;
  sha256?: Uint8Array;
}

function bad(reason: string, message: string): TrustplaneError {
  return new TrustplaneError("DATA_LOSS", reason, message, "result");
}

export async function openSealedResultStream(input: OpenResultStreamInput): Promise<OpenedResultStream> {
  const parts = input.parts[Symbol.asyncIterator]();
  const opened = (sealed: SealedResult) => openSealedResult({ ...input, sealed });
  const first = await parts.next();
  if (first.done || !first.value.result) throw bad("STREAM_INVALID", "the answer does not start with the host's sealed result header");
  const header = opened(first.value.result);
  if (header.streamSha256.length > 0) throw bad("STREAM_INVALID", "the first part is a trailer (it names a stream digest), not the header");
  if (header.streamSize === 0) {
    if (!(await parts.next()).done) throw bad("STREAM_INVALID", "the result announces no stream, yet more parts follow");
    return { result: header, bytes: 0 };
  }

  let trailerSealed: SealedResult | undefined;
  let unexpected: string | undefined;
  async function* chunks(): AsyncGenerator<Uint8Array> {
    for (;;) {
      const next = await parts.next();
      if (next.done) return;
      if (next.value.chunk) yield next.value.chunk;
      else if (next.value.trailer) {
        trailerSealed = next.value.trailer;
        return;
      } else {
        unexpected = "a second result header arrived inside the stream";
        return;
      }
    }
  }

  const dir = path.dirname(path.resolve(input.outFile));
  const partial = path.join(dir, `.${path.basename(input.outFile)}.${randomBytes(6).toString("hex")}.partial`);
  const fh = await openFile(partial, "wx", 0o600);
  let closed = false;
  try {
    const hash = createHash("sha256");
    let bytes = 0;
    const plaintext = decryptStream(chunks(), { recipientPrivateKey: input.recipientPrivateKey, info: resultInfo(input.requestEnvelope), aad: resultAad(input.hostId, input.requestId) });
    try {
      for await (const piece of plaintext) {
        bytes += piece.length;
        if (bytes > header.streamSize) throw bad("STREAM_TOO_LONG", `the stream carries more than the ${header.streamSize} bytes the host announced`);
        hash.update(piece);
        await fh.write(piece);
      }
    } catch (e) {
      if (unexpected) throw bad("STREAM_INVALID", unexpected);
      // Whatever the envelope reader found wrong (format, key, segments), the host's stream was altered.
      if (e instanceof TrustplaneError && e.reason.startsWith("ENVELOPE_")) throw bad(e.reason, `the streamed result does not open: ${e.message}`);
      throw e;
    }
    if (unexpected) throw bad("STREAM_INVALID", unexpected);
    // The envelope ended at its final segment; the trailer comes next (if chunks() has not met it yet).
    if (!trailerSealed) {
      const next = await parts.next();
      if (!next.done && next.value.trailer) trailerSealed = next.value.trailer;
      else if (!next.done) throw bad("STREAM_INVALID", "data follows the end of the envelope instead of the host's trailer");
    }
    if (!trailerSealed) throw bad("STREAM_TRUNCATED", `the stream ended without the host's signed trailer after ${bytes} bytes`);
    const trailer = opened(trailerSealed);
    if (!(await parts.next()).done) throw bad("STREAM_INVALID", "parts follow the host's trailer");
    const digest = hash.digest();
    if (trailer.streamSize !== bytes || header.streamSize !== bytes) {
      throw bad("STREAM_TRUNCATED", `received ${bytes} bytes; the host announced ${header.streamSize} and signed ${trailer.streamSize}`);
    }
    if (!digest.equals(Buffer.from(trailer.streamSha256))) throw bad("STREAM_DIGEST_MISMATCH", "the plaintext received is not what the host signed (SHA-256 differs)");
    await fh.sync();
    await fh.close();
    closed = true;
    await rename(partial, input.outFile);
    return { result: header, trailer, bytes, sha256: digest };
  } catch (e) {
    if (!closed) await fh.close().catch(() => undefined);
    await rm(partial, { force: true });
    throw e;
  } finally {
    await parts.return?.();
  }
}
