// The replay cache shared by server replicas on PostgreSQL: a nonce is accepted once until
// it expires. Insert-or-conflict makes the check and the record one atomic statement.
import type { NonceStore } from "../auth/nonce-store.js";
import type { SqlDb } from "./sql-db.js";

export class NonceRepository implements NonceStore {
  private lastPurge = 0;

  constructor(
    private readonly db: SqlDb,
    private readonly now: () => number = Date.now,
  ) {}

  async remember(nonce: Uint8Array, expiresAtMs: number): Promise<boolean> {
    const t = this.now();
    if (t - this.lastPurge > 10_000) {
      this.lastPurge = t;
      await this.purgeExpired(t);
    }
    // One statement, atomic on both backends and across replicas: a new nonce inserts; an
    // expired record of the same nonce is taken over; a live one changes nothing (replay).
    const { changes } = await this.db.run(
      "INSERT INTO nonces (nonce, expires_at_ms) VALUES (?, ?) ON CONFLICT (nonce) DO UPDATE SET expires_at_ms = excluded.expires_at_ms WHERE nonces.expires_at_ms <= ?",
      [Buffer.from(nonce), expiresAtMs, t],
    );
    return changes === 1;
  }

  async purgeExpired(nowMs: number): Promise<number> {
    return (await this.db.run("DELETE FROM nonces WHERE expires_at_ms <= ?", [nowMs])).changes;
  }
}
