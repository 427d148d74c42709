// Forwards the agent's privileged audit to the server's audit log (seed 002: audited on the
// host and the server). At least once, in order: records wait in memory and in the audit file
// until the server acknowledges them; while the server is down they are retried with backoff,
// and after a restart everything past the acknowledged cursor is sent again. The server
// recognises a record it already holds by (host, seq, hash), so a resend never duplicates.
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import type { HostAuditRecord, RecordHostAuditRequest, RecordHostAuditResponse } from "../../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import type { Logger } from "../../runtime/logger.js";

/** What the forwarder needs of the server: PrivilegedAuditService.RecordHostAudit, host-signed. */
export interface HostAuditSink {
  recordHostAudit(req: RecordHostAuditRequest): Promise<RecordHostAuditResponse>;
}

export interface HostAuditForwarderOptions {
  hostId: string;
  sink: HostAuditSink;
  /** Where the highest acknowledged seq is kept across restarts. */
  cursorFile: string;
  logger: Logger;
  batchSize?: number;
  /** How long the first record of a batch waits for others to join it (default 50 ms). */
  lingerMs?: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export class HostAuditForwarder {
  private pending: HostAuditRecord[] = [];
  private acknowledged: number;
  private running = false;
  private stopped = false;
  private timer?: NodeJS.Timeout;
  private endSleep?: () => void;
  /** The cursor write in progress, and whether a newer value waits behind it. */
  private cursorWrite?: Promise<void>;
  private cursorDirty = false;

  constructor(private readonly o: HostAuditForwarderOptions) {
    this.acknowledged = existsSync(o.cursorFile) ? Number(readFileSync(o.cursorFile, "utf8").trim()) || 0 : 0;
  }

  /** Highest seq the server has acknowledged. */
  get acknowledgedSeq(): number {
    return this.acknowledged;
  }

  get backlog(): number {
    return this.pending.length;
  }

  /** Queues records (from the file at start, then each new one) and sends them soon. */
  enqueue(records: readonly HostAuditRecord[]): void {
    for (const r of records) if (r.seq > this.acknowledged) this.pending.push(r);
    // While a retry waits out its backoff, new records simply join the next attempt.
    if (!this.stopped && !this.running && this.pending.length) void this.run();
  }

  private async run(): Promise<void> {
    this.running = true;
    // One RecordHostAudit per burst rather than per record: the agent's audit file is already
    // durable, so forwarding a moment later costs nothing and spares the server and the
    // agent a call per privileged request.
    const linger = this.o.lingerMs ?? 50;
    if (linger > 0) await this.sleep(linger);
    let backoff = this.o.minBackoffMs ?? 500;
    while (!this.stopped && this.pending.length) {
      const batch = this.pending.slice(0, this.o.batchSize ?? 200);
      const first = batch[0]!.seq;
      const last = batch[batch.length - 1]!.seq;
      try {
        const res = await this.o.sink.recordHostAudit({ requestId: `host-audit-${this.o.hostId}-${first}-${last}`, hostId: this.o.hostId, records: batch });
        this.acknowledge(res.recordedThroughSeq);
        backoff = this.o.minBackoffMs ?? 500;
      } catch (e) {
        this.o.logger.warn({ err: (e as Error).message, reason: (e as { reason?: string }).reason, backlog: this.pending.length, retryInMs: backoff }, "privileged audit not yet forwarded to the server; retrying");
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, this.o.maxBackoffMs ?? 30_000);
      }
    }
    this.running = false;
  }

  private acknowledge(seq: number): void {
    if (seq <= this.acknowledged) return;
    this.acknowledged = seq;
    this.pending = this.pending.filter((r) => r.seq > seq);
    this.cursorDirty = true;
    this.cursorWrite ??= this.writeCursor();
  }

  /**
   * Keeps the cursor file up to date off the request path: one write at a time, the newest
   * value wins, and no fsync. Losing the newest cursor (a crash before the page cache reached
   * the disk) only makes the next start resend records the server recognises and acknowledges,
   * and temp + rename means a reader never sees a torn number.
   */
  private async writeCursor(): Promise<void> {
    while (this.cursorDirty) {
      this.cursorDirty = false;
      const tmp = path.join(path.dirname(this.o.cursorFile), `.${path.basename(this.o.cursorFile)}.${randomBytes(6).toString("hex")}.tmp`);
      try {
        await writeFile(tmp, `${this.acknowledged}\n`, { mode: 0o600 });
        await rename(tmp, this.o.cursorFile);
      } catch (e) {
        await rm(tmp, { force: true });
        this.o.logger.warn({ err: (e as Error).message }, "privileged audit cursor not saved; records past the last saved cursor are resent after a restart");
      }
    }
    this.cursorWrite = undefined;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.endSleep = resolve;
      this.timer = setTimeout(resolve, ms);
      this.timer.unref();
    });
  }

  /** Waits (bounded) for the backlog to drain and the cursor to be saved; used at shutdown and by tests. */
  async drain(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.pending.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await this.cursorWrite;
    return this.pending.length === 0;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.endSleep?.();
  }
}
