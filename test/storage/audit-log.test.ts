// The hash-chained audit log on both backends: a valid chain verifies, concurrent appends
// (also from two separate pools, as two replicas) never fork it, and each kind of tampering
// — an edited, deleted, reordered record or a truncated tail — is detected.
import { afterAll, describe, expect, it } from "vitest";
import { Storage } from "../../server/src/runtime/storage/storage.js";
import { backends } from "../support/backends.js";

describe.each(backends())("audit log on $name", (backend) => {
  afterAll(() => backend.cleanup());

  async function withRecords(n: number): Promise<Storage> {
    const s = await Storage.open(await backend.fresh());
    for (let i = 0; i < n; i++) await s.audit.append({ principal: "admin", action: "thing.do", target: `t${i}`, outcome: "ok", requestId: `r${i}`, detail: { i, nested: { b: 1, a: 2 } } });
    return s;
  }

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
      const { recordHash } = await import("../../server/src/runtime/storage/audit-log.js");
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
});
