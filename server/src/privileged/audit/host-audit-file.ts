// The agent's own privileged audit (seed 002): an append-only, hash-chained file of one JSON
// line per outcome in the agent's 0700 state directory. Appends are durable before they resolve:
// the file is opened O_DSYNC, so a write returns only once its data (and the size that makes it
// readable) is on disk, in one thread-pool round trip instead of write + fdatasync. Appends made
// while a write is running share the next one (group commit). No logger sits in this path, so
// no log level (apply_config_patch log_level) can silence it.
import { closeSync, constants, existsSync, fdatasyncSync, ftruncate, ftruncateSync, openSync, readFileSync, write } from "node:fs";
import { promisify } from "node:util";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { HostAuditRecord } from "../../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { HOST_AUDIT_GENESIS, chainProblem, hostAuditHash } from "./host-audit-chain.js";

const writeAsync = (fd: number, buffer: Uint8Array) =>
  new Promise<number>((resolve, reject) => write(fd, buffer, (e, n) => (e ? reject(e) : resolve(n))));
const truncateAsync = promisify(ftruncate);

export type HostAuditEntry = Omit<HostAuditRecord, "seq" | "timeMs" | "prevHash" | "hash" | "requestNonce" | "replayUntilMs"> &
  Partial<Pick<HostAuditRecord, "requestNonce" | "replayUntilMs">>;

/** One line of the file: the record with its byte fields in hex (requestNonce absent in older files). */
type Line = Omit<HostAuditRecord, "prevHash" | "hash" | "requestNonce"> & { prevHash: string; hash: string; requestNonce?: string };

const toLine = (r: HostAuditRecord): string =>
  JSON.stringify({
    ...r,
    prevHash: Buffer.from(r.prevHash).toString("hex"),
    hash: Buffer.from(r.hash).toString("hex"),
    requestNonce: Buffer.from(r.requestNonce).toString("hex"),
  } satisfies Line) + "\n";

const fromLine = (l: Line): HostAuditRecord =>
  HostAuditRecord.fromPartial({ ...l, prevHash: Buffer.from(l.prevHash, "hex"), hash: Buffer.from(l.hash, "hex"), requestNonce: Buffer.from(l.requestNonce ?? "", "hex") });

interface Pending {
  record: HostAuditRecord;
  done: (e?: Error) => void;
}

export class HostAuditFile {
  private fd: number;
  private head: { seq: number; hash: Uint8Array; timeMs: number };
  private queue: Pending[] = [];
  private flushing?: Promise<void>;

  private constructor(
    private readonly file: string,
    private records: HostAuditRecord[],
    private readonly now: () => number,
    /** Bytes of whole records in the file (where a failed append is cut back to). */
    private size: number,
  ) {
    const last = records[records.length - 1];
    this.head = last ? { seq: last.seq, hash: last.hash, timeMs: last.timeMs } : { seq: 0, hash: HOST_AUDIT_GENESIS, timeMs: 0 };
    this.fd = openSync(file, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_DSYNC, 0o600);
  }

  /**
   * Opens (or creates) the file and re-walks its chain. A torn last line (a crash inside a write
   * that never returned) is cut off; any other break refuses to start, since appending after it
   * would hide what was changed.
   */
  static open(file: string, now: () => number = Date.now): HostAuditFile {
    const records: HostAuditRecord[] = [];
    let good = 0;
    if (existsSync(file)) {
      const text = readFileSync(file, "utf8");
      const lines = text.split("\n");
      let prev = { seq: 0, hash: HOST_AUDIT_GENESIS as Uint8Array };
      for (let i = 0; i < lines.length; i++) {
        const line = lines[i]!;
        const complete = i < lines.length - 1;
        if (line === "" && !complete) break;
        let record: HostAuditRecord | undefined;
        try {
          record = fromLine(JSON.parse(line) as Line);
        } catch {
          record = undefined;
        }
        if (!complete) {
          // The last line lacks its newline: its write never completed.
          break;
        }
        const problem = record ? chainProblem(record, prev) : `line ${i + 1} is not an audit record`;
        if (problem) throw new TrustplaneError("DATA_LOSS", "AUDIT_CHAIN_BROKEN", `${file}: ${problem}; the privileged audit was altered — keep the file for investigation and start from a copy`);
        records.push(record!);
        prev = { seq: record!.seq, hash: record!.hash };
        good += Buffer.byteLength(line) + 1;
      }
      if (good < Buffer.byteLength(text)) {
        const fd = openSync(file, "r+");
        try {
          ftruncateSync(fd, good);
          fdatasyncSync(fd);
        } finally {
          closeSync(fd);
        }
      }
    }
    return new HostAuditFile(file, records, now, good);
  }

  /** The records read at open (to forward what the server has not acknowledged); once. */
  takeRecords(): HostAuditRecord[] {
    const r = this.records;
    this.records = [];
    return r;
  }

  get lastSeq(): number {
    return this.head.seq;
  }

  /** Appends one record; resolves with it once it is on disk. */
  append(entry: HostAuditEntry): Promise<HostAuditRecord> {
    const seq = this.head.seq + 1;
    // Time never goes backwards along the chain, whatever the clock does.
    const timeMs = Math.max(this.now(), this.head.timeMs);
    const record = HostAuditRecord.fromPartial({ ...entry, seq, timeMs, prevHash: this.head.hash });
    record.hash = hostAuditHash(record);
    this.head = { seq, hash: record.hash, timeMs };
    return new Promise<HostAuditRecord>((resolve, reject) => {
      this.queue.push({ record, done: (e) => (e ? reject(e) : resolve(record)) });
      this.flushing ??= this.flush();
    });
  }

  private async flush(): Promise<void> {
    // Let appends of the current tick join the first write.
    await Promise.resolve();
    while (this.queue.length) {
      const batch = this.queue;
      this.queue = [];
      const bytes = Buffer.from(batch.map((p) => toLine(p.record)).join(""), "utf8");
      try {
        let off = 0;
        // O_DSYNC: each write is durable when it returns.
        while (off < bytes.length) off += await writeAsync(this.fd, bytes.subarray(off));
        this.size += bytes.length;
        for (const p of batch) p.done();
      } catch (e) {
        // Nothing after a failed write may be believed durable: fail it and everything queued
        // behind it (their hashes chain to it), and cut the file back to its last good length.
        const err = new TrustplaneError("INTERNAL", "AUDIT_WRITE_FAILED", `the privileged audit could not be written (${(e as Error).message}); nothing runs until it can`);
        await truncateAsync(this.fd, this.size).catch(() => undefined);
        const first = batch[0]!.record;
        this.head = { seq: first.seq - 1, hash: first.prevHash, timeMs: this.head.timeMs };
        for (const p of [...batch, ...this.queue]) p.done(err);
        this.queue = [];
      }
    }
    this.flushing = undefined;
  }

  close(): void {
    closeSync(this.fd);
  }
}
