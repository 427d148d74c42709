// Audit checkpoints: the hash chain shows an edited, inserted or deleted record, but not a
// deleted tail — the shortened chain is still a valid chain. The server therefore remembers
// the newest head it has seen (seq + hash) in a file outside the database, rewritten
// atomically a moment after appends; `trustplane audit verify` checks the chain still reaches
// it. An operator who wants protection from someone able to rewrite both copies keeps heads
// elsewhere too (`trustplane audit head`, then `audit verify --expect-head SEQ:HASH`).
import { existsSync, readFileSync } from "node:fs";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { writeSecretFile } from "../key-file.js";
import type { AuditLog } from "./audit-log.js";

export interface AuditHead {
  seq: number;
  hash: Buffer;
}

export function formatHead(h: AuditHead): string {
  return `${h.seq}:${h.hash.toString("hex")}`;
}

/** Parses `SEQ:HASH` (hash as 64 hex digits), saying what is wrong otherwise. */
export function parseHead(text: string, field = "expect-head"): AuditHead {
  const m = /^(\d+):([0-9a-f]{64})$/.exec(text.trim());
  if (!m) throw new TrustplaneError("INVALID_ARGUMENT", "AUDIT_HEAD_INVALID", `${field} must be SEQ:HASH as printed by \`trustplane audit head\` (e.g. 42:9f86d08…), got ${JSON.stringify(text.slice(0, 80))}`, field);
  return { seq: Number(m[1]), hash: Buffer.from(m[2]!, "hex") };
}

/** The checkpoint file, or undefined when the server never wrote one. */
export function readCheckpoint(file: string): AuditHead | undefined {
  if (!existsSync(file)) return undefined;
  const doc = JSON.parse(readFileSync(file, "utf8")) as { head?: string };
  return parseHead(String(doc.head ?? ""), file);
}

export class AuditCheckpointer {
  private timer?: NodeJS.Timeout;
  private writing: Promise<void> = Promise.resolve();
  private last?: AuditHead;

  constructor(
    private readonly audit: AuditLog,
    private readonly file: string,
    private readonly onRewritten: (problem: string, kept: AuditHead) => void,
    private readonly delayMs = 1000,
  ) {
    this.last = readCheckpoint(file);
  }

  /** An append happened; the head is read back (committed) and written after a short delay. */
  touch(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.delayMs);
    this.timer.unref();
  }

  /** Writes the current committed head now (also on shutdown). */
  flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.writing = this.writing.then(async () => {
      const head = await this.audit.head();
      if (!head) return;
      if (this.last && head.seq === this.last.seq && head.hash.equals(this.last.hash)) return;
      // Never move the checkpoint onto a log that no longer contains it: that would hide
      // a tail deleted (and appended after) behind the server's back.
      const problem = this.last && (await this.audit.missing(this.last));
      if (problem) return this.onRewritten(problem, this.last!);
      writeSecretFile(this.file, JSON.stringify({ head: formatHead(head), writtenAtMs: Date.now() }) + "\n");
      this.last = head;
    });
    return this.writing;
  }
}
