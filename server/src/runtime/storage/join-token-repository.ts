// One-time host join tokens, stored only as SHA-256 hashes. Redeeming is a single conditional
// UPDATE, so two agents racing with the same token cannot both win.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import type { SqlDb } from "./sql-db.js";

export interface JoinTokenRecord {
  tokenHash: string;
  hostId: string;
  createdBy: string;
  expiresAtMs: number;
}

/** Deliberately the same for unknown, expired and used tokens: the caller learns nothing. */
const invalid = () =>
  new TrustplaneError("UNAUTHENTICATED", "JOIN_TOKEN_INVALID", "the join token is unknown, expired or already used; mint a new one with `trustplane host join-token`", "join_token");

export class JoinTokenRepository {
  constructor(private readonly db: SqlDb) {}

  async create(t: JoinTokenRecord): Promise<void> {
    await this.db.run("INSERT INTO join_tokens (token_hash, host_id, created_by, expires_at_ms) VALUES (?, ?, ?, ?)", [t.tokenHash, t.hostId, t.createdBy, t.expiresAtMs]);
  }

  async redeem(tokenHash: string, nowMs: number): Promise<{ hostId: string; createdBy: string }> {
    const { changes } = await this.db.run("UPDATE join_tokens SET used_at_ms = ? WHERE token_hash = ? AND used_at_ms IS NULL AND expires_at_ms > ?", [nowMs, tokenHash, nowMs]);
    if (changes !== 1) throw invalid();
    const row = await this.db.get<{ host_id: string; created_by: string }>("SELECT host_id, created_by FROM join_tokens WHERE token_hash = ?", [tokenHash]);
    return { hostId: row!.host_id, createdBy: row!.created_by };
  }
}
