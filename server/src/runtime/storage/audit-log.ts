// The append-only, hash-chained audit log: record n stores SHA-256(hash(n-1) ‖ canonical JSON
// of its own fields), so editing, deleting or reordering any record breaks the chain from
// there on. Appends are serialised (the SQLite write lock, a PostgreSQL advisory lock) so
// concurrent replicas never fork the chain. Callers pass ids in `detail`, never secrets.
import { createHash } from "node:crypto";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import type { SqlDb } from "./sql-db.js";

export interface AuditEntry {
  principal: string;
  action: string;
  target: string;
  /** "ok", or the denial reason code. */
  outcome: string;
  requestId: string;
  /**
   * Ids, names and counts only (key id, host id, operation id) — never tokens, keys or
   * payloads: the log is kept forever and shown by `trustplane audit`. Must be plain JSON data.
   */
  detail?: Record<string, unknown>;
}

export interface AuditRecord extends Required<AuditEntry> {
  seq: number;
  timeMs: number;
  prevHash: Buffer;
  hash: Buffer;
}

export interface AuditVerification {
  ok: boolean;
  records: number;
  brokenAtSeq?: number;
  problem?: string;
}

export const GENESIS_HASH = Buffer.alloc(32);
const APPEND_LOCK = 727_274_002;

/** JSON with object keys sorted at every depth: one text per value, whatever the key order. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
}

export function recordHash(prevHash: Uint8Array, r: Omit<AuditRecord, "prevHash" | "hash">): Buffer {
  const body = canonicalJson({
    seq: r.seq,
    timeMs: r.timeMs,
    principal: r.principal,
    action: r.action,
    target: r.target,
    outcome: r.outcome,
    requestId: r.requestId,
    detail: r.detail,
  });
  return createHash("sha256").update(prevHash).update(body, "utf8").digest();
}

interface Row {
  seq: number;
  time_ms: number;
  principal: string;
  action: string;
  target: string;
  outcome: string;
  request_id: string;
  detail_json: string;
  prev_hash: Buffer;
  hash: Buffer;
}

function fromRow(r: Row): AuditRecord {
  return {
    seq: Number(r.seq),
    timeMs: Number(r.time_ms),
    principal: r.principal,
    action: r.action,
    target: r.target,
    outcome: r.outcome,
    requestId: r.request_id,
    detail: JSON.parse(r.detail_json) as Record<string, unknown>,
    prevHash: Buffer.from(r.prev_hash),
    hash: Buffer.from(r.hash),
  };
}

export class AuditLog {
  private readonly appended = new Set<() => void>();

  constructor(
    private readonly db: SqlDb,
    private readonly now: () => number = Date.now,
  ) {}

  /** Called after every append (the record may still be inside the caller's transaction). */
  onAppended(fn: () => void): () => void {
    this.appended.add(fn);
    return () => this.appended.delete(fn);
  }

  async append(e: AuditEntry): Promise<AuditRecord> {
    // Hash exactly what will be stored and read back: JSON drops undefined, turns NaN into null…
    let detail: Record<string, unknown>;
    try {
      detail = JSON.parse(canonicalJson(e.detail ?? {})) as Record<string, unknown>;
    } catch (err) {
      throw new TrustplaneError("INVALID_ARGUMENT", "AUDIT_DETAIL_INVALID", `audit detail must be plain JSON data (ids, counts, names): ${(err as Error).message}`, "detail");
    }
    const rec = await this.db.transaction(async () => {
      // Replicas append one at a time (per schema), so no two records get the same prev_hash.
      // On SQLite the transaction itself holds the single write lock.
      if (this.db.dialect === "postgres") await this.db.get("SELECT pg_advisory_xact_lock(?::int, hashtext(current_schema())) AS locked", [APPEND_LOCK]);
      const head = await this.db.get<{ seq: number; hash: Buffer; time_ms: number }>("SELECT seq, hash, time_ms FROM audit_log ORDER BY seq DESC LIMIT 1");
      const seq = head ? Number(head.seq) + 1 : 1;
      const prevHash = head ? Buffer.from(head.hash) : GENESIS_HASH;
      // Replicas' clocks differ slightly: keep time non-decreasing along the chain.
      const timeMs = Math.max(this.now(), head ? Number(head.time_ms) : 0);
      const rec = { seq, timeMs, principal: e.principal, action: e.action, target: e.target, outcome: e.outcome, requestId: e.requestId, detail };
      const hash = recordHash(prevHash, rec);
      await this.db.run(
        "INSERT INTO audit_log (seq, time_ms, principal, action, target, outcome, request_id, detail_json, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [seq, rec.timeMs, rec.principal, rec.action, rec.target, rec.outcome, rec.requestId, canonicalJson(rec.detail), prevHash, hash],
      );
      return { ...rec, prevHash, hash };
    });
    for (const fn of this.appended) fn();
    return rec;
  }

  async list(opts: { afterSeq?: number; limit?: number } = {}): Promise<AuditRecord[]> {
    const rows = await this.db.all<Row>("SELECT * FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?", [opts.afterSeq ?? 0, Math.min(opts.limit ?? 100, 10_000)]);
    return rows.map(fromRow);
  }

  async head(): Promise<{ seq: number; hash: Buffer } | undefined> {
    const r = await this.db.get<{ seq: number; hash: Buffer }>("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1");
    return r && { seq: Number(r.seq), hash: Buffer.from(r.hash) };
  }

  /**
   * Re-walks the chain. Detects edited, deleted, inserted and reordered records; a deleted
   * tail is only detectable against a head remembered elsewhere (`expectHead`).
   */
  async verify(opts: { expectHead?: { seq: number; hash: Uint8Array } } = {}): Promise<AuditVerification> {
    let prev: Buffer = GENESIS_HASH;
    let expected = 1;
    let count = 0;
    for (let after = 0; ; ) {
      const page = await this.list({ afterSeq: after, limit: 5000 });
      if (page.length === 0) break;
      for (const r of page) {
        if (r.seq !== expected) return { ok: false, records: count, brokenAtSeq: expected, problem: `record ${expected} is missing (next is ${r.seq})` };
        if (!r.prevHash.equals(prev)) return { ok: false, records: count, brokenAtSeq: r.seq, problem: `record ${r.seq} does not follow record ${r.seq - 1} (previous hash differs)` };
        if (!recordHash(prev, r).equals(r.hash)) return { ok: false, records: count, brokenAtSeq: r.seq, problem: `record ${r.seq} was modified (its hash does not match its content)` };
        prev = r.hash;
        expected++;
        count++;
      }
      after = page[page.length - 1]!.seq;
    }
    if (opts.expectHead) {
      const problem = await this.missing(opts.expectHead);
      if (problem) return { ok: false, records: count, brokenAtSeq: Math.min(count + 1, opts.expectHead.seq), problem };
    }
    return { ok: true, records: count };
  }

  /** Why the log no longer reaches a head recorded earlier, or undefined when it does. One query. */
  async missing(head: { seq: number; hash: Uint8Array }): Promise<string | undefined> {
    const at = await this.db.get<{ hash: Buffer }>("SELECT hash FROM audit_log WHERE seq = ?", [head.seq]);
    if (!at) {
      const last = (await this.head())?.seq ?? 0;
      return last < head.seq ? `the log ends at record ${last} but a head at ${head.seq} was recorded: records were deleted from the end` : `record ${head.seq} is missing`;
    }
    return Buffer.from(at.hash).equals(Buffer.from(head.hash)) ? undefined : `record ${head.seq} differs from the recorded head: the log was rewritten`;
  }
}
