// Idempotent Submit on the agent (seed 002): the outcome of a signed request, kept under the
// SHA-256 of the exact envelope bytes for the request's replay window, so a retry of the same
// envelope after a transport error gets the same sealed result instead of NONCE_REPLAYED.
// Returning it again leaks nothing: the result is sealed to the requester's key.

interface Entry<T> {
  outcome: Promise<T>;
  /** When the entry may go (the request's not_after plus skew); Infinity while in flight. */
  expiresAtMs: number;
}

export class ResultCache<T> {
  private readonly entries = new Map<string, Entry<T>>();

  constructor(
    private readonly maxEntries = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** The outcome of an earlier submission of these exact bytes, if one is remembered. */
  get(digest: string): Promise<T> | undefined {
    const e = this.entries.get(digest);
    if (!e) return undefined;
    if (e.expiresAtMs <= this.now()) {
      this.entries.delete(digest);
      return undefined;
    }
    return e.outcome;
  }

  /** Remembers an in-flight outcome at once, so a concurrent retry waits for the same one. */
  start(digest: string, outcome: Promise<T>): void {
    this.sweep();
    this.entries.set(digest, { outcome, expiresAtMs: Infinity });
  }

  /** Keeps the outcome until `expiresAtMs`. */
  settle(digest: string, expiresAtMs: number): void {
    const e = this.entries.get(digest);
    if (e) e.expiresAtMs = expiresAtMs;
  }

  /** Forgets an outcome a retry must not see (it failed before the request's nonce was spent). */
  forget(digest: string): void {
    this.entries.delete(digest);
  }

  private sweep(): void {
    if (this.entries.size < this.maxEntries) return;
    const now = this.now();
    for (const [k, e] of this.entries) if (e.expiresAtMs <= now) this.entries.delete(k);
    // Still full of live entries: drop the oldest; its retry then answers NONCE_REPLAYED,
    // which is safe (nothing runs twice), only less convenient.
    while (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }
}
