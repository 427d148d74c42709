// The one SQL interface every repository uses, over SQLite (embedded default) or PostgreSQL
// (replicas). SQL is written once with `?` placeholders; the PostgreSQL backend rewrites them.
// Queries inside transaction() run on the transaction's connection wherever they are issued
// (AsyncLocalStorage), so repositories compose into one atomic unit without passing handles.

export type Dialect = "sqlite" | "postgres";

export interface SqlDb {
  readonly dialect: Dialect;
  all<T>(sql: string, params?: unknown[]): Promise<T[]>;
  get<T>(sql: string, params?: unknown[]): Promise<T | undefined>;
  run(sql: string, params?: unknown[]): Promise<{ changes: number }>;
  /** Runs fn atomically; a nested call joins the outer transaction. Throwing rolls back. */
  transaction<T>(fn: (tx: SqlDb) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** Rewrites `?` placeholders to `$1..$n`, leaving `?` inside string literals alone. */
export function toPostgresPlaceholders(sql: string): string {
  let out = "";
  let n = 0;
  let quote: string | undefined;
  for (const ch of sql) {
    if (quote) {
      if (ch === quote) quote = undefined;
      out += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      out += ch;
    } else if (ch === "?") {
      out += `$${++n}`;
    } else {
      out += ch;
    }
  }
  return out;
}

/** True for a unique/primary-key violation on either backend. */
export function isUniqueViolation(e: unknown): boolean {
  const err = e as { code?: string; message?: string };
  return err?.code === "23505" || err?.code === "SQLITE_CONSTRAINT_PRIMARYKEY" || err?.code === "SQLITE_CONSTRAINT_UNIQUE";
}
