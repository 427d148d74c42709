// The storage facade every server process opens once: one SqlDb (SQLite or PostgreSQL) and
// the foundation's repositories over it. Areas add their own repositories on `db`.
import { AuditLog } from "./audit-log.js";
import { HostRepository } from "./host-repository.js";
import { IdempotencyRepository } from "./idempotency-repository.js";
import { JoinTokenRepository } from "./join-token-repository.js";
import { KeyRepository } from "./key-repository.js";
import { NonceRepository } from "./nonce-repository.js";
import { openDatabase, type OpenDatabaseOptions } from "./open-database.js";
import { PrincipalRepository } from "./principal-repository.js";
import type { SqlDb } from "./sql-db.js";

export class Storage {
  readonly principals: PrincipalRepository;
  readonly keys: KeyRepository;
  readonly hosts: HostRepository;
  readonly joinTokens: JoinTokenRepository;
  readonly idempotency: IdempotencyRepository;
  readonly nonces: NonceRepository;
  readonly audit: AuditLog;
  private closed = false;

  private constructor(readonly db: SqlDb) {
    this.principals = new PrincipalRepository(db);
    this.keys = new KeyRepository(db);
    this.hosts = new HostRepository(db);
    this.joinTokens = new JoinTokenRepository(db);
    this.idempotency = new IdempotencyRepository(db);
    this.nonces = new NonceRepository(db);
    this.audit = new AuditLog(db);
  }

  static async open(opts: OpenDatabaseOptions): Promise<Storage> {
    return new Storage(await openDatabase(opts));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.db.close();
  }
}
