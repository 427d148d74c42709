// LongTermTokenStore over the shared SqlDb (migration 002-token): hashes only, looked up by
// current or previous hash; a unique partial index keeps one live token per (account, scope
// set) across replicas, and the used-request table refuses replayed user create requests.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { isUniqueViolation, type SqlDb } from "../../runtime/storage/sql-db.js";
import { scopeKey, type LongTermTokenRecord, type LongTermTokenStore, type TokenHolder } from "../authority/long-term-tokens.js";

interface Row {
  accessor: string;
  service_account: string;
  scope_key: string;
  scopes_json: string;
  token_hash: string;
  previous_token_hash: string | null;
  previous_valid_until_ms: number | null;
  version: number;
  host_ids_json: string;
  holders_json: string;
  created_at_ms: number;
  issued_at_ms: number;
  expires_at_ms: number;
  revoked_at_ms: number | null;
  revoke_reason: string | null;
}

function fromRow(r: Row): LongTermTokenRecord {
  const rec: LongTermTokenRecord = {
    accessor: r.accessor,
    serviceAccount: r.service_account,
    scopes: JSON.parse(r.scopes_json) as string[],
    tokenHash: r.token_hash,
    version: Number(r.version),
    hostIds: JSON.parse(r.host_ids_json) as string[],
    holders: JSON.parse(r.holders_json) as TokenHolder[],
    createdAtMs: Number(r.created_at_ms),
    issuedAtMs: Number(r.issued_at_ms),
    expiresAtMs: Number(r.expires_at_ms),
  };
  if (r.previous_token_hash != null) rec.previousTokenHash = r.previous_token_hash;
  if (r.previous_valid_until_ms != null) rec.previousValidUntilMs = Number(r.previous_valid_until_ms);
  if (r.revoked_at_ms != null) rec.revokedAtMs = Number(r.revoked_at_ms);
  if (r.revoke_reason != null) rec.revokeReason = r.revoke_reason;
  return rec;
}

function values(r: LongTermTokenRecord): unknown[] {
  return [
    r.serviceAccount,
    scopeKey(r.scopes),
    JSON.stringify(r.scopes),
    r.tokenHash,
    r.previousTokenHash ?? null,
    r.previousValidUntilMs ?? null,
    r.version,
    JSON.stringify(r.hostIds),
    JSON.stringify(r.holders),
    r.createdAtMs,
    r.issuedAtMs,
    r.expiresAtMs,
    r.revokedAtMs ?? null,
    r.revokeReason ?? null,
  ];
}

export class SqlLongTermTokenStore implements LongTermTokenStore {
  constructor(private readonly db: SqlDb) {}

  async insert(record: LongTermTokenRecord) {
    try {
      await this.db.run(
        `INSERT INTO token_long_term (service_account, scope_key, scopes_json, token_hash, previous_token_hash, previous_valid_until_ms,
           version, host_ids_json, holders_json, created_at_ms, issued_at_ms, expires_at_ms, revoked_at_ms, revoke_reason, accessor)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        [...values(record), record.accessor],
      );
    } catch (e) {
      // Another replica issued the token for this pair first: the caller retries and joins it.
      if (isUniqueViolation(e)) throw new TrustplaneError("ABORTED", "LONG_TERM_TOKEN_RACE", "another replica issued this long-term token at the same time; retry");
      throw e;
    }
  }

  /**
   * Compare-and-set: writes only if the row still has what `expected` read (version, secret,
   * holders, bound hosts, revocation), so two replicas changing one token cannot lose each
   * other's change (an added holder, a rotation). A lost race is ABORTED LONG_TERM_TOKEN_CONFLICT;
   * LongTermTokens re-reads and retries.
   */
  async update(record: LongTermTokenRecord, expected: LongTermTokenRecord) {
    const { changes } = await this.db.run(
      `UPDATE token_long_term SET service_account = ?, scope_key = ?, scopes_json = ?, token_hash = ?, previous_token_hash = ?,
         previous_valid_until_ms = ?, version = ?, host_ids_json = ?, holders_json = ?, created_at_ms = ?, issued_at_ms = ?,
         expires_at_ms = ?, revoked_at_ms = ?, revoke_reason = ?
       WHERE accessor = ? AND version = ? AND token_hash = ? AND holders_json = ? AND host_ids_json = ? AND COALESCE(revoked_at_ms, -1) = ?`,
      [
        ...values(record),
        record.accessor,
        expected.version,
        expected.tokenHash,
        JSON.stringify(expected.holders),
        JSON.stringify(expected.hostIds),
        expected.revokedAtMs ?? -1,
      ],
    );
    if (changes === 0) {
      if (!(await this.findByAccessor(record.accessor))) throw new TrustplaneError("NOT_FOUND", "LONG_TERM_TOKEN_UNKNOWN", "no such long-term token");
      throw new TrustplaneError("ABORTED", "LONG_TERM_TOKEN_CONFLICT", `long-term token ${record.accessor} changed meanwhile; retry`);
    }
  }

  async findByHash(hash: string) {
    const r =
      (await this.db.get<Row>("SELECT * FROM token_long_term WHERE token_hash = ?", [hash])) ??
      (await this.db.get<Row>("SELECT * FROM token_long_term WHERE previous_token_hash = ?", [hash]));
    return r && fromRow(r);
  }

  async findByAccessor(accessor: string) {
    const r = await this.db.get<Row>("SELECT * FROM token_long_term WHERE accessor = ?", [accessor]);
    return r && fromRow(r);
  }

  async findActive(serviceAccount: string, key: string) {
    const r = await this.db.get<Row>("SELECT * FROM token_long_term WHERE service_account = ? AND scope_key = ? AND revoked_at_ms IS NULL", [serviceAccount, key]);
    return r && fromRow(r);
  }

  /** Every token, revoked ones included (operator listings). */
  async listAll() {
    return (await this.db.all<Row>("SELECT * FROM token_long_term")).map(fromRow);
  }

  async listActiveByAccount(serviceAccount: string) {
    return (await this.db.all<Row>("SELECT * FROM token_long_term WHERE service_account = ? AND revoked_at_ms IS NULL", [serviceAccount])).map(fromRow);
  }

  async listByHost(hostId: string) {
    // Host ids are JSON strings inside the array; LIKE narrows, the parse decides.
    const rows = await this.db.all<Row>("SELECT * FROM token_long_term WHERE host_ids_json LIKE ?", [`%${JSON.stringify(hostId).replace(/[%_]/g, "")}%`]);
    return rows.map(fromRow).filter((r) => r.hostIds.includes(hostId));
  }

  /**
   * Records that a user's signed create request was used for (account, VM); false when it
   * already was, or was used for another VM (a replay). The key is unique, so two replicas
   * cannot both accept the same use.
   */
  async markRequestUsed(use: { digest: string; serviceAccount: string; vmId: string; principal: string }, nowMs: number): Promise<boolean> {
    const other = await this.db.get<{ vm_id: string }>("SELECT vm_id FROM token_used_requests WHERE digest = ? AND vm_id <> ?", [use.digest, use.vmId]);
    if (other) return false;
    // ON CONFLICT rather than catching the violation: on PostgreSQL a failed INSERT would
    // abort the surrounding transaction.
    const { changes } = await this.db.run(
      "INSERT INTO token_used_requests (digest, service_account, vm_id, principal, used_at_ms) VALUES (?, ?, ?, ?, ?) ON CONFLICT (digest, service_account) DO NOTHING",
      [use.digest, use.serviceAccount, use.vmId, use.principal, nowMs],
    );
    return changes === 1;
  }
}
