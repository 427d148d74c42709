// Durable idempotency records for the service binder: the first response stored under
// (scope, request_id) wins; a racing duplicate keeps the stored one.
import type { IdempotencyStore } from "../auth/idempotency-store.js";
import type { SqlDb } from "./sql-db.js";

export class IdempotencyRepository implements IdempotencyStore {
  constructor(private readonly db: SqlDb) {}

  async get(scope: string, requestId: string): Promise<{ requestDigest: Uint8Array; response: Uint8Array } | undefined> {
    const r = await this.db.get<{ request_digest: Buffer; response: Buffer }>("SELECT request_digest, response FROM idempotency WHERE scope = ? AND request_id = ?", [scope, requestId]);
    return r && { requestDigest: r.request_digest, response: r.response };
  }

  async put(scope: string, requestId: string, requestDigest: Uint8Array, response: Uint8Array): Promise<void> {
    await this.db.run("INSERT INTO idempotency (scope, request_id, request_digest, response, created_at_ms) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", [
      scope,
      requestId,
      Buffer.from(requestDigest),
      Buffer.from(response),
      Date.now(),
    ]);
  }

  /** Drops records created before the cut-off (a retry window of hours is plenty); returns how many. */
  async purgeCreatedBefore(cutoffMs: number): Promise<number> {
    return (await this.db.run("DELETE FROM idempotency WHERE created_at_ms < ?", [cutoffMs])).changes;
  }
}
