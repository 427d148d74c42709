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

/**
 * Rewrites `?` placeholders to `$1..$n`. A `?` inside a string literal ('…', E'…\'…'), a quoted
 * identifier ("…"), a dollar-quoted string ($tag$…$tag$) or a comment (-- …, /* … *\/) is
 * left alone. Every other `?` is a placeholder: PostgreSQL's jsonb `?` operators are not
 * usable through this interface (use jsonb_exists() instead).
 */
export function toPostgresPlaceholders(sql: string): string {
  let out = "";
  let n = 0;
  let i = 0;
  const copyUntil = (end: number) => {
    out += sql.slice(i, end);
    i = end;
  };
  while (i < sql.length) {
    const ch = sql[i]!;
    if (ch === "?") {
      out += `$${++n}`;
      i++;
    } else if (ch === "'") {
      // E'…' strings honour backslash escapes; standard strings only double the quote.
      const escapes = i > 0 && /[eE]/.test(sql[i - 1]!) && (i < 2 || !/[A-Za-z0-9_$]/.test(sql[i - 2]!));
      let j = i + 1;
      while (j < sql.length && sql[j] !== "'") j += escapes && sql[j] === "\\" ? 2 : 1;
      copyUntil(Math.min(j + 1, sql.length));
    } else if (ch === '"') {
      const j = sql.indexOf('"', i + 1);
      copyUntil(j < 0 ? sql.length : j + 1);
    } else if (ch === "-" && sql[i + 1] === "-") {
      const j = sql.indexOf("\n", i);
      copyUntil(j < 0 ? sql.length : j);
    } else if (ch === "/" && sql[i + 1] === "*") {
      const j = sql.indexOf("*/", i + 2);
      copyUntil(j < 0 ? sql.length : j + 2);
    } else if (ch === "$" && (i === 0 || !/[A-Za-z0-9_]/.test(sql[i - 1]!))) {
      const tag = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(sql.slice(i));
      if (tag) {
        const j = sql.indexOf(tag[0], i + tag[0].length);
        copyUntil(j < 0 ? sql.length : j + tag[0].length);
      } else {
        out += ch;
        i++;
      }
    } else {
      out += ch;
      i++;
    }
  }
  return out;
}

/** True for a unique/primary-key violation on either backend (pg 23505, SQLite UNIQUE/PRIMARYKEY). */
export function isUniqueViolation(e: unknown): boolean {
  const code = (e as { code?: unknown } | null | undefined)?.code;
  return code === "23505" || code === "SQLITE_CONSTRAINT_PRIMARYKEY" || code === "SQLITE_CONSTRAINT_UNIQUE";
}

/** True when a row refers to a missing parent (pg 23503, SQLite FOREIGNKEY). */
export function isForeignKeyViolation(e: unknown): boolean {
  const code = (e as { code?: unknown } | null | undefined)?.code;
  return code === "23503" || code === "SQLITE_CONSTRAINT_FOREIGNKEY";
}
