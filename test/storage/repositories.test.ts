// The same repository suite against SQLite and PostgreSQL: migrations, CRUD and paging,
// uniqueness, single-use join tokens under concurrency, idempotency, nonces, transactions.
import { randomBytes } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { openDatabase } from "../../server/src/runtime/storage/open-database.js";
import { Storage } from "../../server/src/runtime/storage/storage.js";
import { backends } from "../support/backends.js";

const policy = { rules: [{ methods: ["*"], effect: "allow" as const }] };

describe.each(backends())("storage on $name", (backend) => {
  afterAll(() => backend.cleanup());

  async function open(): Promise<Storage> {
    return Storage.open(await backend.fresh());
  }

  it("applies migrations once, and again is a no-op", async () => {
    const opts = await backend.fresh();
    const a = await openDatabase(opts);
    const applied = await a.all<{ id: number }>("SELECT id FROM schema_migrations");
    await a.close();
    const b = await openDatabase(opts);
    expect(await b.all("SELECT id FROM schema_migrations")).toHaveLength(applied.length);
    await b.close();
    expect(applied.length).toBeGreaterThan(0);
  });

  it("creates, reads, pages principals and refuses duplicates", async () => {
    const s = await open();
    try {
      for (const n of ["carol", "alice", "bob"]) await s.principals.create({ name: n, kind: "user", roles: ["r"], policy, createdAtMs: 1 });
      expect(await s.principals.get("alice")).toEqual({ name: "alice", kind: "user", roles: ["r"], policy, createdAtMs: 1 });
      const p1 = await s.principals.list({ pageSize: 2 });
      expect(p1.items.map((p) => p.name)).toEqual(["alice", "bob"]);
      const p2 = await s.principals.list({ pageSize: 2, pageToken: p1.nextPageToken });
      expect(p2.items.map((p) => p.name)).toEqual(["carol"]);
      expect(p2.nextPageToken).toBeUndefined();
      await expect(s.principals.create({ name: "bob", kind: "user", roles: [], policy, createdAtMs: 2 })).rejects.toMatchObject({ status: "ALREADY_EXISTS" });
      await s.principals.setPolicy("bob", { rules: [] });
      expect((await s.principals.get("bob"))!.policy.rules).toEqual([]);
      await expect(s.principals.setPolicy("nobody", policy)).rejects.toMatchObject({ status: "NOT_FOUND" });
    } finally {
      await s.close();
    }
  });

  it("registers keys, refuses duplicates and revokes once", async () => {
    const s = await open();
    try {
      await s.principals.create({ name: "alice", kind: "user", roles: [], policy, createdAtMs: 1 });
      await s.keys.add({ keyId: "k1", principal: "alice", algorithm: "Ed25519", jwk: "{}", createdAtMs: 5 });
      await expect(s.keys.add({ keyId: "k1", principal: "alice", algorithm: "Ed25519", jwk: "{}", createdAtMs: 6 })).rejects.toMatchObject({ reason: "KEY_EXISTS" });
      await s.keys.revoke("k1", 10);
      await s.keys.revoke("k1", 20);
      expect((await s.keys.get("k1"))!.revokedAtMs).toBe(10);
      expect(await s.keys.listFor("alice")).toHaveLength(1);
    } finally {
      await s.close();
    }
  });

  it("redeems a join token exactly once, even when two agents race", async () => {
    const s = await open();
    try {
      await s.joinTokens.create({ tokenHash: "h1", hostId: "host-a", createdBy: "admin", expiresAtMs: Date.now() + 60_000 });
      const results = await Promise.allSettled([s.joinTokens.redeem("h1", Date.now()), s.joinTokens.redeem("h1", Date.now())]);
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      const loser = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
      expect(loser.reason).toMatchObject({ reason: "JOIN_TOKEN_INVALID" });
      await s.joinTokens.create({ tokenHash: "h2", hostId: "", createdBy: "admin", expiresAtMs: 100 });
      await expect(s.joinTokens.redeem("h2", 200)).rejects.toMatchObject({ reason: "JOIN_TOKEN_INVALID" });
      await expect(s.joinTokens.redeem("unknown", 0)).rejects.toMatchObject({ reason: "JOIN_TOKEN_INVALID" });
    } finally {
      await s.close();
    }
  });

  it("keeps the first idempotent response", async () => {
    const s = await open();
    try {
      await s.idempotency.put("scope", "r1", Buffer.from("d1"), Buffer.from("first"));
      await s.idempotency.put("scope", "r1", Buffer.from("d2"), Buffer.from("second"));
      const got = await s.idempotency.get("scope", "r1");
      expect(Buffer.from(got!.response).toString()).toBe("first");
      expect(Buffer.from(got!.requestDigest).toString()).toBe("d1");
      expect(await s.idempotency.get("scope", "r2")).toBeUndefined();
    } finally {
      await s.close();
    }
  });

  it("accepts a nonce once until it expires", async () => {
    const s = await open();
    try {
      const n = randomBytes(16);
      const later = Date.now() + 60_000;
      expect(await s.nonces.remember(n, later)).toBe(true);
      expect(await s.nonces.remember(n, later)).toBe(false);
      const old = randomBytes(16);
      expect(await s.nonces.remember(old, Date.now() - 1)).toBe(true);
      expect(await s.nonces.remember(old, later)).toBe(true);
    } finally {
      await s.close();
    }
  });

  it("rolls a transaction back when it throws, across repositories", async () => {
    const s = await open();
    try {
      await expect(
        s.db.transaction(async () => {
          await s.principals.create({ name: "tx", kind: "user", roles: [], policy, createdAtMs: 1 });
          await s.audit.append({ principal: "t", action: "a", target: "tx", outcome: "ok", requestId: "r" });
          throw new TrustplaneError("ABORTED", "TEST", "boom");
        }),
      ).rejects.toThrow("boom");
      expect(await s.principals.get("tx")).toBeUndefined();
      expect(await s.audit.list()).toHaveLength(0);
    } finally {
      await s.close();
    }
  });

  it("upserts and touches hosts", async () => {
    const s = await open();
    try {
      const h = { hostId: "h1", signingKeyId: "k", signingJwk: "{}", sealingJwk: "{}", address: "a:1", labels: { zone: "z" }, joinedAtMs: 1, lastSeenMs: 1 };
      await s.hosts.upsert(h);
      await s.hosts.upsert({ ...h, address: "b:2" });
      await s.hosts.touch("h1", 50);
      await s.hosts.touch("h1", 40);
      expect(await s.hosts.get("h1")).toEqual({ ...h, address: "b:2", lastSeenMs: 50 });
      expect(await s.hosts.list()).toHaveLength(1);
    } finally {
      await s.close();
    }
  });
});
