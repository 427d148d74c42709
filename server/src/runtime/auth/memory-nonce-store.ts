// In-process NonceStore for a single server (tests, `trustplane dev`, agents); replicas share
// a durable one. Bounded: when full of unexpired nonces it refuses calls rather than forget
// a nonce early, because forgetting early would re-open a replay window. A nonce is kept
// until its statement's timestamp leaves the skew window (about 2 × skew at most), so the
// default capacity of 2,000,000 covers about 6,600 calls/s sustained with the ±300 s default;
// keys are the nonce's bytes as a latin1 string (16 chars for 128 bits), values whole seconds.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import type { NonceStore } from "./nonce-store.js";

export interface MemoryNonceStoreOptions {
  maxEntries?: number;
  now?: () => number;
}

const SNAPSHOT_MAGIC = Buffer.from("TPNONCE1");

export class MemoryNonceStore implements NonceStore {
  /** nonce → expiry in whole seconds (small integers stay unboxed in V8). */
  private readonly seen = new Map<string, number>();
  /** Expiry second -> nonces expiring in it, so a sweep touches only what expired. */
  private readonly buckets = new Map<number, string[]>();
  private readonly maxEntries: number;
  private readonly now: () => number;
  private nextSweepMs = 0;

  constructor(opts: MemoryNonceStoreOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 2_000_000;
    this.now = opts.now ?? Date.now;
  }

  /**
   * What a graceful stop hands to the next process: every unexpired nonce. Layout: magic,
   * 8 reserved bytes, then per nonce its length (u8), bytes and expiry second (u32).
   */
  snapshot(): Buffer {
    const now = this.now();
    const parts: Buffer[] = [SNAPSHOT_MAGIC, Buffer.alloc(8)];
    for (const [id, second] of this.seen) {
      if (second * 1000 <= now) continue;
      const nonce = Buffer.from(id, "latin1");
      const rec = Buffer.alloc(1 + nonce.length + 4);
      rec.writeUInt8(nonce.length, 0);
      nonce.copy(rec, 1);
      rec.writeUInt32BE(second, 1 + nonce.length);
      parts.push(rec);
    }
    return Buffer.concat(parts);
  }

  /** Takes over a previous process's snapshot, so a graceful restart keeps full replay coverage. */
  restore(snapshot: Buffer): void {
    if (snapshot.length < 16 || !snapshot.subarray(0, 8).equals(SNAPSHOT_MAGIC)) throw new TrustplaneError("DATA_LOSS", "NONCE_SNAPSHOT_INVALID", "the replay-cache snapshot is not one this version wrote");
    const now = this.now();
    let off = 16;
    while (off < snapshot.length) {
      const len = snapshot.readUInt8(off);
      if (off + 1 + len + 4 > snapshot.length) throw new TrustplaneError("DATA_LOSS", "NONCE_SNAPSHOT_INVALID", "the replay-cache snapshot is truncated");
      const id = snapshot.subarray(off + 1, off + 1 + len).toString("latin1");
      const second = snapshot.readUInt32BE(off + 1 + len);
      off += 1 + len + 4;
      if (second * 1000 <= now || this.seen.has(id)) continue;
      this.seen.set(id, second);
      const bucket = this.buckets.get(second);
      if (bucket) bucket.push(id);
      else this.buckets.set(second, [id]);
    }
  }

  get size(): number {
    return this.seen.size;
  }

  async remember(nonce: Uint8Array, expiresAtMs: number): Promise<boolean> {
    const now = this.now();
    // Sweep at most once a second, or immediately when full.
    if (now >= this.nextSweepMs || this.seen.size >= this.maxEntries) this.sweep(now);
    const id = Buffer.from(nonce.buffer, nonce.byteOffset, nonce.byteLength).toString("latin1");
    const expires = this.seen.get(id);
    if (expires !== undefined && expires * 1000 > now) return false;
    if (expires === undefined && this.seen.size >= this.maxEntries) {
      throw new TrustplaneError("RESOURCE_EXHAUSTED", "NONCE_STORE_FULL", `more than ${this.maxEntries} calls inside the replay window; retry shortly (operators: run replicas on PostgreSQL or narrow the skew window)`);
    }
    // Rounded up to the second: a nonce is never forgotten before its expiry.
    const second = Math.ceil(expiresAtMs / 1000);
    this.seen.set(id, second);
    const bucket = this.buckets.get(second);
    if (bucket) bucket.push(id);
    else this.buckets.set(second, [id]);
    return true;
  }

  private sweep(now: number): void {
    this.nextSweepMs = now + 1000;
    for (const [second, ids] of this.buckets) {
      if (second * 1000 > now) continue;
      // Keep only nonces still unexpired whose current expiry is in this bucket (a nonce
      // recorded again after expiring sits in a later bucket as well).
      const remaining = ids.filter((id) => {
        const expires = this.seen.get(id);
        if (expires === undefined) return false;
        if (expires * 1000 <= now) {
          this.seen.delete(id);
          return false;
        }
        return expires === second;
      });
      if (remaining.length > 0) this.buckets.set(second, remaining);
      else this.buckets.delete(second);
    }
  }
}
