// The hash-chained audit log on both backends: a valid chain verifies, concurrent appends
// (also from two separate pools, as two replicas) never fork it, and each kind of tampering
// — an edited, deleted, reordered record or a truncated tail — is detected.
import { afterAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { AuditCheckpointer, readCheckpoint } from "../../server/src/runtime/storage/audit-checkpoint.js";
import { AuditLog, recordHash } from "../../server/src/runtime/storage/audit-log.js";
import { Storage } from "../../server/src/runtime/storage/storage.js";
import { backends } from "../support/backends.js";

describe.each(backends())("audit log on $name", (backend) => {
  afterAll(() => backend.cleanup());

  async function withRecords(n: number): Promise<Storage> {
    const s = await Storage.open(await backend.fresh());
    for (let i = 0; i < n; i++) await s.audit.append({ principal: "admin", action: "thing.do", target: `t${i}`, outcome: "ok", requestId: `r${i}`, detail: { i, nested: { b: 1, a: 2 } } });
    return s;
  }

  it("checkpoints the committed head to a file, and never moves it onto a log rewritten under it", async () => {
    const s = await withRecords(3);
    const dir = mkdtempSync(path.join(os.tmpdir(), "tp-audit-cp-"));
    const file = path.join(dir, "audit.head.json");
    const rewritten: string[] = [];
    try {
      const cp = new AuditCheckpointer(s.audit, file, (problem) => rewritten.push(problem), 10);
      s.audit.onAppended(() => cp.touch());
      await s.audit.append({ principal: "admin", action: "thing.do", target: "t3", outcome: "ok", requestId: "r3" });
      await cp.flush();
      const head = (await s.audit.head())!;
      expect(readCheckpoint(file)).toEqual(head);
      // Someone deletes the tail and appends again: the chain is valid, but not the one the checkpoint saw.
      await s.db.run("DELETE FROM audit_log WHERE seq = ?", [head.seq]);
      await s.audit.append({ principal: "mallory", action: "cover.up", target: "t3", outcome: "ok", requestId: "x" });
      expect(await s.audit.verify()).toMatchObject({ ok: true });
      await cp.flush();
      expect(readCheckpoint(file)).toEqual(head);
      expect(rewritten[0]).toContain(`record ${head.seq} differs from the recorded head`);
      expect(await s.audit.verify({ expectHead: head })).toMatchObject({ ok: false, brokenAtSeq: head.seq });
    } finally {
      await s.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("verifies an intact chain", async () => {
    const s = await withRecords(5);
    try {
      expect(await s.audit.verify()).toEqual({ ok: true, records: 5 });
      const [first] = await s.audit.list({ limit: 1 });
      expect(first!.prevHash.equals(Buffer.alloc(32))).toBe(true);
    } finally {
      await s.close();
    }
  });

  it("detects an edited record", async () => {
    const s = await withRecords(5);
    try {
      await s.db.run("UPDATE audit_log SET outcome = 'denied' WHERE seq = 3");
      expect(await s.audit.verify()).toMatchObject({ ok: false, brokenAtSeq: 3 });
    } finally {
      await s.close();
    }
  });

  it("detects an edited record whose hash was recomputed (the next link breaks)", async () => {
    const s = await withRecords(5);
    try {
      const [r3] = await s.audit.list({ afterSeq: 2, limit: 1 });
      const forged = { ...r3!, target: "forged" };
      await s.db.run("UPDATE audit_log SET target = ?, hash = ? WHERE seq = 3", ["forged", recordHash(r3!.prevHash, forged)]);
      expect(await s.audit.verify()).toMatchObject({ ok: false, brokenAtSeq: 4 });
    } finally {
      await s.close();
    }
  });

  it("detects a deleted record", async () => {
    const s = await withRecords(5);
    try {
      await s.db.run("DELETE FROM audit_log WHERE seq = 2");
      expect(await s.audit.verify()).toMatchObject({ ok: false, brokenAtSeq: 2 });
    } finally {
      await s.close();
    }
  });

  it("detects two records swapped", async () => {
    const s = await withRecords(5);
    try {
      await s.db.transaction(async () => {
        await s.db.run("UPDATE audit_log SET seq = -1 WHERE seq = 2");
        await s.db.run("UPDATE audit_log SET seq = 2 WHERE seq = 3");
        await s.db.run("UPDATE audit_log SET seq = 3 WHERE seq = -1");
      });
      expect(await s.audit.verify()).toMatchObject({ ok: false, brokenAtSeq: 2 });
    } finally {
      await s.close();
    }
  });

  it("detects a truncated tail against a remembered head", async () => {
    const s = await withRecords(5);
    try {
      const head = (await s.audit.head())!;
      await s.db.run("DELETE FROM audit_log WHERE seq = 5");
      expect((await s.audit.verify()).ok).toBe(true);
      expect(await s.audit.verify({ expectHead: head })).toMatchObject({ ok: false });
    } finally {
      await s.close();
    }
  });

  it("keeps one chain under concurrent appends, also from two separate connections", async () => {
    const opts = await backend.fresh();
    const a = await Storage.open(opts);
    const b = await Storage.open(opts);
    try {
      await Promise.all(
        Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).audit.append({ principal: "p", action: "concurrent", target: `t${i}`, outcome: "ok", requestId: `c${i}` })),
      );
      expect(await a.audit.verify()).toEqual({ ok: true, records: 40 });
    } finally {
      await a.close();
      await b.close();
    }
  });
  it("detects two records' contents swapped in place (same seq numbers)", async () => {
    const s = await withRecords(5);
    try {
      const [r2, r3] = await s.audit.list({ afterSeq: 1, limit: 2 });
      await s.db.transaction(async () => {
        for (const [seq, r] of [[2, r3!], [3, r2!]] as const) {
          await s.db.run("UPDATE audit_log SET target = ?, request_id = ?, detail_json = ?, prev_hash = ?, hash = ? WHERE seq = ?", [r.target, r.requestId, JSON.stringify(r.detail), r.prevHash, r.hash, seq]);
        }
      });
      expect(await s.audit.verify()).toMatchObject({ ok: false, brokenAtSeq: 2 });
    } finally {
      await s.close();
    }
  });

  it("detects a rewritten tail (all hashes recomputed) only against a remembered head", async () => {
    const s = await withRecords(5);
    try {
      const head = (await s.audit.head())!;
      let prev = (await s.audit.list({ afterSeq: 1, limit: 1 }))[0]!.prevHash;
      for (const r of await s.audit.list({ afterSeq: 1 })) {
        const forged = { ...r, outcome: "rewritten" };
        const hash = recordHash(prev, forged);
        await s.db.run("UPDATE audit_log SET outcome = ?, prev_hash = ?, hash = ? WHERE seq = ?", ["rewritten", prev, hash, r.seq]);
        prev = hash;
      }
      expect(await s.audit.verify()).toEqual({ ok: true, records: 5 });
      expect(await s.audit.verify({ expectHead: head })).toMatchObject({ ok: false, brokenAtSeq: 5 });
      expect(await s.audit.verify({ expectHead: (await s.audit.head())! })).toEqual({ ok: true, records: 5 });
    } finally {
      await s.close();
    }
  });

  it("returns exactly what it stored, pages in order, and refuses detail that is not JSON data", async () => {
    const s = await withRecords(0);
    try {
      const rec = await s.audit.append({ principal: "p", action: "a", target: "t", outcome: "ok", requestId: "r", detail: { keep: 1, drop: undefined, nan: Number.NaN, list: [undefined, "x"] } });
      expect(rec.detail).toEqual({ keep: 1, nan: null, list: [null, "x"] });
      const [stored] = await s.audit.list();
      expect(stored).toEqual(rec);
      for (let i = 0; i < 6; i++) await s.audit.append({ principal: "p", action: "a", target: `t${i}`, outcome: "ok", requestId: `r${i}` });
      const page = await s.audit.list({ afterSeq: 3, limit: 2 });
      expect(page.map((r) => r.seq)).toEqual([4, 5]);
      await expect(s.audit.append({ principal: "p", action: "a", target: "t", outcome: "ok", requestId: "r", detail: { big: 1n } })).rejects.toMatchObject({ status: "INVALID_ARGUMENT", reason: "AUDIT_DETAIL_INVALID" });
      expect(await s.audit.verify()).toEqual({ ok: true, records: 7 });
    } finally {
      await s.close();
    }
  });
  it("keeps time non-decreasing along the chain when a replica's clock is behind", async () => {
    const s = await withRecords(0);
    try {
      const ahead = new AuditLog(s.db, () => 2_000_000);
      const behind = new AuditLog(s.db, () => 1_000_000);
      await ahead.append({ principal: "p", action: "a", target: "t", outcome: "ok", requestId: "r1" });
      const later = await behind.append({ principal: "p", action: "a", target: "t", outcome: "ok", requestId: "r2" });
      expect(later.timeMs).toBe(2_000_000);
      expect(await s.audit.verify()).toEqual({ ok: true, records: 2 });
    } finally {
      await s.close();
    }
  });
});
