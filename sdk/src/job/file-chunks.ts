// A file read as a stream of message-sized chunks (seed 003's streamed uploads: PutObject,
// SendJobInput, the bridge's ReportResult): the signed client stream reads it twice — once
// for the digest it signs, once to send — so the source must be re-readable, and a file is.
import { open } from "node:fs/promises";

/** `size` bytes of `file` (from offset 0) in chunks of at most `chunk` bytes; fresh buffers. */
export async function* fileChunks(file: string, size: number, chunk = 1024 * 1024, onRead?: (bytes: number) => void): AsyncGenerator<Buffer> {
  const h = await open(file, "r");
  try {
    for (let done = 0; done < size; ) {
      const buf = Buffer.allocUnsafe(Math.min(chunk, size - done));
      const { bytesRead } = await h.read(buf, 0, buf.length, done);
      if (bytesRead === 0) break;
      done += bytesRead;
      onRead?.(done);
      yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
    }
  } finally {
    await h.close();
  }
}
