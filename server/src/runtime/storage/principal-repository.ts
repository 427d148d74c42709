// Principals: users, hosts and services, each with roles and a method policy.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { isUniqueViolation, type SqlDb } from "./sql-db.js";

export interface PolicyRecord {
  rules: { methods: string[]; effect: "allow" | "deny" }[];
}

export interface PrincipalRecord {
  name: string;
  kind: "user" | "host" | "service";
  roles: string[];
  policy: PolicyRecord;
  createdAtMs: number;
}

interface Row {
  name: string;
  kind: string;
  roles_json: string;
  policy_json: string;
  created_at_ms: number;
}

function fromRow(r: Row): PrincipalRecord {
  return { name: r.name, kind: r.kind as PrincipalRecord["kind"], roles: JSON.parse(r.roles_json), policy: JSON.parse(r.policy_json), createdAtMs: Number(r.created_at_ms) };
}

export class PrincipalRepository {
  constructor(private readonly db: SqlDb) {}

  async create(p: PrincipalRecord): Promise<void> {
    try {
      await this.db.run("INSERT INTO principals (name, kind, roles_json, policy_json, created_at_ms) VALUES (?, ?, ?, ?, ?)", [
        p.name,
        p.kind,
        JSON.stringify(p.roles),
        JSON.stringify(p.policy),
        p.createdAtMs,
      ]);
    } catch (e) {
      if (isUniqueViolation(e)) throw new TrustplaneError("ALREADY_EXISTS", "PRINCIPAL_EXISTS", `principal ${JSON.stringify(p.name)} already exists`, "name");
      throw e;
    }
  }

  async get(name: string): Promise<PrincipalRecord | undefined> {
    const r = await this.db.get<Row>("SELECT * FROM principals WHERE name = ?", [name]);
    return r && fromRow(r);
  }

  /** Keyset-paged by name; the page token is the last name of the previous page. */
  async list(opts: { pageSize: number; pageToken?: string }): Promise<{ items: PrincipalRecord[]; nextPageToken?: string }> {
    // 0, negative or missing means "the default", as gRPC list requests send 0 when unset.
    const size = Number.isSafeInteger(opts.pageSize) && opts.pageSize > 0 ? Math.min(opts.pageSize, 1000) : 100;
    const rows = await this.db.all<Row>("SELECT * FROM principals WHERE name > ? ORDER BY name LIMIT ?", [opts.pageToken ?? "", size + 1]);
    const items = rows.slice(0, size).map(fromRow);
    return { items, nextPageToken: rows.length > size ? items[items.length - 1]!.name : undefined };
  }

  async setPolicy(name: string, policy: PolicyRecord): Promise<void> {
    const { changes } = await this.db.run("UPDATE principals SET policy_json = ? WHERE name = ?", [JSON.stringify(policy), name]);
    if (changes === 0) throw new TrustplaneError("NOT_FOUND", "PRINCIPAL_NOT_FOUND", `principal ${JSON.stringify(name)} does not exist`, "principal");
  }
}
