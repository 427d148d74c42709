// Registered call-signing keys by RFC 7638 thumbprint. Public JWKs for asymmetric keys;
// HMAC keys are shared secrets and are stored so the server can verify with them.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { isForeignKeyViolation, isUniqueViolation, type SqlDb } from "./sql-db.js";

export interface KeyRecord {
  keyId: string;
  principal: string;
  algorithm: string;
  /** JWK JSON. */
  jwk: string;
  createdAtMs: number;
  revokedAtMs?: number | null;
}

interface Row {
  key_id: string;
  principal: string;
  algorithm: string;
  jwk_json: string;
  created_at_ms: number;
  revoked_at_ms: number | null;
}

const fromRow = (r: Row): KeyRecord => ({
  keyId: r.key_id,
  principal: r.principal,
  algorithm: r.algorithm,
  jwk: r.jwk_json,
  createdAtMs: Number(r.created_at_ms),
  revokedAtMs: r.revoked_at_ms == null ? null : Number(r.revoked_at_ms),
});

export class KeyRepository {
  constructor(private readonly db: SqlDb) {}

  async add(k: Omit<KeyRecord, "revokedAtMs">): Promise<void> {
    try {
      await this.db.run("INSERT INTO keys (key_id, principal, algorithm, jwk_json, created_at_ms) VALUES (?, ?, ?, ?, ?)", [k.keyId, k.principal, k.algorithm, k.jwk, k.createdAtMs]);
    } catch (e) {
      if (isUniqueViolation(e)) throw new TrustplaneError("ALREADY_EXISTS", "KEY_EXISTS", `key ${k.keyId} is already registered`, "jwk");
      if (isForeignKeyViolation(e)) throw new TrustplaneError("NOT_FOUND", "PRINCIPAL_NOT_FOUND", `principal ${JSON.stringify(k.principal)} does not exist; create it before adding keys`, "principal");
      throw e;
    }
  }

  async get(keyId: string): Promise<KeyRecord | undefined> {
    const r = await this.db.get<Row>("SELECT * FROM keys WHERE key_id = ?", [keyId]);
    return r && fromRow(r);
  }

  async listFor(principal: string): Promise<KeyRecord[]> {
    return (await this.db.all<Row>("SELECT * FROM keys WHERE principal = ? ORDER BY created_at_ms, key_id", [principal])).map(fromRow);
  }

  /** Revokes once; revoking again keeps the first time. True when this call revoked it. */
  async revoke(keyId: string, atMs: number): Promise<boolean> {
    return (await this.db.run("UPDATE keys SET revoked_at_ms = ? WHERE key_id = ? AND revoked_at_ms IS NULL", [atMs, keyId])).changes === 1;
  }
}
