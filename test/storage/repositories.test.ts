// The same repository suite against SQLite and PostgreSQL: migrations, CRUD and paging,
// uniqueness, single-use join tokens under concurrency, idempotency, nonces, transactions.
import { randomBytes } from "node:crypto";
import { statSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { MIGRATIONS } from "../../server/src/runtime/storage/migrations/index.js";
import type { Migration } from "../../server/src/runtime/storage/migrations/migration.js";
import { openDatabase } from "../../server/src/runtime/storage/open-database.js";
import { isForeignKeyViolation, isUniqueViolation } from "../../server/src/runtime/storage/sql-db.js";
import { Storage } from "../../server/src/runtime/storage/storage.js";
import pg from "pg";
import { PG_URL, backends } from "../support/backends.js";

/** A promise plus the function that settles it: holds a transaction open mid-way. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}

const policy = { rules: [{ methods: ["*"], effect: "allow" as const }] };

// Shows up as a skipped test (not a silent pass) when no PostgreSQL URL is configured.
describe("PostgreSQL test database", () => {
  it.skipIf(!PG_URL)("is reachable at TRUSTPLANE_TEST_DATABASE_URL (unset: every PostgreSQL variant below is skipped)", async () => {
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    try {
      expect((await c.query("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
    } finally {
      await c.end();
    }
  });
});

describe("openDatabase configuration", () => {
  it("reports an unreachable PostgreSQL server as UNAVAILABLE, and bad URLs or schema names as INVALID_ARGUMENT", async () => {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    await expect(openDatabase({ url: "postgres://nobody@127.0.0.1:1/none" })).rejects.toMatchObject({ status: "UNAVAILABLE", reason: "DATABASE_UNAVAILABLE" });
    await expect(openDatabase({ url: "mysql://127.0.0.1/db" })).rejects.toMatchObject({ status: "INVALID_ARGUMENT", reason: "CONFIG_INVALID" });
    await expect(openDatabase({ url: "postgres://127.0.0.1:1/db", schema: "x; DROP TABLE principals" })).rejects.toMatchObject({ reason: "CONFIG_INVALID", field: "schema" });
  });

  it("serves an in-memory SQLite database with the same isolation (no read of a row later rolled back)", async () => {
    const s = await Storage.open({ sqlitePath: ":memory:" });
    try {
      const g = gate();
      const inside = gate();
      const tx = s.db.transaction(async () => {
        await s.principals.create({ name: "m", kind: "user", roles: [], policy, createdAtMs: 1 });
        inside.open();
        await g.wait;
        throw new Error("roll back");
      });
      await inside.wait;
      // Must wait for the transaction's end, not read its row early (it is rolled back).
      const outside = s.principals.get("m");
      g.open();
      await expect(tx).rejects.toThrow("roll back");
      expect(await outside).toBeUndefined();
    } finally {
      await s.close();
    }
  });
});

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
  it("opens concurrently (replicas starting together) and applies each migration once", async () => {
    const opts = await backend.fresh();
    const dbs = await Promise.all([openDatabase(opts), openDatabase(opts), openDatabase(opts)]);
    try {
      const rows = await dbs[0]!.all<{ id: number }>("SELECT id FROM schema_migrations ORDER BY id");
      expect(rows.map((r) => Number(r.id))).toEqual(MIGRATIONS.map((m) => m.id));
    } finally {
      for (const d of dbs) await d.close();
    }
  });

  it("refuses a database whose migration id carries another name, and a list with clashing ids", async () => {
    const opts = await backend.fresh();
    await (await openDatabase(opts)).close();
    const renamed: Migration[] = [{ ...MIGRATIONS[0]!, name: "someone-else" }, ...MIGRATIONS.slice(1)];
    await expect(openDatabase({ ...opts, migrations: renamed })).rejects.toMatchObject({ status: "FAILED_PRECONDITION", reason: "MIGRATION_CONFLICT" });
    const clash: Migration[] = [...MIGRATIONS, { id: MIGRATIONS[MIGRATIONS.length - 1]!.id, name: "dup", statements: () => [] }];
    await expect(openDatabase({ ...opts, migrations: clash })).rejects.toMatchObject({ reason: "MIGRATION_CONFLICT" });
    // A database that lost a migration this build knows in the middle was made by another build.
    const missingMiddle = MIGRATIONS.filter((m) => m.id !== 1);
    await expect(openDatabase({ ...opts, migrations: missingMiddle })).rejects.toMatchObject({ reason: "MIGRATION_CONFLICT" });
  });

  it("tolerates a newer build's migration (rolling upgrade) and applies a failed migration not at all", async () => {
    const opts = await backend.fresh();
    const future: Migration = { id: 999, name: "future", statements: (t) => [`CREATE TABLE future_t (x ${t.bigint})`] };
    await (await openDatabase({ ...opts, migrations: [...MIGRATIONS, future] })).close();
    const db = await openDatabase(opts);
    await db.close();
    const broken: Migration = { id: 1000, name: "broken", statements: (t) => [`CREATE TABLE half_done (x ${t.bigint})`, "CREATE TABLE nonsense ("] };
    await expect(openDatabase({ ...opts, migrations: [...MIGRATIONS, future, broken] })).rejects.toMatchObject({ reason: "MIGRATION_FAILED" });
    const again = await openDatabase({ ...opts, migrations: [...MIGRATIONS, future] });
    try {
      expect(await again.get("SELECT id FROM schema_migrations WHERE id = 1000")).toBeUndefined();
      await expect(again.all("SELECT * FROM half_done")).rejects.toThrow();
    } finally {
      await again.close();
    }
  });

  it("binds strings with ? inside literals, Uint8Array views, and reads counts as numbers", async () => {
    const s = await open();
    try {
      expect(await s.db.get("SELECT '?' AS q, ? AS v", ["x"])).toEqual({ q: "?", v: "x" });
      const backing = randomBytes(48);
      const view = new Uint8Array(backing.buffer, backing.byteOffset + 16, 16);
      await s.idempotency.put("s", "view", view, new Uint8Array([1, 2, 3]));
      const got = await s.idempotency.get("s", "view");
      expect(Buffer.from(got!.requestDigest)).toEqual(backing.subarray(16, 32));
      expect(Buffer.from(got!.response)).toEqual(Buffer.from([1, 2, 3]));
      const { n } = (await s.db.get<{ n: number }>("SELECT COUNT(*) AS n FROM idempotency"))!;
      expect(n).toBe(1);
      expect(typeof n).toBe("number");
    } finally {
      await s.close();
    }
  });

  it("normalises unique and foreign-key violations", async () => {
    const s = await open();
    try {
      await s.principals.create({ name: "alice", kind: "user", roles: [], policy, createdAtMs: 1 });
      const dup = await s.db.run("INSERT INTO principals (name, kind, roles_json, policy_json, created_at_ms) VALUES ('alice', 'user', '[]', '{}', 1)").catch((e) => e);
      expect(isUniqueViolation(dup)).toBe(true);
      expect(isForeignKeyViolation(dup)).toBe(false);
      const orphan = await s.db.run("INSERT INTO keys (key_id, principal, algorithm, jwk_json, created_at_ms) VALUES ('k', 'ghost', 'Ed25519', '{}', 1)").catch((e) => e);
      expect(isForeignKeyViolation(orphan)).toBe(true);
      await expect(s.keys.add({ keyId: "k", principal: "ghost", algorithm: "Ed25519", jwk: "{}", createdAtMs: 1 })).rejects.toMatchObject({ status: "NOT_FOUND", reason: "PRINCIPAL_NOT_FOUND" });
    } finally {
      await s.close();
    }
  });

  it("pages through many principals with keyset tokens and a default page size", async () => {
    const s = await open();
    try {
      await s.db.transaction(async () => {
        for (let i = 0; i < 25; i++) await s.principals.create({ name: `p${String(i).padStart(2, "0")}`, kind: "service", roles: [], policy, createdAtMs: i });
      });
      const seen: string[] = [];
      let token: string | undefined;
      do {
        const page = await s.principals.list({ pageSize: 7, pageToken: token });
        expect(page.items.length).toBeLessThanOrEqual(7);
        seen.push(...page.items.map((p) => p.name));
        token = page.nextPageToken;
      } while (token);
      expect(seen).toEqual(Array.from({ length: 25 }, (_, i) => `p${String(i).padStart(2, "0")}`));
      expect((await s.principals.list({ pageSize: 0 })).items).toHaveLength(25);
    } finally {
      await s.close();
    }
  });

  it("hides a transaction's uncommitted rows from readers outside it until commit", async () => {
    const s = await open();
    try {
      const g = gate();
      const inside = gate();
      const tx = s.db.transaction(async () => {
        await s.principals.create({ name: "pending", kind: "user", roles: [], policy, createdAtMs: 1 });
        expect(await s.principals.get("pending")).toBeDefined(); // the transaction sees its own write
        inside.open();
        await g.wait;
      });
      await inside.wait;
      expect(await s.principals.get("pending")).toBeUndefined();
      expect((await s.principals.list({ pageSize: 10 })).items).toEqual([]);
      g.open();
      await tx;
      expect(await s.principals.get("pending")).toBeDefined();
    } finally {
      await s.close();
    }
  });

  it("joins a nested transaction to the outer one: an inner failure the outer rethrows rolls back all", async () => {
    const s = await open();
    try {
      await expect(
        s.db.transaction(async () => {
          await s.principals.create({ name: "outer", kind: "user", roles: [], policy, createdAtMs: 1 });
          await s.db.transaction(async () => {
            await s.principals.create({ name: "inner", kind: "user", roles: [], policy, createdAtMs: 1 });
          });
          throw new Error("after inner");
        }),
      ).rejects.toThrow("after inner");
      expect(await s.principals.get("outer")).toBeUndefined();
      expect(await s.principals.get("inner")).toBeUndefined();
      const ok = await s.db.transaction(async (tx) => tx.run("UPDATE principals SET kind = 'x'"));
      expect(ok).toEqual({ changes: 0 });
    } finally {
      await s.close();
    }
  });

  it.runIf(backend.name === "sqlite")("serialises async transaction bodies on SQLite (no lost updates) and keeps the file owner-only", async () => {
    const opts = await backend.fresh();
    const s = await Storage.open(opts);
    try {
      await s.db.run("CREATE TABLE counter (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)");
      await s.db.run("INSERT INTO counter (id, v) VALUES (1, 0)");
      await Promise.all(
        Array.from({ length: 20 }, () =>
          s.db.transaction(async (tx) => {
            const { v } = (await tx.get<{ v: number }>("SELECT v FROM counter WHERE id = 1"))!;
            await new Promise((r) => setTimeout(r, 1)); // another body would run here if not serialised
            await tx.run("UPDATE counter SET v = ? WHERE id = 1", [v + 1]);
          }),
        ),
      );
      expect(await s.db.get("SELECT v FROM counter WHERE id = 1")).toEqual({ v: 20 });
      expect(statSync(opts.sqlitePath!).mode & 0o777).toBe(0o600);
    } finally {
      await s.close();
    }
  });

  it("gives the same answer for unknown, expired and used join tokens, and refuses a duplicate", async () => {
    const s = await open();
    try {
      const now = Date.now();
      await s.joinTokens.create({ tokenHash: "used", hostId: "h", createdBy: "admin", expiresAtMs: now + 60_000 });
      await s.joinTokens.create({ tokenHash: "expired", hostId: "h", createdBy: "admin", expiresAtMs: now - 1 });
      await expect(s.joinTokens.create({ tokenHash: "used", hostId: "h2", createdBy: "admin", expiresAtMs: now })).rejects.toMatchObject({ status: "ALREADY_EXISTS" });
      expect(await s.joinTokens.redeem("used", now)).toEqual({ hostId: "h", createdBy: "admin" });
      const errors = await Promise.all(["used", "expired", "unknown"].map((h) => s.joinTokens.redeem(h, now).then(() => undefined, (e: TrustplaneError) => e)));
      for (const e of errors) expect(e).toBeInstanceOf(TrustplaneError);
      expect(new Set(errors.map((e) => `${e?.status}/${e?.reason}/${e?.message}`)).size).toBe(1);
      expect(errors[0]).toMatchObject({ status: "UNAUTHENTICATED", reason: "JOIN_TOKEN_INVALID" });
      expect(await s.joinTokens.purgeExpired(now)).toBe(1);
    } finally {
      await s.close();
    }
  });

  it("lets exactly one of two replicas accept a nonce, and one of many racing redeems win", async () => {
    const opts = await backend.fresh();
    const a = await Storage.open(opts);
    const b = await Storage.open(opts);
    try {
      const later = Date.now() + 60_000;
      for (let i = 0; i < 10; i++) {
        const n = randomBytes(16);
        const results = await Promise.all([a.nonces.remember(n, later), b.nonces.remember(n, later), a.nonces.remember(n, later)]);
        expect(results.filter(Boolean)).toHaveLength(1);
      }
      await a.joinTokens.create({ tokenHash: "race", hostId: "h", createdBy: "admin", expiresAtMs: later });
      const redeems = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => (i % 2 ? a : b).joinTokens.redeem("race", Date.now())));
      expect(redeems.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      expect(await a.nonces.purgeExpired(later + 1)).toBe(10);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("keeps the first of concurrent idempotent responses and purges old ones", async () => {
    const s = await open();
    try {
      await Promise.all(Array.from({ length: 5 }, (_, i) => s.idempotency.put("scope", "same", Buffer.from([i]), Buffer.from([i]))));
      const got = (await s.idempotency.get("scope", "same"))!;
      expect(Buffer.from(got.requestDigest)).toEqual(Buffer.from(got.response));
      expect(await s.idempotency.purgeCreatedBefore(Date.now() + 1)).toBe(1);
      expect(await s.idempotency.get("scope", "same")).toBeUndefined();
    } finally {
      await s.close();
    }
  });
});
