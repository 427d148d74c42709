// The authority's in-memory cache of long-term token records by secret hash, for the mint hot
// path (seed 000 short-term tokens): a hit skips the SQL read. Entries are dropped on every
// update the hub carries for their accessor (local writes, other replicas' NOTIFYs) and on a
// gap, and live at most a few seconds regardless. A cached record only ever widens the check:
// a refusal is re-checked against storage.
import type { LongTermTokenRecord } from "./long-term-tokens.js";

export interface TokenRecordCacheOptions {
  /** Backstop lifetime of an entry. Default 5 s. */
  ttlMs?: number;
  /** Bound on entries. Default 10,000. */
  maxEntries?: number;
  now?: () => number;
}

interface Entry {
  record: LongTermTokenRecord;
  hashes: string[];
  expiresAtMs: number;
}

export class TokenRecordCache {
  private readonly byHash = new Map<string, Entry>();
  private readonly byAccessor = new Map<string, Entry>();
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  /** Bumped by every invalidation, so a read that raced one is not cached afterwards. */
  private epoch = 0;
  readonly stats = { hits: 0, misses: 0 };

  constructor(o: TokenRecordCacheOptions = {}) {
    this.ttlMs = o.ttlMs ?? 5_000;
    this.maxEntries = o.maxEntries ?? 10_000;
    this.now = o.now ?? Date.now;
  }

  get(hash: string): LongTermTokenRecord | undefined {
    const e = this.byHash.get(hash);
    if (e && e.expiresAtMs > this.now()) {
      this.stats.hits++;
      return e.record;
    }
    if (e) this.drop(e);
    this.stats.misses++;
    return undefined;
  }

  /** The epoch to pass to put(): take it before reading from storage. */
  mark(): number {
    return this.epoch;
  }

  put(record: LongTermTokenRecord, epoch: number): void {
    if (epoch !== this.epoch) return;
    const old = this.byAccessor.get(record.accessor);
    if (old) this.drop(old);
    if (this.byAccessor.size >= this.maxEntries) this.clear();
    const hashes = [record.tokenHash, ...(record.previousTokenHash ? [record.previousTokenHash] : [])];
    const entry: Entry = { record, hashes, expiresAtMs: this.now() + this.ttlMs };
    this.byAccessor.set(record.accessor, entry);
    for (const h of hashes) this.byHash.set(h, entry);
  }

  invalidate(accessor: string): void {
    this.epoch++;
    const e = this.byAccessor.get(accessor);
    if (e) this.drop(e);
  }

  clear(): void {
    this.epoch++;
    this.byHash.clear();
    this.byAccessor.clear();
  }

  private drop(e: Entry): void {
    this.byAccessor.delete(e.record.accessor);
    for (const h of e.hashes) if (this.byHash.get(h) === e) this.byHash.delete(h);
  }
}
