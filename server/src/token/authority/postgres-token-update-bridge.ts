// TokenUpdateBridge over PostgreSQL LISTEN/NOTIFY: an update published on one replica reaches
// the agents streaming from any other replica on the same schema (seed 000). Payloads carry
// sealed secrets only (the hub seals before it bridges) and stay far below NOTIFY's 8000 bytes.
// A dropped LISTEN connection is re-opened with capped backoff and reported as a gap, since
// notifications sent meanwhile are lost for good.
import type pg from "pg";
import type { Logger } from "../../runtime/logger.js";
import type { PostgresDb } from "../../runtime/storage/postgres-db.js";
import type { BridgedUpdate, TokenUpdateBridge } from "./token-update-hub.js";

export interface PostgresBridgeOptions {
  logger?: Logger;
  /** First and longest wait between reconnect attempts. Default 250 ms .. 10 s. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export class PostgresTokenUpdateBridge implements TokenUpdateBridge {
  private readonly listeners = new Set<(m: BridgedUpdate) => void>();
  private readonly gapListeners = new Set<() => void>();
  private client?: pg.PoolClient;
  private closed = false;
  private reconnecting = false;
  private timer?: NodeJS.Timeout;
  /** How many times the LISTEN connection was re-established (health, tests). */
  reconnects = 0;

  private constructor(
    private readonly db: PostgresDb,
    /** Channels are database-wide: the schema's name keeps two deployments apart. */
    readonly channel: string,
    private readonly o: PostgresBridgeOptions,
  ) {}

  /** Holds one pooled connection for LISTEN for the bridge's lifetime (re-opened if it drops). */
  static async open(db: PostgresDb, o: PostgresBridgeOptions = {}): Promise<PostgresTokenUpdateBridge> {
    const { schema } = (await db.get<{ schema: string }>("SELECT current_schema() AS schema")) ?? { schema: "public" };
    const channel = `tp_token_updates_${(schema ?? "public").replace(/[^a-z0-9_]/g, "_")}`.slice(0, 63);
    const bridge = new PostgresTokenUpdateBridge(db, channel, o);
    await bridge.listen();
    return bridge;
  }

  /** The LISTEN connection's backend pid (tests terminate it to exercise the reconnect). */
  async backendPid(): Promise<number | undefined> {
    const r = await this.client?.query<{ pid: number }>("SELECT pg_backend_pid() AS pid");
    return r?.rows[0]?.pid;
  }

  async publish(message: BridgedUpdate): Promise<void> {
    await this.db.run("SELECT pg_notify(?, ?)", [this.channel, JSON.stringify(message)]);
  }

  onRemote(listener: (message: BridgedUpdate) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onGap(listener: () => void): () => void {
    this.gapListeners.add(listener);
    return () => this.gapListeners.delete(listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    const client = this.client;
    this.client = undefined;
    if (client) {
      await client.query(`UNLISTEN ${this.channel}`).catch(() => undefined);
      client.release();
    }
  }

  private async listen(): Promise<void> {
    const client = await this.db.pool.connect();
    try {
      await client.query(`LISTEN ${this.channel}`);
    } catch (e) {
      client.release(e as Error);
      throw e;
    }
    client.on("notification", (n) => this.onNotification(n));
    const lost = (e?: Error) => this.lost(client, e);
    client.on("error", lost);
    client.on("end", () => lost());
    this.client = client;
  }

  private onNotification(n: pg.Notification): void {
    if (n.channel !== this.channel || !n.payload) return;
    let message: BridgedUpdate;
    try {
      message = JSON.parse(n.payload) as BridgedUpdate;
    } catch {
      this.o.logger?.warn({ channel: n.channel }, "ignored a malformed token update notification");
      return;
    }
    for (const l of [...this.listeners]) l(message);
  }

  private lost(client: pg.PoolClient, e?: Error): void {
    if (this.closed || this.client !== client || this.reconnecting) return;
    this.client = undefined;
    // A broken connection must not go back into the pool.
    client.release(e ?? new Error("LISTEN connection ended"));
    this.reconnecting = true;
    this.o.logger?.warn({ channel: this.channel, err: e?.message }, "token update LISTEN connection lost; reconnecting");
    void this.reconnect(this.o.minBackoffMs ?? 250);
  }

  private async reconnect(delayMs: number): Promise<void> {
    await new Promise<void>((resolve) => {
      this.timer = setTimeout(resolve, delayMs);
      this.timer.unref();
    });
    if (this.closed) return;
    try {
      await this.listen();
    } catch (e) {
      const next = Math.min(delayMs * 2, this.o.maxBackoffMs ?? 10_000);
      this.o.logger?.warn({ channel: this.channel, err: (e as Error).message, retryMs: next }, "token update LISTEN reconnect failed");
      void this.reconnect(next);
      return;
    }
    this.reconnecting = false;
    this.reconnects++;
    this.o.logger?.info({ channel: this.channel, reconnects: this.reconnects }, "token update LISTEN connection re-established");
    // Whatever was NOTIFYed while we were away is gone: subscribers must resynchronise.
    for (const l of [...this.gapListeners]) l();
  }
}
