// The storage backends every repository suite runs against: SQLite in a temp directory, and
// PostgreSQL in a fresh schema (dropped afterwards) when TRUSTPLANE_TEST_DATABASE_URL is set.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import type { OpenDatabaseOptions } from "../../server/src/runtime/storage/open-database.js";

export const PG_URL = process.env.TRUSTPLANE_TEST_DATABASE_URL;

export interface Backend {
  name: "sqlite" | "postgres";
  /** Options for a brand-new, empty database. */
  fresh(): Promise<OpenDatabaseOptions>;
  /** Drops everything fresh() made. */
  cleanup(): Promise<void>;
}

export function sqliteBackend(): Backend {
  const dirs: string[] = [];
  return {
    name: "sqlite",
    async fresh() {
      const dir = mkdtempSync(path.join(os.tmpdir(), "tp-sqlite-"));
      dirs.push(dir);
      return { sqlitePath: path.join(dir, "test.db") };
    },
    async cleanup() {
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    },
  };
}

export function postgresBackend(url: string): Backend {
  const schemas: string[] = [];
  return {
    name: "postgres",
    async fresh() {
      const schema = `tp_test_${randomBytes(6).toString("hex")}`;
      schemas.push(schema);
      return { url, schema };
    },
    async cleanup() {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        for (const s of schemas) await client.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
      } finally {
        await client.end();
      }
    },
  };
}

/** Both backends, or SQLite alone with a visible note when no PostgreSQL URL is given. */
export function backends(): Backend[] {
  if (!PG_URL) {
    console.warn("TRUSTPLANE_TEST_DATABASE_URL is not set: PostgreSQL variants are skipped (CI sets it)");
    return [sqliteBackend()];
  }
  return [sqliteBackend(), postgresBackend(PG_URL)];
}

/** Where a `trustplane dev` under test keeps its data: SQLite, or PostgreSQL in a schema of its own. */
export interface DevVariant {
  name: "sqlite" | "postgres";
  schema?: string;
  databaseUrl?: string;
}

/** SQLite, plus PostgreSQL in a fresh schema named `<prefix>_<random>` when the URL is set. */
export function devVariants(prefix: string): DevVariant[] {
  const variants: DevVariant[] = [{ name: "sqlite" }];
  if (PG_URL) {
    const schema = `${prefix}_${randomBytes(5).toString("hex")}`;
    const sep = PG_URL.includes("?") ? "&" : "?";
    variants.push({ name: "postgres", schema, databaseUrl: `${PG_URL}${sep}options=${encodeURIComponent(`-c search_path=${schema}`)}` });
  }
  return variants;
}

async function onPostgres(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/** Creates the variant's schema; returns the config overrides for startDevEnv. */
export async function prepareDevVariant(v: DevVariant): Promise<{ databaseUrl?: string }> {
  if (v.schema) await onPostgres(`CREATE SCHEMA ${v.schema}`);
  return v.databaseUrl ? { databaseUrl: v.databaseUrl } : {};
}

/** Drops what prepareDevVariant made. */
export async function dropDevVariant(v: DevVariant): Promise<void> {
  if (v.schema) await onPostgres(`DROP SCHEMA IF EXISTS ${v.schema} CASCADE`);
}
