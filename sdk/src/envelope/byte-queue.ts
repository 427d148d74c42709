// A FIFO of byte chunks that hands out exact-length pieces as views, so the envelope's segment
// boundaries never depend on how the source chunked its bytes and large chunks are never copied.
// Part of "Sealed results and the envelope format" (streaming segments).

import { invalidArgument } from "../errors.js";

export class ByteQueue {
  private chunks: Uint8Array[] = [];
  private head = 0; // offset into chunks[0]
  private total = 0;

  get length(): number {
    return this.total;
  }

  push(chunk: Uint8Array): void {
    if (!(chunk instanceof Uint8Array)) {
      // e.g. a Readable with setEncoding(): text chunks would silently change the bytes.
      throw invalidArgument("source", "must yield Uint8Array/Buffer chunks (no string or object mode)", "ENVELOPE_SOURCE");
    }
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  /** Removes the next n bytes and returns them as views over the queued chunks (no copy). */
  takePieces(n: number): Uint8Array[] {
    if (n > this.total) throw new RangeError(`ByteQueue: ${n} bytes requested, ${this.total} queued`);
    const pieces: Uint8Array[] = [];
    let need = n;
    while (need > 0) {
      const first = this.chunks[0]!;
      const available = first.length - this.head;
      if (available <= need) {
        pieces.push(this.head === 0 ? first : first.subarray(this.head));
        this.chunks.shift();
        this.head = 0;
        need -= available;
      } else {
        pieces.push(first.subarray(this.head, this.head + need));
        this.head += need;
        need = 0;
      }
    }
    this.total -= n;
    return pieces;
  }

  /** Removes the next n bytes as one contiguous array (copied only when they span chunks). */
  take(n: number): Uint8Array {
    const pieces = this.takePieces(n);
    if (pieces.length === 1) return pieces[0]!;
    return Buffer.concat(pieces, n);
  }

  /** Looks at the next n bytes (n ≤ length) without removing them. */
  peek(n: number): Uint8Array {
    const pieces: Uint8Array[] = [];
    let need = n;
    for (let i = 0, offset = this.head; need > 0 && i < this.chunks.length; i++, offset = 0) {
      const piece = this.chunks[i]!.subarray(offset, offset + need);
      pieces.push(piece);
      need -= piece.length;
    }
    return pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
  }
}
