// ServiceAccountStore over the shared SqlDb (SQLite or PostgreSQL): service accounts with
// their act-as ACL and allowed scopes, and the services that own scopes and audiences (migration 002-token).
import type { SqlDb } from "../../runtime/storage/sql-db.js";
import type { ServiceAccount, ServiceAccountStore, ServiceDefinition } from "../authority/service-accounts.js";

interface AccountRow {
  email: string;
  display_name: string;
  actors_json: string;
  allowed_scopes_json: string;
  created_at_ms: number;
}

interface ServiceRow {
  name: string;
  audience: string;
  scopes_json: string;
}

const account = (r: AccountRow): ServiceAccount => ({
  email: r.email,
  displayName: r.display_name,
  actors: JSON.parse(r.actors_json) as string[],
  allowedScopes: JSON.parse(r.allowed_scopes_json ?? "[]") as string[],
  createdAtMs: Number(r.created_at_ms),
});

const service = (r: ServiceRow): ServiceDefinition => ({ name: r.name, audience: r.audience, scopes: JSON.parse(r.scopes_json) as string[] });

export class SqlServiceAccountStore implements ServiceAccountStore {
  constructor(private readonly db: SqlDb) {}

  async getAccount(email: string) {
    const r = await this.db.get<AccountRow>("SELECT * FROM token_service_accounts WHERE email = ?", [email]);
    return r && account(r);
  }

  async putAccount(a: ServiceAccount) {
    await this.db.run(
      `INSERT INTO token_service_accounts (email, display_name, actors_json, allowed_scopes_json, created_at_ms) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (email) DO UPDATE SET display_name = excluded.display_name, actors_json = excluded.actors_json, allowed_scopes_json = excluded.allowed_scopes_json`,
      [a.email, a.displayName, JSON.stringify(a.actors), JSON.stringify(a.allowedScopes), a.createdAtMs],
    );
  }

  async deleteAccount(email: string) {
    return (await this.db.run("DELETE FROM token_service_accounts WHERE email = ?", [email])).changes > 0;
  }

  async listAccounts() {
    return (await this.db.all<AccountRow>("SELECT * FROM token_service_accounts ORDER BY email")).map(account);
  }

  async getService(name: string) {
    const r = await this.db.get<ServiceRow>("SELECT * FROM token_services WHERE name = ?", [name]);
    return r && service(r);
  }

  async putService(s: ServiceDefinition) {
    await this.db.run(
      `INSERT INTO token_services (name, audience, scopes_json) VALUES (?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET audience = excluded.audience, scopes_json = excluded.scopes_json`,
      [s.name, s.audience, JSON.stringify(s.scopes)],
    );
  }

  async listServices() {
    return (await this.db.all<ServiceRow>("SELECT * FROM token_services ORDER BY name")).map(service);
  }
}
