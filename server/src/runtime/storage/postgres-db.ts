// SqlDb over node-postgres for replicas: a pool, int8 parsed as number, `?` placeholders
// rewritten, and transactions pinned to one pooled client found through AsyncLocalStorage,
// so repositories called inside transaction() join it without passing handles around.
import pg from "pg";
import { AsyncLocalStorage } from "node:async_hooks";
import { createLogger, type Logger } from "../logger.js";
import { toPostgresPlaceholders, type SqlDb } from "./sql-db.js";

const INT8_OID = 20;

/**
 * This pool's type parsers: int8 (BIGINT, COUNT(*)) becomes a number, since counters and
 * millisecond timestamps stay far below 2^53. Scoped to the pool, not pg's global table.
 */
const TYPES: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === INT8_OID && format !== "binary" ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as "text")) as pg.CustomTypesConfig["getTypeParser"],
};

function values(params: unknown[] | undefined): unknown[] {
  return (params ?? []).map((p) => {
    if (p === undefined) return null;
    if (p instanceof Uint8Array && !Buffer.isBuffer(p)) return Buffer.from(p.buffer, p.byteOffset, p.byteLength);
    return p;
  });
}

export interface PostgresDbOptions {
  /** Schema put first on every connection's search_path (tests use a fresh one each). */
  schema?: string;
  /** Pool size per replica. */
  maxConnections?: number;
  logger?: Logger;
}

export class PostgresDb implements SqlDb {
  readonly dialect = "postgres" as const;
  readonly pool: pg.Pool;
  readonly schema: string | undefined;
  // The transaction an async context belongs to. Work spawned inside one (a timer, a
  // fire-and-forget promise) inherits the context but may run after it ended, when its client
  // is back in the pool serving someone else: `open` turns false and such work uses the pool.
  private readonly tx = new AsyncLocalStorage<{ client: pg.PoolClient; open: boolean }>();
  private readonly sqlCache = new Map<string, string>();
  private logger: Logger | undefined;

  constructor(url: string, opts: PostgresDbOptions | string = {}) {
    const o = typeof opts === "string" ? { schema: opts } : opts;
    this.schema = o.schema;
    this.logger = o.logger;
    this.pool = new pg.Pool({
      connectionString: url,
      max: o.maxConnections ?? 10,
      types: TYPES,
      application_name: "trustplane",
      // An unreachable server fails the call instead of hanging it; dead peers are noticed.
      connectionTimeoutMillis: 10_000,
      keepAlive: true,
      // The schema name is validated by openDatabase (a lowercase identifier).
      ...(o.schema ? { options: `-c search_path=${o.schema}` } : {}),
    });
    // An idle client dying (server restart, failover) must not crash the process; the pool
    // replaces it on the next query.
    this.pool.on("error", (e) => this.log().warn({ err: { message: e.message, code: (e as { code?: string }).code } }, "idle PostgreSQL connection failed"));
  }

  private log(): Logger {
    return (this.logger ??= createLogger({ name: "storage" }));
  }

  private text(sql: string): string {
    let t = this.sqlCache.get(sql);
    if (t === undefined) {
      t = toPostgresPlaceholders(sql);
      if (this.sqlCache.size >= 500) this.sqlCache.clear();
      this.sqlCache.set(sql, t);
    }
    return t;
  }

  private async query<T>(sql: string, params?: unknown[]): Promise<pg.QueryResult<T & pg.QueryResultRow>> {
    const store = this.tx.getStore();
    const client = store?.open ? store.client : undefined;
    const text = this.text(sql);
    return client ? client.query<T & pg.QueryResultRow>(text, values(params)) : this.pool.query<T & pg.QueryResultRow>(text, values(params));
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
    if (this.tx.getStore()?.open) return fn(this);
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
    } catch (e) {
      client.release(e as Error);
      throw e;
    }
    let broken: Error | undefined;
    try {
      const context = { client, open: true };
      let result: T;
      try {
        result = await this.tx.run(context, () => fn(this));
      } finally {
        context.open = false;
      }
      await client.query("COMMIT");
      return result;
    } catch (e) {
      try {
        await client.query("ROLLBACK");
      } catch (rollbackError) {
        // The connection is unusable (it died mid-transaction): destroy it, don't pool it.
        broken = rollbackError as Error;
      }
      throw e;
    } finally {
      client.release(broken);
    }
  }

  /** Runs fn on one dedicated client outside any transaction (session advisory locks, LISTEN). */
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
