// Hosted-storage object table (seed 003): (tenant, name) → SHA-256 digest and size of the
// envelope ciphertext in the blob store. Several names may share one content-addressed blob.
import { isUniqueViolation, type SqlDb } from "../runtime/storage/sql-db.js";

export interface ObjectRecord {
  tenant: string;
  name: string;
  digest: string;
  size: number;
  createdBy: string;
  createdAtMs: number;
}

interface Row {
  tenant: string;
  name: string;
  digest: string;
  size: number | string;
  created_by: string;
  created_at_ms: number | string;
}

function fromRow(r: Row): ObjectRecord {
  return { tenant: r.tenant, name: r.name, digest: r.digest, size: Number(r.size), createdBy: r.created_by, createdAtMs: Number(r.created_at_ms) };
}

export class ObjectRepository {
  constructor(private readonly db: SqlDb) {}

  async get(tenant: string, name: string): Promise<ObjectRecord | undefined> {
    const r = await this.db.get<Row>("SELECT * FROM job_objects WHERE tenant = ? AND name = ?", [tenant, name]);
    return r && fromRow(r);
  }

  /** Inserts a new name; false when the name exists (names are never silently replaced). */
  async insert(o: ObjectRecord): Promise<boolean> {
    try {
      await this.db.run("INSERT INTO job_objects (tenant, name, digest, size, created_by, created_at_ms) VALUES (?, ?, ?, ?, ?, ?)", [o.tenant, o.name, o.digest, o.size, o.createdBy, o.createdAtMs]);
      return true;
    } catch (e) {
      if (isUniqueViolation(e)) return false;
      throw e;
    }
  }

  /** Keyset-paged by name within a tenant; the page token is the last name returned. */
  async list(tenant: string, prefix: string, pageSize: number, pageToken = ""): Promise<{ items: ObjectRecord[]; nextPageToken?: string }> {
    const size = Math.max(1, Math.min(pageSize, 1000));
    const rows = await this.db.all<Row>("SELECT * FROM job_objects WHERE tenant = ? AND name > ? ORDER BY name LIMIT ?", [tenant, pageToken, size * 4 + 1]);
    const matching = rows.filter((r) => r.name.startsWith(prefix)).map(fromRow);
    const items = matching.slice(0, size);
    const more = matching.length > size || rows.length === size * 4 + 1;
    return { items, nextPageToken: more && items.length > 0 ? items[items.length - 1]!.name : undefined };
  }

  async delete(tenant: string, name: string): Promise<ObjectRecord | undefined> {
    return this.db.transaction(async (tx) => {
      const r = await tx.get<Row>("SELECT * FROM job_objects WHERE tenant = ? AND name = ?", [tenant, name]);
      if (!r) return undefined;
      await tx.run("DELETE FROM job_objects WHERE tenant = ? AND name = ?", [tenant, name]);
      return fromRow(r);
    });
  }

  /** Whether any name still refers to this blob (so deleting a name may delete the blob). */
  async referenced(digest: string): Promise<boolean> {
    return (await this.db.get("SELECT 1 AS x FROM job_objects WHERE digest = ? LIMIT 1", [digest])) !== undefined;
  }
}
