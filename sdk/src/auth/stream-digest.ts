// The digest of a whole request stream, carried in the first message's CallStatement.
// Implements "Streams: the first message carries the digest of the whole stream":
// SHA-256 over every message, each prefixed by its length as 8 bytes big-endian, so
// message boundaries are bound too (["ab","c"] and ["a","bc"] differ).
import { createHash, type Hash } from "node:crypto";

export class StreamDigest {
  private readonly hash: Hash = createHash("sha256");
  private readonly prefix = Buffer.alloc(8);
  private done = false;

  update(message: Uint8Array): this {
    if (this.done) throw new Error("StreamDigest.update after digest()");
    this.prefix.writeBigUInt64BE(BigInt(message.length));
    this.hash.update(this.prefix);
    this.hash.update(message);
    return this;
  }

  digest(): Uint8Array {
    this.done = true;
    return new Uint8Array(this.hash.digest());
  }
}

export function streamDigest(messages: Iterable<Uint8Array>): Uint8Array {
  const d = new StreamDigest();
  for (const m of messages) d.update(m);
  return d.digest();
}
