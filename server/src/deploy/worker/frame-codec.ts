// The worker protocol's framing (deploy validation, seed 001): 4-byte big-endian length,
// then one protobuf message. Shared by the worker and the pool; frames are capped so a
// hostile peer cannot make the other side buffer without bound.
export const MAX_FRAME = 4 * 1024 * 1024;

export function encodeFrame(payload: Uint8Array): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(payload.length);
  return Buffer.concat([head, payload]);
}

export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);
  constructor(private readonly onFrame: (payload: Buffer) => void, private readonly onError: (e: Error) => void) {}

  push(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (len > MAX_FRAME) return this.onError(new Error(`frame of ${len} bytes exceeds ${MAX_FRAME}`));
      if (this.buf.length < 4 + len) return;
      const payload = this.buf.subarray(4, 4 + len);
      this.buf = this.buf.subarray(4 + len);
      this.onFrame(payload);
    }
  }
}
