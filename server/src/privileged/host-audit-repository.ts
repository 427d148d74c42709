// The server's record of forwarded host audit (seed 002): per host, each seq with its hash and
// the server audit record it became. Used inside one transaction with the audit append.
import type { SqlDb } from "../runtime/storage/sql-db.js";

export class HostAuditRepository {
  constructor(private readonly db: SqlDb) {}

  async head(hostId: string): Promise<{ seq: number; hash: Buffer } | undefined> {
    const r = await this.db.get<{ seq: number; hash: Buffer }>("SELECT seq, hash FROM privileged_host_audit WHERE host_id = ? ORDER BY seq DESC LIMIT 1", [hostId]);
    return r && { seq: Number(r.seq), hash: Buffer.from(r.hash) };
  }

  async hashOf(hostId: string, seq: number): Promise<Buffer | undefined> {
    const r = await this.db.get<{ hash: Buffer }>("SELECT hash FROM privileged_host_audit WHERE host_id = ? AND seq = ?", [hostId, seq]);
    return r && Buffer.from(r.hash);
  }

  async add(hostId: string, seq: number, hash: Uint8Array, auditSeq: number): Promise<void> {
    await this.db.run("INSERT INTO privileged_host_audit (host_id, seq, hash, audit_seq) VALUES (?, ?, ?, ?)", [hostId, seq, Buffer.from(hash), auditSeq]);
  }
}
