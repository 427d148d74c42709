// Hosts that joined: their signing and sealing keys, address and labels.
import type { SqlDb } from "./sql-db.js";

export interface HostRecord {
  hostId: string;
  signingKeyId: string;
  signingJwk: string;
  sealingJwk: string;
  address: string;
  labels: Record<string, string>;
  joinedAtMs: number;
  lastSeenMs: number;
}

interface Row {
  host_id: string;
  signing_key_id: string;
  signing_jwk: string;
  sealing_jwk: string;
  address: string;
  labels_json: string;
  joined_at_ms: number;
  last_seen_ms: number;
}

const fromRow = (r: Row): HostRecord => ({
  hostId: r.host_id,
  signingKeyId: r.signing_key_id,
  signingJwk: r.signing_jwk,
  sealingJwk: r.sealing_jwk,
  address: r.address,
  labels: JSON.parse(r.labels_json),
  joinedAtMs: Number(r.joined_at_ms),
  lastSeenMs: Number(r.last_seen_ms),
});

export class HostRepository {
  constructor(private readonly db: SqlDb) {}

  async upsert(h: HostRecord): Promise<void> {
    await this.db.run(
      `INSERT INTO hosts (host_id, signing_key_id, signing_jwk, sealing_jwk, address, labels_json, joined_at_ms, last_seen_ms)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (host_id) DO UPDATE SET signing_key_id = excluded.signing_key_id, signing_jwk = excluded.signing_jwk,
         sealing_jwk = excluded.sealing_jwk, address = excluded.address, labels_json = excluded.labels_json,
         joined_at_ms = excluded.joined_at_ms, last_seen_ms = excluded.last_seen_ms`,
      [h.hostId, h.signingKeyId, h.signingJwk, h.sealingJwk, h.address, JSON.stringify(h.labels), h.joinedAtMs, h.lastSeenMs],
    );
  }

  async get(hostId: string): Promise<HostRecord | undefined> {
    const r = await this.db.get<Row>("SELECT * FROM hosts WHERE host_id = ?", [hostId]);
    return r && fromRow(r);
  }

  async list(): Promise<HostRecord[]> {
    return (await this.db.all<Row>("SELECT * FROM hosts ORDER BY host_id")).map(fromRow);
  }

  async touch(hostId: string, lastSeenMs: number): Promise<void> {
    await this.db.run("UPDATE hosts SET last_seen_ms = ? WHERE host_id = ? AND last_seen_ms < ?", [lastSeenMs, hostId, lastSeenMs]);
  }
}
