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
}

export const COLUMN_TYPES: Record<Dialect, ColumnTypes> = {
  sqlite: { bytes: "BLOB", bigint: "INTEGER", text: "TEXT", flag: "INTEGER" },
  postgres: { bytes: "BYTEA", bigint: "BIGINT", text: "TEXT", flag: "SMALLINT" },
};

export interface Migration {
  /** Strictly increasing; never renumber or edit a migration that has shipped. */
  id: number;
  name: string;
  statements(t: ColumnTypes, dialect: Dialect): string[];
}
