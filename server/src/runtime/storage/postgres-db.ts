// SqlDb over node-postgres: a pool for replicas, int8 parsed as number, `?` placeholders
// rewritten, and transactions pinned to one pooled client found through AsyncLocalStorage.
import pg from "pg";
import { AsyncLocalStorage } from "node:async_hooks";
import { toPostgresPlaceholders, type SqlDb } from "./sql-db.js";

// Counters and millisecond timestamps fit in a double; keep them numbers, not strings.
pg.types.setTypeParser(20, (v: string) => Number(v));

export class PostgresDb implements SqlDb {
  readonly dialect = "postgres" as const;
  readonly pool: pg.Pool;
  private readonly tx = new AsyncLocalStorage<pg.PoolClient>();
  private readonly sqlCache = new Map<string, string>();

  constructor(url: string, schema?: string) {
    this.pool = new pg.Pool({ connectionString: url, max: 10, ...(schema ? { options: `-c search_path=${schema}` } : {}) });
    // An idle client dying (server restart) must not crash the process.
    this.pool.on("error", () => undefined);
  }

  private text(sql: string): string {
    let t = this.sqlCache.get(sql);
    if (t === undefined) {
      t = toPostgresPlaceholders(sql);
      if (this.sqlCache.size > 500) this.sqlCache.clear();
      this.sqlCache.set(sql, t);
    }
    return t;
  }

  private async query<T>(sql: string, params?: unknown[]): Promise<pg.QueryResult<T & pg.QueryResultRow>> {
    const client = this.tx.getStore();
    const values = (params ?? []).map((p) => (p === undefined ? null : p));
    return client ? client.query<T & pg.QueryResultRow>(this.text(sql), values) : this.pool.query<T & pg.QueryResultRow>(this.text(sql), values);
  }

  async all<T>(sql: string, params?: unknown[]): Promise<T[]> {
    return (await this.query<T>(sql, params)).rows;
  }

  async get<T>(sql: string, params?: unknown[]): Promise<T | undefined> {
    return (await this.query<T>(sql, params)).rows[0];
  }

  async run(sql: string, params?: unknown[]): Promise<{ changes: number }> {
    return { changes: (await this.query(sql, params)).rowCount ?? 0 };
  }

  async transaction<T>(fn: (tx: SqlDb) => Promise<T>): Promise<T> {
    if (this.tx.getStore()) return fn(this);
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      try {
        const result = await this.tx.run(client, () => fn(this));
        await client.query("COMMIT");
        return result;
      } catch (e) {
        await client.query("ROLLBACK").catch(() => undefined);
        throw e;
      }
    } finally {
      client.release();
    }
  }

  /** Runs fn on one dedicated client outside any transaction (migration locks). */
  async withClient<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      return await fn(client);
    } finally {
      client.release();
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
