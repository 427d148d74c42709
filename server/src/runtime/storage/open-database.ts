// Opens the configured backend and brings its schema up to date. Migrations are recorded in
// schema_migrations; on PostgreSQL an advisory lock makes replicas starting together safe.
import path from "node:path";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { COLUMN_TYPES, type Migration } from "./migrations/migration.js";
import { MIGRATIONS } from "./migrations/index.js";
import { PostgresDb } from "./postgres-db.js";
import type { SqlDb } from "./sql-db.js";
import { SqliteDb } from "./sqlite-db.js";

export interface OpenDatabaseOptions {
  /** postgres:// URL; when absent SQLite is used. */
  url?: string;
  /** SQLite file; default ./.trustplane/trustplane.db. */
  sqlitePath?: string;
  /** PostgreSQL schema to create and use (tests use a fresh one each). */
  schema?: string;
  /** Migrations to apply (default: all). */
  migrations?: readonly Migration[];
}

const MIGRATION_LOCK = 727_274_001;

async function pending(db: SqlDb, migrations: readonly Migration[]): Promise<Migration[]> {
  const applied = new Set((await db.all<{ id: number }>("SELECT id FROM schema_migrations")).map((r) => Number(r.id)));
  return migrations.filter((m) => !applied.has(m.id));
}

async function migrate(db: SqlDb, migrations: readonly Migration[]): Promise<void> {
  const t = COLUMN_TYPES[db.dialect];
  await db.run(`CREATE TABLE IF NOT EXISTS schema_migrations (id ${t.bigint} PRIMARY KEY, name ${t.text} NOT NULL, applied_at_ms ${t.bigint} NOT NULL)`);
  for (const m of await pending(db, migrations)) {
    await db.transaction(async () => {
      // Re-check inside the transaction: another replica may have applied it meanwhile.
      if (await db.get("SELECT id FROM schema_migrations WHERE id = ?", [m.id])) return;
      for (const statement of m.statements(t, db.dialect)) await db.run(statement);
      await db.run("INSERT INTO schema_migrations (id, name, applied_at_ms) VALUES (?, ?, ?)", [m.id, m.name, Date.now()]);
    });
  }
}

export async function openDatabase(opts: OpenDatabaseOptions = {}): Promise<SqlDb> {
  const migrations = opts.migrations ?? MIGRATIONS;
  if (opts.url) {
    if (opts.schema !== undefined && !/^[a-z_][a-z0-9_]{0,62}$/.test(opts.schema)) {
      throw new TrustplaneError("INVALID_ARGUMENT", "CONFIG_INVALID", `schema ${JSON.stringify(opts.schema)} must be a lowercase SQL identifier`, "schema");
    }
    const db = new PostgresDb(opts.url, opts.schema);
    try {
      await db.withClient(async (client) => {
        if (opts.schema) await client.query(`CREATE SCHEMA IF NOT EXISTS ${opts.schema}`);
        await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK]);
        try {
          await migrate(db, migrations);
        } finally {
          await client.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK]);
        }
      });
    } catch (e) {
      await db.close();
      throw new TrustplaneError("UNAVAILABLE", "DATABASE_UNAVAILABLE", `cannot open PostgreSQL database: ${(e as Error).message}`, "database_url");
    }
    return db;
  }
  const db = new SqliteDb(path.resolve(opts.sqlitePath ?? "./.trustplane/trustplane.db"));
  try {
    await migrate(db, migrations);
  } catch (e) {
    await db.close();
    throw e;
  }
  return db;
}
