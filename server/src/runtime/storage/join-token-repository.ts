// One-time host join tokens, stored only as SHA-256 hashes. Redeeming is a single conditional
// UPDATE, so two agents racing with the same token cannot both win.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { isUniqueViolation, type SqlDb } from "./sql-db.js";

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
    try {
      await this.db.run("INSERT INTO join_tokens (token_hash, host_id, created_by, expires_at_ms) VALUES (?, ?, ?, ?)", [t.tokenHash, t.hostId, t.createdBy, t.expiresAtMs]);
    } catch (e) {
      if (isUniqueViolation(e)) throw new TrustplaneError("ALREADY_EXISTS", "JOIN_TOKEN_EXISTS", "a join token with this hash already exists; mint a new random token", "token_hash");
      throw e;
    }
  }

  /**
   * Marks the token used and returns what it was minted for. The conditional UPDATE is the
   * single-use check: under concurrency exactly one caller changes the row.
   */
  async redeem(tokenHash: string, nowMs: number): Promise<{ hostId: string; createdBy: string }> {
    return this.db.transaction(async () => {
      const { changes } = await this.db.run("UPDATE join_tokens SET used_at_ms = ? WHERE token_hash = ? AND used_at_ms IS NULL AND expires_at_ms > ?", [nowMs, tokenHash, nowMs]);
      if (changes !== 1) throw invalid();
      const row = await this.db.get<{ host_id: string; created_by: string }>("SELECT host_id, created_by FROM join_tokens WHERE token_hash = ?", [tokenHash]);
      return { hostId: row!.host_id, createdBy: row!.created_by };
    });
  }

  /** Deletes tokens that expired before nowMs (used or not); returns how many. */
  async purgeExpired(nowMs: number): Promise<number> {
    return (await this.db.run("DELETE FROM join_tokens WHERE expires_at_ms <= ?", [nowMs])).changes;
  }
}
