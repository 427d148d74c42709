// The token area's SQL stores on SQLite and PostgreSQL: signing keys sealed at rest (no private
// part readable in the row, wrong key refused, kid bound as AAD), service accounts and
// services, long-term tokens by hash / previous hash / live pair, and the used-request ledger.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { Storage } from "../../server/src/runtime/storage/storage.js";
import { LongTermTokens, hashLongTermToken, scopeKey, type LongTermTokenRecord } from "../../server/src/token/authority/long-term-tokens.js";
import { ServiceAccountRegistry } from "../../server/src/token/authority/service-accounts.js";
import { SigningKeyRing } from "../../server/src/token/authority/signing-keys.js";
import { SqlLongTermTokenStore } from "../../server/src/token/store/sql-long-term-token-store.js";
import { SqlServiceAccountStore } from "../../server/src/token/store/sql-service-account-store.js";
import { SqlSigningKeyStore, deriveAtRestKey } from "../../server/src/token/store/sql-signing-key-store.js";
import { backends } from "../support/backends.js";

function record(overrides: Partial<LongTermTokenRecord> = {}): LongTermTokenRecord {
  return {
    accessor: `tpla_${randomBytes(8).toString("hex")}`,
    serviceAccount: "sa@p.trustplane",
    scopes: ["a.read"],
    tokenHash: hashLongTermToken(`tplt_${randomBytes(32).toString("base64url")}`),
    version: 1,
    hostIds: ["h1"],
    holders: [{ vmId: "vm1", hostId: "h1" }],
    createdAtMs: 1,
    issuedAtMs: 1,
    expiresAtMs: Date.now() + 60_000,
    ...overrides,
  };
}

