// SqlDb over better-sqlite3: WAL journal, foreign keys. Writers are serialised by an async
// mutex; statements issued inside a transaction (same async context) skip it. Another
// connection's write lock (a second process, the CLI) is waited for asynchronously: a
// synchronous busy-wait would freeze this event loop while a transaction holds the lock.
import Database from "better-sqlite3";
import { AsyncLocalStorage } from "node:async_hooks";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { AsyncMutex } from "./async-mutex.js";
import type { SqlDb } from "./sql-db.js";

const BUSY_WAIT_MS = 10_000;

function isBusy(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === "SQLITE_BUSY" || code === "SQLITE_LOCKED";
}

/** Retries a statement that met another connection's lock, yielding to the event loop. */
async function busyRetry<T>(fn: () => T): Promise<T> {
  const deadline = Date.now() + BUSY_WAIT_MS;
  for (let delay = 2; ; delay = Math.min(delay * 2, 100)) {
    try {
      return fn();
    } catch (e) {
      if (!isBusy(e) || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

function bind(params: unknown[] | undefined): unknown[] {
  // better-sqlite3 binds booleans poorly and refuses undefined; normalise at the edge.
  return (params ?? []).map((p) => (p === undefined ? null : typeof p === "boolean" ? (p ? 1 : 0) : p));
}

export class SqliteDb implements SqlDb {
  readonly dialect = "sqlite" as const;
  private readonly db: Database.Database;
  private readonly mutex = new AsyncMutex();
  private readonly inTx = new AsyncLocalStorage<boolean>();
  private readonly statements = new Map<string, Database.Statement>();

  constructor(file: string) {
    if (file !== ":memory:") mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    this.db = new Database(file);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("busy_timeout = 0");
    this.db.pragma("foreign_keys = ON");
    this.db.pragma("synchronous = NORMAL");
  }

  private prepare(sql: string): Database.Statement {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      if (this.statements.size > 500) this.statements.clear();
      this.statements.set(sql, st);
    }
    return st;
  }

  async all<T>(sql: string, params?: unknown[]): Promise<T[]> {
    return this.prepare(sql).all(...bind(params)) as T[];
  }

  async get<T>(sql: string, params?: unknown[]): Promise<T | undefined> {
    return this.prepare(sql).get(...bind(params)) as T | undefined;
  }

  async run(sql: string, params?: unknown[]): Promise<{ changes: number }> {
    if (this.inTx.getStore()) return { changes: this.prepare(sql).run(...bind(params)).changes };
    const release = await this.mutex.lock();
    try {
      return { changes: (await busyRetry(() => this.prepare(sql).run(...bind(params)))).changes };
    } finally {
      release();
    }
  }

  /** Runs DDL (several statements) outside the statement cache. */
  exec(sql: string): void {
    this.db.exec(sql);
  }

  async transaction<T>(fn: (tx: SqlDb) => Promise<T>): Promise<T> {
    if (this.inTx.getStore()) return fn(this);
    const release = await this.mutex.lock();
    try {
      await busyRetry(() => this.db.exec("BEGIN IMMEDIATE"));
      try {
        const result = await this.inTx.run(true, () => fn(this));
        this.db.exec("COMMIT");
        return result;
      } catch (e) {
        this.db.exec("ROLLBACK");
        throw e;
      }
    } finally {
      release();
    }
  }

  async close(): Promise<void> {
    const release = await this.mutex.lock();
    try {
      if (this.db.open) this.db.close();
    } finally {
      release();
    }
  }
}
