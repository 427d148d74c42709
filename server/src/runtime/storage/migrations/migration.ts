// A versioned migration shared by both backends: the same statements, with column types
// taken from a small per-dialect map so one text serves SQLite and PostgreSQL.
import type { Dialect } from "../sql-db.js";

export interface ColumnTypes {
  /** Raw bytes: BLOB / BYTEA. */
  bytes: string;
  /** 64-bit integers (timestamps in ms, counters): INTEGER / BIGINT. */
  bigint: string;
  text: string;
  /** 0/1 flags stored as integers on both, so queries compare the same way. */
  flag: string;
  /** Floating point: REAL / DOUBLE PRECISION. */
  double: string;
  /** A whole column definition: an increasing 64-bit row id assigned by the database. */
  autoId: string;
}

export const COLUMN_TYPES: Record<Dialect, ColumnTypes> = {
  sqlite: { bytes: "BLOB", bigint: "INTEGER", text: "TEXT", flag: "INTEGER", double: "REAL", autoId: "INTEGER PRIMARY KEY AUTOINCREMENT" },
  postgres: { bytes: "BYTEA", bigint: "BIGINT", text: "TEXT", flag: "SMALLINT", double: "DOUBLE PRECISION", autoId: "BIGSERIAL PRIMARY KEY" },
};

/**
 * One schema step. Its statements run in one transaction on either backend (both have
 * transactional DDL) together with its schema_migrations row, so it applies fully or not at all.
 * Write portable SQL (CREATE TABLE/INDEX, ON CONFLICT, partial indexes work on both); branch on
 * `dialect` only where the two truly differ.
 */
export interface Migration {
  /** Strictly increasing; never renumber or edit a migration that has shipped. */
  id: number;
  /** Recorded with the id; a database whose id carries another name is refused (id clash). */
  name: string;
  statements(t: ColumnTypes, dialect: Dialect): string[];
}
