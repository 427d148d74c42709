// SqlDb over better-sqlite3 (the embedded default): WAL journal, foreign keys, owner-only file.
// Two connections: writes and transactions run on the writer, serialised by an async mutex
// (better-sqlite3 is synchronous, so an async transaction body must not interleave with
// another writer); reads outside a transaction run on a separate reader connection, so they
// see only committed data — never the uncommitted rows of a transaction that is awaiting
// something on the writer — and never wait for it. Another process's write lock (the CLI)
// is waited for asynchronously: a blocking busy_timeout would freeze this event loop.
import Database from "better-sqlite3";
import { AsyncLocalStorage } from "node:async_hooks";
import { closeSync, mkdirSync, openSync } from "node:fs";
import path from "node:path";
import { AsyncMutex } from "./async-mutex.js";
import type { SqlDb } from "./sql-db.js";

const BUSY_WAIT_MS = 10_000;
const STATEMENT_CACHE = 500;

function isBusy(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === "SQLITE_BUSY" || code === "SQLITE_LOCKED" || code === "SQLITE_BUSY_SNAPSHOT" || code === "SQLITE_BUSY_RECOVERY";
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
  // better-sqlite3 refuses undefined and booleans, and binds only Buffers as BLOBs.
  return (params ?? []).map((p) => {
    if (p === undefined) return null;
    if (typeof p === "boolean") return p ? 1 : 0;
    if (p instanceof Uint8Array && !Buffer.isBuffer(p)) return Buffer.from(p.buffer, p.byteOffset, p.byteLength);
    return p;
  });
}

/** Prepared statements per connection, bounded (SQL text is code, but areas may build it). */
class StatementCache {
  private readonly statements = new Map<string, Database.Statement>();
  constructor(private readonly db: Database.Database) {}

  get(sql: string): Database.Statement {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      if (this.statements.size >= STATEMENT_CACHE) this.statements.clear();
      this.statements.set(sql, st);
    }
    return st;
  }
}

function openConnection(file: string, readonly: boolean): Database.Database {
  const db = new Database(file, { readonly });
  // Lock waits are handled by busyRetry without blocking the event loop.
  db.pragma("busy_timeout = 0");
  if (!readonly) {
    db.pragma("journal_mode = WAL");
    db.pragma("foreign_keys = ON");
    // WAL + NORMAL: a commit survives a process crash; only an OS crash may lose the last ones.
    db.pragma("synchronous = NORMAL");
  }
  return db;
}

export class SqliteDb implements SqlDb {
  readonly dialect = "sqlite" as const;
  private readonly writer: Database.Database;
  /** Undefined for ":memory:", whose connections cannot share one database. */
  private readonly reader: Database.Database | undefined;
  private readonly writerStatements: StatementCache;
  private readonly readerStatements: StatementCache | undefined;
  private readonly mutex = new AsyncMutex();
  // The transaction an async context belongs to. Work spawned inside one (a timer, a
  // fire-and-forget promise) inherits the context but may run after it ended: `open` turns
  // false at the end, and such work then takes the writer lock like anyone else.
  private readonly txContext = new AsyncLocalStorage<{ open: boolean }>();

  constructor(readonly file: string) {
    if (file !== ":memory:") {
      mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      // Create the file owner-only before SQLite does (it would use the umask); the -wal and
      // -shm files take the database file's mode. It holds HMAC keys and sealed key material.
      closeSync(openSync(file, "a", 0o600));
    }
    this.writer = openConnection(file, false);
    this.writerStatements = new StatementCache(this.writer);
    if (file !== ":memory:") {
      this.reader = openConnection(file, true);
      this.readerStatements = new StatementCache(this.reader);
    }
  }

  private inTx(): boolean {
    return this.txContext.getStore()?.open === true;
  }

  /** Runs a statement with the writer lock held (or inside the current transaction). */
  private async write<T>(fn: (st: StatementCache) => T): Promise<T> {
    if (this.inTx()) return fn(this.writerStatements);
    const release = await this.mutex.lock();
    try {
      return await busyRetry(() => fn(this.writerStatements));
    } finally {
      release();
    }
  }

  /** Reads committed data: on the reader when it is a pure read, else as a write. */
  private async read<T>(sql: string, fn: (st: Database.Statement) => T): Promise<T> {
    if (this.inTx()) return fn(this.writerStatements.get(sql));
    if (this.readerStatements) {
      const st = this.readerStatements.get(sql);
      // INSERT … RETURNING and friends come through all()/get() too: they must write.
      if (st.readonly) return busyRetry(() => fn(st));
    }
    return this.write((c) => fn(c.get(sql)));
  }

  async all<T>(sql: string, params?: unknown[]): Promise<T[]> {
    return this.read(sql, (st) => st.all(...bind(params)) as T[]);
  }

  async get<T>(sql: string, params?: unknown[]): Promise<T | undefined> {
    return this.read(sql, (st) => st.get(...bind(params)) as T | undefined);
  }

  async run(sql: string, params?: unknown[]): Promise<{ changes: number }> {
    return this.write((c) => ({ changes: c.get(sql).run(...bind(params)).changes }));
  }

  /** Runs DDL (several statements) outside the statement cache, as a write. */
  async exec(sql: string): Promise<void> {
    await this.write(() => this.writer.exec(sql));
  }

  async transaction<T>(fn: (tx: SqlDb) => Promise<T>): Promise<T> {
    if (this.inTx()) return fn(this);
    const release = await this.mutex.lock();
    try {
      // IMMEDIATE takes the write lock now, so a second process cannot make us fail mid-way.
      await busyRetry(() => this.writer.exec("BEGIN IMMEDIATE"));
      try {
        const context = { open: true };
        let result: T;
        try {
          result = await this.txContext.run(context, () => fn(this));
        } finally {
          context.open = false;
        }
        this.writer.exec("COMMIT");
        return result;
      } catch (e) {
        // SQLite may already have rolled back (e.g. SQLITE_FULL); a second ROLLBACK would
        // replace the real error with "no transaction is active".
        if (this.writer.inTransaction) this.writer.exec("ROLLBACK");
        throw e;
      }
    } finally {
      release();
    }
  }

  async close(): Promise<void> {
    const release = await this.mutex.lock();
    try {
      if (this.reader?.open) this.reader.close();
      if (this.writer.open) this.writer.close();
    } finally {
      release();
    }
  }
}
