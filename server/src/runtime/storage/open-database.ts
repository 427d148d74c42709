// Opens the configured backend (PostgreSQL for a postgres:// URL, else the SQLite file) and
// brings its schema up to date before returning. Migrations are recorded in schema_migrations;
// on PostgreSQL a session advisory lock makes replicas that start together migrate one at a time.
import path from "node:path";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import type { Logger } from "../logger.js";
import { COLUMN_TYPES, type Migration } from "./migrations/migration.js";
import { MIGRATIONS } from "./migrations/index.js";
import { PostgresDb } from "./postgres-db.js";
import type { SqlDb } from "./sql-db.js";
import { SqliteDb } from "./sqlite-db.js";

export interface OpenDatabaseOptions {
  /** postgres:// (or postgresql://) URL; when absent SQLite is used. */
  url?: string;
  /** SQLite file (parent directories are created); default ./.trustplane/trustplane.db. ":memory:" for a throwaway. */
  sqlitePath?: string;
  /** PostgreSQL schema to create if missing and put on the search_path (tests use a fresh one each). */
  schema?: string;
  /** Migrations to apply (default: all of migrations/index.ts). */
  migrations?: readonly Migration[];
  /** Where applied and skipped migrations are reported; silent when absent. */
  logger?: Logger;
}

/** First key of the two-key advisory locks; the second is derived from the schema name. */
const MIGRATION_LOCK = 727_274_001;
const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/;

function conflict(message: string): TrustplaneError {
  return new TrustplaneError("FAILED_PRECONDITION", "MIGRATION_CONFLICT", message, "migrations");
}

/** Ids must be positive and strictly increasing: two areas picking the same id fail at once. */
export function checkMigrationList(migrations: readonly Migration[]): void {
  let last = 0;
  for (const m of migrations) {
    if (!Number.isSafeInteger(m.id) || m.id <= last) {
      throw conflict(`migration ${m.id} (${m.name}) must have a positive id greater than ${last}; give each new migration file the next unused id in migrations/index.ts`);
    }
    last = m.id;
  }
}

async function migrate(db: SqlDb, migrations: readonly Migration[], logger: Logger | undefined): Promise<void> {
  const t = COLUMN_TYPES[db.dialect];
  await db.run(`CREATE TABLE IF NOT EXISTS schema_migrations (id ${t.bigint} PRIMARY KEY, name ${t.text} NOT NULL, applied_at_ms ${t.bigint} NOT NULL)`);
  const applied = await db.all<{ id: number; name: string }>("SELECT id, name FROM schema_migrations ORDER BY id");
  const known = new Map(migrations.map((m) => [m.id, m]));
  const newest = migrations.length ? migrations[migrations.length - 1]!.id : 0;
  for (const a of applied) {
    const id = Number(a.id);
    const m = known.get(id);
    if (m && m.name !== a.name) {
      throw conflict(`the database has migration ${id} named ${JSON.stringify(a.name)} but this build calls it ${JSON.stringify(m.name)}; two migrations share an id`);
    }
    if (!m && id < newest) {
      throw conflict(`the database has migration ${id} (${a.name}) that this build does not know; it was made by a different build`);
    }
    // A newer id is from a newer build sharing this database (rolling upgrade): tolerated.
    if (!m) logger?.warn({ migration: id, name: a.name }, "database has a newer migration than this build; continuing");
  }
  const done = new Set(applied.map((a) => Number(a.id)));
  for (const m of migrations) {
    if (done.has(m.id)) continue;
    await db.transaction(async () => {
      // Re-check inside the transaction: another process may have applied it meanwhile.
      if (await db.get("SELECT id FROM schema_migrations WHERE id = ?", [m.id])) return;
      let statement = "";
      try {
        for (statement of m.statements(t, db.dialect)) await db.run(statement);
      } catch (e) {
        throw new TrustplaneError(
          "FAILED_PRECONDITION",
          "MIGRATION_FAILED",
          `migration ${m.id} (${m.name}) failed on ${db.dialect}: ${(e as Error).message} in: ${statement.replace(/\s+/g, " ").slice(0, 200)}`,
          "migrations",
        );
      }
      await db.run("INSERT INTO schema_migrations (id, name, applied_at_ms) VALUES (?, ?, ?)", [m.id, m.name, Date.now()]);
      logger?.info({ migration: m.id, name: m.name, dialect: db.dialect }, "applied migration");
    });
  }
}

async function openPostgres(url: string, opts: OpenDatabaseOptions, migrations: readonly Migration[]): Promise<PostgresDb> {
  if (opts.schema !== undefined && !SCHEMA_RE.test(opts.schema)) {
    throw new TrustplaneError("INVALID_ARGUMENT", "CONFIG_INVALID", `schema ${JSON.stringify(opts.schema)} must be a lowercase SQL identifier (a-z, 0-9, _)`, "schema");
  }
  const db = new PostgresDb(url, { schema: opts.schema, logger: opts.logger });
  try {
    await db.withClient(async (client) => {
      // Taken before CREATE SCHEMA: concurrent CREATE SCHEMA IF NOT EXISTS can still collide.
      await client.query("SELECT pg_advisory_lock($1::int, hashtext($2))", [MIGRATION_LOCK, opts.schema ?? ""]);
      try {
        if (opts.schema) await client.query(`CREATE SCHEMA IF NOT EXISTS ${opts.schema}`);
        await migrate(db, migrations, opts.logger);
      } finally {
        await client.query("SELECT pg_advisory_unlock($1::int, hashtext($2))", [MIGRATION_LOCK, opts.schema ?? ""]).catch(() => undefined);
      }
    });
  } catch (e) {
    await db.close().catch(() => undefined);
    if (e instanceof TrustplaneError) throw e;
    // Connection-level failures; the message from pg never contains the password.
    throw new TrustplaneError("UNAVAILABLE", "DATABASE_UNAVAILABLE", `cannot open the PostgreSQL database: ${(e as Error).message}; check --database-url and that the server is reachable`, "database_url");
  }
  return db;
}

export async function openDatabase(opts: OpenDatabaseOptions = {}): Promise<SqlDb> {
  const migrations = opts.migrations ?? MIGRATIONS;
  checkMigrationList(migrations);
  if (opts.url) {
    if (!/^postgres(ql)?:\/\//.test(opts.url)) {
      throw new TrustplaneError("INVALID_ARGUMENT", "CONFIG_INVALID", "the database URL must start with postgres:// (omit it to use the embedded SQLite file)", "database_url");
    }
    return openPostgres(opts.url, opts, migrations);
  }
  const file = opts.sqlitePath === ":memory:" ? ":memory:" : path.resolve(opts.sqlitePath ?? "./.trustplane/trustplane.db");
  const db = new SqliteDb(file);
  try {
    await migrate(db, migrations, opts.logger);
  } catch (e) {
    await db.close();
    throw e;
  }
  return db;
}