describe.each(backends())("token SQL stores ($name)", (backend) => {
  let storage: Storage;

  beforeAll(async () => {
    storage = await Storage.open(await backend.fresh());
  });

  afterAll(async () => {
    await storage?.close();
    await backend.cleanup();
  });

  it("keeps signing keys sealed at rest and reopens the same ring", async () => {
    const key = deriveAtRestKey(randomBytes(32));
    const ring = await SigningKeyRing.open({ store: new SqlSigningKeyStore(storage.db, key), maxTokenTtlSeconds: 600 });
    const first = ring.current().kid;
    const second = await ring.rotate();
    const rows = await storage.db.all<{ kid: string; public_jwk: string; sealed_private_jwk: Uint8Array }>("SELECT * FROM token_signing_keys");
    expect(rows.map((r) => r.kid).sort()).toEqual([first, second].sort());
    for (const r of rows) {
      expect(r.public_jwk).not.toContain('"d"');
      expect(Buffer.from(r.sealed_private_jwk).toString("latin1")).not.toContain('"d"');
    }
    const reopened = await SigningKeyRing.open({ store: new SqlSigningKeyStore(storage.db, key), maxTokenTtlSeconds: 600 });
    expect(reopened.current().kid).toBe(second);
    expect(reopened.jwks().keys.map((k) => k.kid).sort()).toEqual([first, second].sort());

    const wrong = await new SqlSigningKeyStore(storage.db, deriveAtRestKey(randomBytes(32))).load().catch((e: unknown) => e);
    expect(wrong).toBeInstanceOf(TrustplaneError);
    expect((wrong as TrustplaneError).reason).toBe("SIGNING_KEY_UNREADABLE");

    // Swapping one key's sealed blob onto another kid is detected (kid is the AAD).
    const [a, b] = rows;
    await storage.db.run("UPDATE token_signing_keys SET sealed_private_jwk = ? WHERE kid = ?", [Buffer.from(b!.sealed_private_jwk), a!.kid]);
    const swapped = await new SqlSigningKeyStore(storage.db, key).load().catch((e: unknown) => e);
    expect((swapped as TrustplaneError).reason).toBe("SIGNING_KEY_UNREADABLE");
    await storage.db.run("DELETE FROM token_signing_keys");
  });

  it("lets replicas sharing the store converge on keys another replica rotated", async () => {
    const key = deriveAtRestKey(randomBytes(32));
    const a = await SigningKeyRing.open({ store: new SqlSigningKeyStore(storage.db, key), maxTokenTtlSeconds: 600 });
    const b = await SigningKeyRing.open({ store: new SqlSigningKeyStore(storage.db, key), maxTokenTtlSeconds: 600 });
    expect(b.current().kid).toBe(a.current().kid);
    const fresh = await a.rotate();
    expect(b.jwks().keys.map((k) => k.kid)).not.toContain(fresh);
    await b.refresh();
    expect(b.current().kid).toBe(fresh);
    expect(b.jwks().keys.map((k) => k.kid).sort()).toEqual(a.jwks().keys.map((k) => k.kid).sort());
    // Both rotating at once: after a refresh one key signs on both, the other is retiring.
    const fromA = await a.rotate();
    const fromB = await b.rotate();
    await a.refresh();
    await b.refresh();
    expect(a.current().kid).toBe(b.current().kid);
    const loser = a.current().kid === fromA ? fromB : fromA;
    const stored = (await new SqlSigningKeyStore(storage.db, key).load()).find((k) => k.kid === loser)!;
    expect(stored.retireAtMs).toBeGreaterThan(0);
    await storage.db.run("DELETE FROM token_signing_keys");
  });

  it("an announced key reaches the other replica's JWKS before it signs on either", async () => {
    const key = deriveAtRestKey(randomBytes(32));
    let t = Date.now();
    const now = () => t;
    const a = await SigningKeyRing.open({ store: new SqlSigningKeyStore(storage.db, key), maxTokenTtlSeconds: 600, now });
    const b = await SigningKeyRing.open({ store: new SqlSigningKeyStore(storage.db, key), maxTokenTtlSeconds: 600, now });
    const old = a.current().kid;
    const next = await a.announce(30_000);
    await b.refresh();
    expect(b.jwks().keys.map((k) => k.kid)).toContain(next);
    expect([a.current().kid, b.current().kid]).toEqual([old, old]);
    t += 30_000;
    expect([a.current().kid, b.current().kid]).toEqual([next, next]);
    await b.refresh();
    const stored = (await new SqlSigningKeyStore(storage.db, key).load()).find((k) => k.kid === old)!;
    expect(stored.retireAtMs).toBe(t + 600_000);
    await storage.db.run("DELETE FROM token_signing_keys");
  });

  it("stores accounts with their ACL and services", async () => {
    const registry = new ServiceAccountRegistry(new SqlServiceAccountStore(storage.db));
    await registry.defineService({ name: "svc", audience: "https://svc", scopes: ["svc.read", "svc.write"] });
    await registry.defineService({ name: "svc", audience: "https://svc2", scopes: ["svc.read"] });
    expect(await registry.audiencesForScopes(["svc.read"])).toEqual(["https://svc2"]);
    await registry.createAccount({ email: "x@p.trustplane" });
    await expect(registry.createAccount({ email: "x@p.trustplane" })).rejects.toMatchObject({ reason: "ACCOUNT_EXISTS" });
    await registry.createAccount({ email: "narrow@p.trustplane", allowedScopes: ["svc.read", "svc.read"] });
    expect((await registry.get("narrow@p.trustplane")).allowedScopes).toEqual(["svc.read"]);
    await expect(registry.createAccount({ email: "typo@p.trustplane", allowedScopes: ["svc.raed"] })).rejects.toMatchObject({ reason: "SCOPE_UNKNOWN", field: "allowed_scopes" });
    await registry.delete("narrow@p.trustplane");
    await registry.grant("x@p.trustplane", "alice");
    expect(await registry.canActAs("alice", "x@p.trustplane")).toBe(true);
    expect(await registry.canActAs("bob", "x@p.trustplane")).toBe(false);
    await registry.revokeGrant("x@p.trustplane", "alice");
    expect(await registry.canActAs("alice", "x@p.trustplane")).toBe(false);
    expect((await registry.list()).map((a) => a.email)).toEqual(["x@p.trustplane"]);
    await registry.delete("x@p.trustplane");
    expect(await registry.list()).toEqual([]);
  });

  it("finds long-term tokens by current and previous hash, keeps one live token per pair, lists by host", async () => {
    const store = new SqlLongTermTokenStore(storage.db);
    const r = record();
    await store.insert(r);
    expect(await store.findByHash(r.tokenHash)).toEqual(r);
    expect(await store.findByAccessor(r.accessor)).toEqual(r);
    expect(await store.findActive(r.serviceAccount, scopeKey(r.scopes))).toEqual(r);
    // A second live token for the same pair is refused by the unique partial index.
    await expect(store.insert(record())).rejects.toMatchObject({ reason: "LONG_TERM_TOKEN_RACE" });

    const rotated = { ...r, previousTokenHash: r.tokenHash, previousValidUntilMs: 99, tokenHash: hashLongTermToken("tplt_new"), version: 2, hostIds: ["h1", "h2"] };
    await store.update(rotated, r);
    // A writer that read the token before this rotation loses the compare-and-set.
    await expect(store.update({ ...r, holders: [...r.holders, { vmId: "vm9", hostId: "h1" }] }, r)).rejects.toMatchObject({ status: "ABORTED", reason: "LONG_TERM_TOKEN_CONFLICT" });
    expect((await store.findByHash(r.tokenHash))?.version).toBe(2);
    expect((await store.findByHash(rotated.tokenHash))?.version).toBe(2);
    expect((await store.listByHost("h2")).map((x) => x.accessor)).toEqual([r.accessor]);
    expect(await store.listByHost("h")).toEqual([]);

    // Same version and secret, but another holder set: still a conflict.
    await expect(store.update({ ...rotated, revokedAtMs: 5 }, { ...rotated, holders: [] })).rejects.toMatchObject({ reason: "LONG_TERM_TOKEN_CONFLICT" });
    await store.update({ ...rotated, revokedAtMs: 5, revokeReason: "TEST" }, rotated);
    expect(await store.findActive(r.serviceAccount, scopeKey(r.scopes))).toBeUndefined();
    await store.insert(record()); // revoked rows free the pair
    const missing = record({ accessor: "tpla_missing" });
    await expect(store.update(missing, missing)).rejects.toMatchObject({ reason: "LONG_TERM_TOKEN_UNKNOWN" });
  });

  it("remembers used user requests per (request, account), bound to one VM", async () => {
    const store = new SqlLongTermTokenStore(storage.db);
    const use = { digest: randomBytes(32).toString("hex"), serviceAccount: "a@p", vmId: "vm1", principal: "alice" };
    expect(await store.markRequestUsed(use, 1)).toBe(true);
    expect(await store.markRequestUsed(use, 2)).toBe(false);
    expect(await store.markRequestUsed({ ...use, serviceAccount: "b@p" }, 3)).toBe(true);
    expect(await store.markRequestUsed({ ...use, serviceAccount: "c@p", vmId: "vm2" }, 4)).toBe(false);
    // Inside a transaction a refused use must not poison it (PostgreSQL aborts on errors).
    await storage.db.transaction(async () => {
      expect(await store.markRequestUsed(use, 5)).toBe(false);
      await storage.db.get("SELECT 1 AS one");
    });
  });

  it("runs LongTermTokens end to end on the SQL stores", async () => {
    const registry = new ServiceAccountRegistry(new SqlServiceAccountStore(storage.db));
    await registry.defineService({ name: "lt", audience: "https://lt", scopes: ["lt.read", "lt.write"] });
    await registry.createAccount({ email: "lt@p.trustplane", actors: ["alice"] });
    const tokens = new LongTermTokens({ store: new SqlLongTermTokenStore(storage.db), accounts: registry });
    const issued = await tokens.acquire({ principal: "alice", serviceAccount: "lt@p.trustplane", scopes: ["lt.read"], hostId: "h1", vmId: "vm1" });
    const auth = await tokens.authenticate(issued.token!, "h1");
    expect(auth.record.accessor).toBe(issued.accessor);
    await expect(tokens.authenticate(issued.token!, "h2")).rejects.toMatchObject({ reason: "HOST_MISMATCH" });
    const renewed = await tokens.renew(issued.token!, "h1");
    expect(renewed.version).toBe(2);
    expect((await tokens.authenticate(issued.token!, "h1")).presentedVersion).toBe(1); // grace
    await tokens.revoke(issued.accessor);
    await expect(tokens.authenticate(renewed.token!, "h1")).rejects.toMatchObject({ reason: "LONG_TERM_TOKEN_REVOKED" });
  });
});
