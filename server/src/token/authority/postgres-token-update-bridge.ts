// TokenUpdateBridge over PostgreSQL LISTEN/NOTIFY: an update published on one replica reaches
// the agents streaming from any other replica on the same schema (seed 000). Payloads carry
// sealed secrets only (the hub seals before it bridges) and stay far below NOTIFY's 8000 bytes.
import type pg from "pg";
import type { Logger } from "../../runtime/logger.js";
import type { PostgresDb } from "../../runtime/storage/postgres-db.js";
import type { BridgedUpdate, TokenUpdateBridge } from "./token-update-hub.js";

export class PostgresTokenUpdateBridge implements TokenUpdateBridge {
  private readonly listeners = new Set<(m: BridgedUpdate) => void>();
  private closed = false;

  private constructor(
    private readonly db: PostgresDb,
    private readonly client: pg.PoolClient,
    /** Channels are database-wide: the schema's name keeps two deployments apart. */
    readonly channel: string,
    private readonly logger?: Logger,
  ) {
    client.on("notification", (n) => {
      if (n.channel !== this.channel || !n.payload) return;
      let message: BridgedUpdate;
      try {
        message = JSON.parse(n.payload) as BridgedUpdate;
      } catch {
        this.logger?.warn({ channel: n.channel }, "ignored a malformed token update notification");
        return;
      }
      for (const l of [...this.listeners]) l(message);
    });
  }

  /** Holds one pooled connection for LISTEN for the bridge's lifetime. */
  static async open(db: PostgresDb, logger?: Logger): Promise<PostgresTokenUpdateBridge> {
    const client = await db.pool.connect();
    try {
      const { rows } = await client.query<{ schema: string }>("SELECT current_schema() AS schema");
      const channel = `tp_token_updates_${(rows[0]?.schema ?? "public").replace(/[^a-z0-9_]/g, "_")}`.slice(0, 63);
      await client.query(`LISTEN ${channel}`);
      return new PostgresTokenUpdateBridge(db, client, channel, logger);
    } catch (e) {
      client.release();
      throw e;
    }
  }

  async publish(message: BridgedUpdate): Promise<void> {
    await this.db.run("SELECT pg_notify(?, ?)", [this.channel, JSON.stringify(message)]);
  }

  onRemote(listener: (message: BridgedUpdate) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.client.query(`UNLISTEN ${this.channel}`).catch(() => undefined);
    this.client.release();
  }
}
