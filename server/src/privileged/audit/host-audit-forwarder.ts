// Forwards the agent's privileged audit to the server's audit log (seed 002: audited on the
// host and the server). At least once, in order: records wait in memory and in the audit file
// until the server acknowledges them; while the server is down they are retried with backoff,
// and after a restart everything past the acknowledged cursor is sent again. The server
// recognises a record it already holds by (host, seq, hash), so a resend never duplicates.
import { existsSync, readFileSync } from "node:fs";
import type { HostAuditRecord, RecordHostAuditRequest, RecordHostAuditResponse } from "../../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import type { Logger } from "../../runtime/logger.js";
import { writeSecretFile } from "../../runtime/key-file.js";

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
    writeSecretFile(this.o.cursorFile, `${seq}\n`);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.endSleep = resolve;
      this.timer = setTimeout(resolve, ms);
      this.timer.unref();
    });
  }

  /** Waits (bounded) for the backlog to drain; used at shutdown and by tests. */
  async drain(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.pending.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return this.pending.length === 0;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.endSleep?.();
  }
}
