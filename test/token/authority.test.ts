// Token authority: signing key ring, minter, verifier, service accounts, long-term tokens,
// exchange and update hub — each security check here fails a test when removed.
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, SignJWT, calculateJwkThumbprint, UnsecuredJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { AccessTokenMinter } from "../../server/src/token/authority/access-token-minter.js";
import { verifyAccessToken, verifyIdentityToken } from "../../server/src/token/authority/access-token-verifier.js";
import { LongTermTokens, hashLongTermToken } from "../../server/src/token/authority/long-term-tokens.js";
import { TokenExchange } from "../../server/src/token/authority/token-exchange.js";
import { TokenRecordCache } from "../../server/src/token/authority/token-record-cache.js";
import { InMemorySigningKeyStore, SigningKeyRing } from "../../server/src/token/authority/signing-keys.js";
import { TokenUpdateHub, type BridgedUpdate, type DeliveredUpdate, type TokenUpdateBridge } from "../../server/src/token/authority/token-update-hub.js";
import { ALICE, createAuthority, ISSUER, manualClock, startJwksServer, STORAGE_AUD, QUEUE_AUD } from "./token-fixture.js";

async function rejects(p: Promise<unknown>, status: string, reason: string) {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e, `expected ${status} ${reason}`).toBeInstanceOf(TrustplaneError);
  expect({ status: (e as TrustplaneError).status, reason: (e as TrustplaneError).reason }).toEqual({ status, reason });
}

describe("signing key ring", () => {
  it("publishes Ed25519 public keys with RFC 7638 kids and keeps rotated keys until their last token expires", async () => {
    const clock = manualClock();
    const store = new InMemorySigningKeyStore();
    const ring = await SigningKeyRing.open({ store, maxTokenTtlSeconds: 3600, now: clock.now });
    const first = ring.current().kid;
    const [jwk] = ring.jwks().keys;
    expect(jwk).toMatchObject({ kty: "OKP", crv: "Ed25519", alg: "EdDSA", use: "sig", kid: first });
    expect(jwk).not.toHaveProperty("d");
    expect(await calculateJwkThumbprint({ kty: "OKP", crv: "Ed25519", x: jwk!.x! })).toBe(first);

    clock.advance(1000);
    const second = await ring.rotate();
    expect(ring.current().kid).toBe(second);
    expect(ring.jwks().keys.map((k) => k.kid).sort()).toEqual([first, second].sort());

    clock.advance(3600_000 - 1);
    await ring.prune();
    expect(ring.jwks().keys.map((k) => k.kid)).toContain(first);
    clock.advance(1);
    expect(ring.jwks().keys.map((k) => k.kid)).toEqual([second]);
    expect(await ring.prune()).toEqual([first]);

    // Reopening from the store gives the same current key.
    const reopened = await SigningKeyRing.open({ store, maxTokenTtlSeconds: 3600, now: clock.now });
    expect(reopened.current().kid).toBe(second);
  });

  it("announces the next key in the JWKS before it signs, then retires the old one like a rotation", async () => {
    const clock = manualClock();
    const ring = await SigningKeyRing.open({ store: new InMemorySigningKeyStore(), maxTokenTtlSeconds: 3600, now: clock.now });
    const old = ring.current().kid;
    const next = await ring.announce(90_000);
    // Published, not signing: a verifier that fetched the JWKS now already knows it.
    expect(ring.jwks().keys.map((k) => k.kid).sort()).toEqual([old, next].sort());
    expect(ring.current().kid).toBe(old);
    expect(ring.pending()).toEqual({ kid: next, activatesAtMs: clock.now() + 90_000 });
    clock.advance(89_999);
    expect(ring.current().kid).toBe(old);
    clock.advance(1);
    expect(ring.current().kid).toBe(next);
    expect(ring.pending()).toBeUndefined();
    expect(ring.currentActivatedAtMs()).toBe(clock.now());
    // The old key keeps verifying until its last token (1 h) has expired.
    clock.advance(3600_000 - 1);
    expect(ring.jwks().keys.map((k) => k.kid)).toContain(old);
    clock.advance(1);
    expect(await ring.prune()).toEqual([old]);
  });
});

describe("minter and resource-server verification", () => {
  let auth: Awaited<ReturnType<typeof createAuthority>>;
  let jwks: Awaited<ReturnType<typeof startJwksServer>>;
  let keySet: ReturnType<typeof createRemoteJWKSet>;
  const vm = { vmId: "vm-1", hostId: "host-a" };

  beforeAll(async () => {
    auth = await createAuthority();
    jwks = await startJwksServer(auth.keys);
    keySet = createRemoteJWKSet(jwks.url, { cooldownDuration: 0 });
  });
  afterAll(() => jwks.close());

  it("mints an access token with the required claims that verifies against the remote JWKS", async () => {
    const t = await auth.minter.mintAccessToken({ serviceAccount: "builder@acme.trustplane", scopes: ["storage.write", "storage.read"], audience: STORAGE_AUD, ...vm, ttlSeconds: 600 });
    expect(t.expiresIn).toBeGreaterThanOrEqual(599);
    expect(decodeProtectedHeader(t.jwt)).toMatchObject({ alg: "EdDSA", typ: "at+jwt", kid: auth.keys.current().kid });
    const claims = await verifyAccessToken(t.jwt, { keys: keySet, issuer: ISSUER, audience: STORAGE_AUD }, ["storage.read"]);
    expect(claims).toMatchObject({ iss: ISSUER, sub: "builder@acme.trustplane", aud: STORAGE_AUD, scope: "storage.read storage.write", tp_vm: "vm-1", tp_host: "host-a" });
    expect(claims.exp - claims.iat).toBe(600);
    expect(claims.jti).toMatch(/^[A-Za-z0-9_-]{22}$/);
  });

  it("refuses a lifetime above the configured maximum and a maximum above one hour", async () => {
    await rejects(auth.minter.mintAccessToken({ serviceAccount: "builder@acme.trustplane", scopes: ["storage.read"], audience: STORAGE_AUD, ...vm, ttlSeconds: 3601 }), "INVALID_ARGUMENT", "TTL_OUT_OF_RANGE");
    const lower = new AccessTokenMinter({ keys: auth.keys, issuer: ISSUER, maxTtlSeconds: 900 });
    await rejects(lower.mintAccessToken({ serviceAccount: "builder@acme.trustplane", scopes: ["storage.read"], audience: STORAGE_AUD, ...vm, ttlSeconds: 901 }), "INVALID_ARGUMENT", "TTL_OUT_OF_RANGE");
    expect(decodeJwt((await lower.mintAccessToken({ serviceAccount: "builder@acme.trustplane", scopes: ["storage.read"], audience: STORAGE_AUD, ...vm })).jwt)).toSatisfy(
      (c: { exp?: number; iat?: number }) => c.exp! - c.iat! === 900,
    );
    expect(() => new AccessTokenMinter({ keys: auth.keys, issuer: ISSUER, maxTtlSeconds: 7200 })).toThrow(TrustplaneError);
  });

  it("rejects a token signed by another key (even with our kid)", async () => {
    const { privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
    const forged = await new SignJWT({ scope: "storage.read", tp_vm: "vm-1", tp_host: "host-a" })
      .setProtectedHeader({ alg: "EdDSA", typ: "at+jwt", kid: auth.keys.current().kid })
      .setIssuer(ISSUER).setSubject("builder@acme.trustplane").setAudience(STORAGE_AUD).setIssuedAt().setExpirationTime("10m").setJti("x")
      .sign(privateKey);
    await rejects(verifyAccessToken(forged, { keys: keySet, issuer: ISSUER, audience: STORAGE_AUD }), "UNAUTHENTICATED", "TOKEN_SIGNATURE_INVALID");
    const unsigned = new UnsecuredJWT({ scope: "storage.read" }).setIssuer(ISSUER).setAudience(STORAGE_AUD).setIssuedAt().setExpirationTime("10m").encode();
    await rejects(verifyAccessToken(unsigned, { keys: keySet, issuer: ISSUER, audience: STORAGE_AUD }), "UNAUTHENTICATED", "TOKEN_CLAIM_INVALID");
  });

  it("rejects an expired token, a wrong audience, an identity token used as access token, and a missing scope", async () => {
    const past = new AccessTokenMinter({ keys: auth.keys, issuer: ISSUER, now: () => Date.now() - 2 * 3600_000 });
    const expired = await past.mintAccessToken({ serviceAccount: "builder@acme.trustplane", scopes: ["storage.read"], audience: STORAGE_AUD, ...vm });
    await rejects(verifyAccessToken(expired.jwt, { keys: keySet, issuer: ISSUER, audience: STORAGE_AUD }), "UNAUTHENTICATED", "TOKEN_EXPIRED");

    const good = await auth.minter.mintAccessToken({ serviceAccount: "builder@acme.trustplane", scopes: ["storage.read"], audience: STORAGE_AUD, ...vm });
    await rejects(verifyAccessToken(good.jwt, { keys: keySet, issuer: ISSUER, audience: QUEUE_AUD }), "UNAUTHENTICATED", "TOKEN_CLAIM_INVALID");
    await rejects(verifyAccessToken(good.jwt, { keys: keySet, issuer: "https://evil.test", audience: STORAGE_AUD }), "UNAUTHENTICATED", "TOKEN_CLAIM_INVALID");
    await rejects(verifyAccessToken(good.jwt, { keys: keySet, issuer: ISSUER, audience: STORAGE_AUD }, ["storage.write"]), "PERMISSION_DENIED", "INSUFFICIENT_SCOPE");

    const id = await auth.minter.mintIdentityToken({ serviceAccount: "builder@acme.trustplane", audience: STORAGE_AUD, ...vm });
    await rejects(verifyAccessToken(id.jwt, { keys: keySet, issuer: ISSUER, audience: STORAGE_AUD }), "UNAUTHENTICATED", "TOKEN_CLAIM_INVALID");
  });

  it("rejects a validly signed token that is not typed as an access token (at+jwt)", async () => {
    const k = auth.keys.current();
    const sign = (typ: string) =>
      new SignJWT({ scope: "storage.read", tp_vm: "v", tp_host: "h", email: "builder@acme.trustplane" })
        .setProtectedHeader({ alg: "EdDSA", typ, kid: k.kid })
        .setIssuer(ISSUER).setSubject("builder@acme.trustplane").setAudience(STORAGE_AUD).setIssuedAt().setExpirationTime("10m").setJti("j")
        .sign(k.privateKey);
    await verifyAccessToken(await sign("at+jwt"), { keys: keySet, issuer: ISSUER, audience: STORAGE_AUD });
    await rejects(verifyAccessToken(await sign("JWT"), { keys: keySet, issuer: ISSUER, audience: STORAGE_AUD }), "UNAUTHENTICATED", "TOKEN_CLAIM_INVALID");
    await rejects(verifyIdentityToken(await sign("at+jwt"), { keys: keySet, issuer: ISSUER, audience: STORAGE_AUD }), "UNAUTHENTICATED", "TOKEN_CLAIM_INVALID");
  });

  it("rejects a validly signed token whose lifetime exceeds one hour", async () => {
    const k = auth.keys.current();
    const long = await new SignJWT({ scope: "storage.read", tp_vm: "v", tp_host: "h" })
      .setProtectedHeader({ alg: "EdDSA", typ: "at+jwt", kid: k.kid })
      .setIssuer(ISSUER).setSubject("s").setAudience(STORAGE_AUD).setIssuedAt().setExpirationTime("2h").setJti("j")
      .sign(k.privateKey);
    await rejects(verifyAccessToken(long, { keys: keySet, issuer: ISSUER, audience: STORAGE_AUD }), "UNAUTHENTICATED", "TOKEN_CLAIM_INVALID");
  });

  it("mints identity tokens as GCE does, with instance facts for format=full", async () => {
    const std = await auth.minter.mintIdentityToken({ serviceAccount: "builder@acme.trustplane", audience: "https://my-app.example", ...vm });
    const claims = await verifyIdentityToken(std.jwt, { keys: keySet, issuer: ISSUER, audience: "https://my-app.example" });
    expect(claims).toMatchObject({ email: "builder@acme.trustplane", email_verified: true, azp: "builder@acme.trustplane", sub: "builder@acme.trustplane" });
    expect(claims).not.toHaveProperty("google");
    const full = await auth.minter.mintIdentityToken({
      serviceAccount: "builder@acme.trustplane", audience: "x", ...vm, format: "full",
      instance: { instanceId: "vm-1", instanceName: "n", projectId: "p", projectNumber: "1", zone: "z" },
    });
    expect(decodeJwt(full.jwt)).toMatchObject({ google: { compute_engine: { instance_id: "vm-1", project_id: "p", zone: "z" } } });
    await rejects(auth.minter.mintIdentityToken({ serviceAccount: "builder@acme.trustplane", audience: "", ...vm }), "INVALID_ARGUMENT", "AUDIENCE_EMPTY");
  });

  it("keeps verifying tokens of a rotated signing key", async () => {
    const before = await auth.minter.mintAccessToken({ serviceAccount: "builder@acme.trustplane", scopes: ["storage.read"], audience: STORAGE_AUD, ...vm });
    await auth.keys.rotate();
    const after = await auth.minter.mintAccessToken({ serviceAccount: "builder@acme.trustplane", scopes: ["storage.read"], audience: STORAGE_AUD, ...vm });
    expect(decodeProtectedHeader(after.jwt).kid).not.toBe(decodeProtectedHeader(before.jwt).kid);
    await verifyAccessToken(before.jwt, { keys: keySet, issuer: ISSUER, audience: STORAGE_AUD });
    await verifyAccessToken(after.jwt, { keys: keySet, issuer: ISSUER, audience: STORAGE_AUD });
  });
});

describe("service accounts", () => {
  it("answers canActAs from the ACL and keeps scopes unique per service", async () => {
    const { accounts } = await createAuthority();
    expect(await accounts.canActAs(ALICE, "builder@acme.trustplane")).toBe(true);
    expect(await accounts.canActAs("user:mallory", "builder@acme.trustplane")).toBe(false);
    await accounts.grant("builder@acme.trustplane", "user:bob");
    expect(await accounts.canActAs("user:bob", "builder@acme.trustplane")).toBe(true);
    await accounts.revokeGrant("builder@acme.trustplane", "user:bob");
    expect(await accounts.canActAs("user:bob", "builder@acme.trustplane")).toBe(false);
    await rejects(accounts.defineService({ name: "other", audience: "x", scopes: ["storage.read"] }), "ALREADY_EXISTS", "SCOPE_TAKEN");
    expect(await accounts.audiencesForScopes(["queue.publish", "storage.read"])).toEqual([QUEUE_AUD, STORAGE_AUD].sort());
    await rejects(accounts.audiencesForScopes(["nope"]), "INVALID_ARGUMENT", "SCOPE_UNKNOWN");
    await rejects(accounts.createAccount({ email: "Bad/Name@x" }), "INVALID_ARGUMENT", "ACCOUNT_EMAIL_INVALID");
  });
});

describe("long-term tokens", () => {
  const SA = "builder@acme.trustplane";

  it("issues a prefixed 256-bit secret stored only as its hash, to a principal on the ACL", async () => {
    const { longTermTokens, ltStore } = await createAuthority();
    await rejects(longTermTokens.acquire({ principal: "user:mallory", serviceAccount: SA, scopes: ["storage.read"], hostId: "h1", vmId: "v1" }), "PERMISSION_DENIED", "NOT_ON_ACL");
    const issued = await longTermTokens.acquire({ principal: ALICE, serviceAccount: SA, scopes: ["storage.write", "storage.read"], hostId: "h1", vmId: "v1" });
    expect(issued.token).toMatch(/^tplt_[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(issued.token!.slice(5), "base64url")).toHaveLength(32);
    expect(issued.accessor).toMatch(/^tpla_/);
    expect(issued.scopes).toEqual(["storage.read", "storage.write"]);
    const stored = await ltStore.findByAccessor(issued.accessor);
    expect(JSON.stringify(stored)).not.toContain(issued.token!.slice(5));
    expect(stored!.tokenHash).toBe(hashLongTermToken(issued.token!));
    const { record } = await longTermTokens.authenticate(issued.token!, "h1");
    expect(record.accessor).toBe(issued.accessor);
  });

  it("refuses malformed, unknown, wrong-host and revoked tokens", async () => {
    const { longTermTokens } = await createAuthority();
    const issued = await longTermTokens.acquire({ principal: ALICE, serviceAccount: SA, scopes: ["storage.read"], hostId: "h1", vmId: "v1" });
    await rejects(longTermTokens.authenticate("tplt_short", "h1"), "UNAUTHENTICATED", "LONG_TERM_TOKEN_MALFORMED");
    await rejects(longTermTokens.authenticate("tplt_" + "A".repeat(43), "h1"), "UNAUTHENTICATED", "LONG_TERM_TOKEN_UNKNOWN");
    await rejects(longTermTokens.authenticate(issued.token!, "h2"), "PERMISSION_DENIED", "HOST_MISMATCH");
    await longTermTokens.revoke(issued.accessor);
    await rejects(longTermTokens.authenticate(issued.token!, "h1"), "UNAUTHENTICATED", "LONG_TERM_TOKEN_REVOKED");
  });

  it("expires a version that is never renewed", async () => {
    const clock = manualClock();
    const { longTermTokens } = await createAuthority({ now: clock.now, ttlMs: 60_000 });
    const issued = await longTermTokens.acquire({ principal: ALICE, serviceAccount: SA, scopes: ["storage.read"], hostId: "h1", vmId: "v1" });
    clock.advance(60_001);
    await rejects(longTermTokens.authenticate(issued.token!, "h1"), "UNAUTHENTICATED", "LONG_TERM_TOKEN_EXPIRED");
  });

  it("shares one token per (account, scope set): same host reuses it, a new host gets a rotation pushed to all", async () => {
    const clock = manualClock();
    const { longTermTokens, hub } = await createAuthority({ now: clock.now, graceMs: 30_000 });
    const seen: DeliveredUpdate[] = [];
    hub.subscribe("h1", (u) => seen.push(u));
    const a = await longTermTokens.acquire({ principal: ALICE, serviceAccount: SA, scopes: ["storage.read"], hostId: "h1", vmId: "v1" });
    const b = await longTermTokens.acquire({ principal: ALICE, serviceAccount: SA, scopes: ["storage.read"], hostId: "h1", vmId: "v2", hostHasVersion: a.version });
    expect(b.accessor).toBe(a.accessor);
    expect(b.token).toBeUndefined();
    const other = await longTermTokens.acquire({ principal: ALICE, serviceAccount: SA, scopes: ["storage.read", "storage.write"], hostId: "h1", vmId: "v1" });
    expect(other.accessor).not.toBe(a.accessor);

    const c = await longTermTokens.acquire({ principal: ALICE, serviceAccount: SA, scopes: ["storage.read"], hostId: "h2", vmId: "v3" });
    expect(c.accessor).toBe(a.accessor);
    expect(c.version).toBe(2);
    expect(seen).toMatchObject([{ kind: "ROTATED", accessor: a.accessor, version: 2, token: c.token }]);
    // The previous secret still works during the grace period, then is refused as rotated out.
    expect((await longTermTokens.authenticate(a.token!, "h1")).presentedVersion).toBe(1);
    clock.advance(30_001);
    await rejects(longTermTokens.authenticate(a.token!, "h1"), "UNAUTHENTICATED", "LONG_TERM_TOKEN_ROTATED");
    await longTermTokens.authenticate(c.token!, "h1");
    await longTermTokens.authenticate(c.token!, "h2");
  });

  it("renews with a new version and revokes when the last holder VM is released", async () => {
    const { longTermTokens, hub } = await createAuthority();
    const seen: DeliveredUpdate[] = [];
    hub.subscribe("h1", (u) => seen.push(u));
    const a = await longTermTokens.acquire({ principal: ALICE, serviceAccount: SA, scopes: ["storage.read"], hostId: "h1", vmId: "v1" });
    await longTermTokens.acquire({ principal: ALICE, serviceAccount: SA, scopes: ["storage.read"], hostId: "h1", vmId: "v2", hostHasVersion: 1 });
    const renewed = await longTermTokens.renew(a.token!, "h1");
    expect(renewed.version).toBe(2);
    expect(renewed.token).not.toBe(a.token);
    expect(await longTermTokens.release({ accessor: a.accessor, vmId: "v1" })).toEqual({ revoked: false });
    await longTermTokens.authenticate(renewed.token!, "h1");
    expect(await longTermTokens.release({ accessor: a.accessor, vmId: "v2" })).toEqual({ revoked: true });
    await rejects(longTermTokens.authenticate(renewed.token!, "h1"), "UNAUTHENTICATED", "LONG_TERM_TOKEN_REVOKED");
    // v1's release leaves v2 on the host: only v1's process is told to drop the token.
    expect(seen.map((u) => u.kind)).toEqual(["ROTATED", "ACCOUNTS_CHANGED", "REVOKED"]);
    expect(seen[1]).toMatchObject({ vmId: "v1", accessor: a.accessor, accounts: [] });
    expect(seen[2]).toMatchObject({ reason: "LAST_HOLDER_GONE", accessor: a.accessor });
    // After revocation a new VM gets a fresh token (new accessor).
    const fresh = await longTermTokens.acquire({ principal: ALICE, serviceAccount: SA, scopes: ["storage.read"], hostId: "h1", vmId: "v9" });
    expect(fresh.accessor).not.toBe(a.accessor);
  });

  it("re-delivers to a VM that holds the token (a rotation pushed to every bound host), and to nobody else", async () => {
    const { longTermTokens, hub, ltStore } = await createAuthority();
    const seen: DeliveredUpdate[] = [];
    hub.subscribe("h2", (u) => seen.push(u));
    const a = await longTermTokens.acquire({ principal: ALICE, serviceAccount: SA, scopes: ["storage.read"], hostId: "h1", vmId: "v1" });
    await longTermTokens.acquire({ principal: ALICE, serviceAccount: SA, scopes: ["storage.read"], hostId: "h2", vmId: "v2" });
    expect((await ltStore.findByAccessor(a.accessor))!.holders).toEqual([
      { vmId: "v1", hostId: "h1", principal: ALICE },
      { vmId: "v2", hostId: "h2", principal: ALICE },
    ]);
    // Neither another VM on the host nor the VM on another host is a holder.
    await rejects(longTermTokens.redeliver({ accessor: a.accessor, hostId: "h1", vmId: "v9" }), "FAILED_PRECONDITION", "NOT_A_HOLDER");
    await rejects(longTermTokens.redeliver({ accessor: a.accessor, hostId: "h2", vmId: "v1" }), "FAILED_PRECONDITION", "NOT_A_HOLDER");
    const again = await longTermTokens.redeliver({ accessor: a.accessor, hostId: "h1", vmId: "v1" });
    expect(again).toMatchObject({ accessor: a.accessor, version: 3, principal: ALICE });
    expect(again.token).toMatch(/^tplt_/);
    await longTermTokens.authenticate(again.token!, "h1");
    // The other host holding the token follows the rotation.
    expect(seen.at(-1)).toMatchObject({ kind: "ROTATED", accessor: a.accessor, version: 3 });
    await longTermTokens.revoke(a.accessor);
    await rejects(longTermTokens.redeliver({ accessor: a.accessor, hostId: "h1", vmId: "v1" }), "UNAUTHENTICATED", "LONG_TERM_TOKEN_REVOKED");
  });

  it("re-delivers only while the user who made the hold may still act as the account", async () => {
    const { longTermTokens, accounts, ltStore } = await createAuthority();
    const a = await longTermTokens.acquire({ principal: ALICE, serviceAccount: SA, scopes: ["storage.read"], hostId: "h1", vmId: "v1" });
    await accounts.revokeGrant(SA, ALICE);
    await rejects(longTermTokens.redeliver({ accessor: a.accessor, hostId: "h1", vmId: "v1" }), "PERMISSION_DENIED", "NOT_ON_ACL");
    await accounts.grant(SA, ALICE);
    expect((await longTermTokens.redeliver({ accessor: a.accessor, hostId: "h1", vmId: "v1" })).version).toBe(2);
    // A hold recorded before holds named their user vouches for nothing.
    const stored = (await ltStore.findByAccessor(a.accessor))!;
    await ltStore.update({ ...stored, holders: [{ vmId: "v1", hostId: "h1" }] }, stored);
    await rejects(longTermTokens.redeliver({ accessor: a.accessor, hostId: "h1", vmId: "v1" }), "FAILED_PRECONDITION", "HOLDER_PRINCIPAL_UNKNOWN");
  });

  it("narrows scopes only (RFC 6749 refresh rule)", async () => {
    const { longTermTokens } = await createAuthority();
    const a = await longTermTokens.acquire({ principal: ALICE, serviceAccount: SA, scopes: ["storage.read", "storage.write"], hostId: "h1", vmId: "v1" });
    const { record } = await longTermTokens.authenticate(a.token!, "h1");
    expect(longTermTokens.narrowScopes(record)).toEqual(["storage.read", "storage.write"]);
    expect(longTermTokens.narrowScopes(record, ["storage.read"])).toEqual(["storage.read"]);
    expect(() => longTermTokens.narrowScopes(record, ["storage.read", "queue.publish"])).toThrow(/exceed/);
    try {
      longTermTokens.narrowScopes(record, ["queue.publish"]);
    } catch (e) {
      expect((e as TrustplaneError).reason).toBe("SCOPE_ESCALATION");
    }
  });
});

describe("token exchange", () => {
  it("mints for a holder VM with narrowed scopes and the services' audiences; refuses others", async () => {
    const { longTermTokens, exchange } = await createAuthority();
    const a = await longTermTokens.acquire({ principal: ALICE, serviceAccount: "builder@acme.trustplane", scopes: ["storage.read", "queue.publish"], hostId: "h1", vmId: "v1" });
    const t = await exchange.accessToken({ longTermToken: a.token!, hostId: "h1", vmId: "v1" });
    expect(decodeJwt(t.jwt)).toMatchObject({ aud: [QUEUE_AUD, STORAGE_AUD].sort(), scope: "queue.publish storage.read", tp_vm: "v1", tp_host: "h1" });
    const narrow = await exchange.accessToken({ longTermToken: a.token!, hostId: "h1", vmId: "v1", scopes: ["storage.read"] });
    expect(decodeJwt(narrow.jwt)).toMatchObject({ aud: STORAGE_AUD, scope: "storage.read" });
    await rejects(exchange.accessToken({ longTermToken: a.token!, hostId: "h1", vmId: "v1", scopes: ["storage.write"] }), "PERMISSION_DENIED", "SCOPE_ESCALATION");
    await rejects(exchange.accessToken({ longTermToken: a.token!, hostId: "h1", vmId: "v-other" }), "PERMISSION_DENIED", "VM_NOT_HOLDER");
    await rejects(exchange.accessToken({ longTermToken: a.token!, hostId: "h2", vmId: "v1" }), "PERMISSION_DENIED", "HOST_MISMATCH");
    const id = await exchange.identityToken({ longTermToken: a.token!, hostId: "h1", vmId: "v1", audience: "aud-x", format: "full" });
    expect(decodeJwt(id.jwt)).toMatchObject({ aud: "aud-x", email: "builder@acme.trustplane", google: { compute_engine: { instance_id: "v1" } } });
  });

  it("stops minting for a deleted account", async () => {
    const { longTermTokens, exchange, accounts } = await createAuthority();
    const a = await longTermTokens.acquire({ principal: ALICE, serviceAccount: "reader@acme.trustplane", scopes: ["storage.read"], hostId: "h1", vmId: "v1" });
    await accounts.delete("reader@acme.trustplane");
    await rejects(exchange.accessToken({ longTermToken: a.token!, hostId: "h1", vmId: "v1" }), "NOT_FOUND", "ACCOUNT_NOT_FOUND");
  });

  it("revokes and pushes every token of a deleted account", async () => {
    const { longTermTokens, accounts, hub } = await createAuthority();
    const seen: DeliveredUpdate[] = [];
    hub.subscribe("h1", (u) => seen.push(u));
    const a = await longTermTokens.acquire({ principal: ALICE, serviceAccount: "reader@acme.trustplane", scopes: ["storage.read"], hostId: "h1", vmId: "v1" });
    const b = await longTermTokens.acquire({ principal: ALICE, serviceAccount: "reader@acme.trustplane", scopes: ["storage.read", "storage.write"], hostId: "h1", vmId: "v2" });
    const other = await longTermTokens.acquire({ principal: ALICE, serviceAccount: "builder@acme.trustplane", scopes: ["storage.read"], hostId: "h1", vmId: "v3" });
    await accounts.delete("reader@acme.trustplane");
    expect((await longTermTokens.revokeAccount("reader@acme.trustplane")).sort()).toEqual([a.accessor, b.accessor].sort());
    expect(seen.filter((u) => u.kind === "REVOKED").map((u) => [u.accessor, (u as { reason: string }).reason]).sort()).toEqual(
      [
        [a.accessor, "ACCOUNT_DELETED"],
        [b.accessor, "ACCOUNT_DELETED"],
      ].sort(),
    );
    await rejects(longTermTokens.authenticate(a.token!, "h1"), "UNAUTHENTICATED", "LONG_TERM_TOKEN_REVOKED");
    await longTermTokens.authenticate(other.token!, "h1");
  });

  it("refuses scopes outside the account's allowed_scopes", async () => {
    const { longTermTokens, accounts } = await createAuthority();
    await accounts.createAccount({ email: "narrow@acme.trustplane", actors: [ALICE], allowedScopes: ["storage.read"] });
    await longTermTokens.acquire({ principal: ALICE, serviceAccount: "narrow@acme.trustplane", scopes: ["storage.read"], hostId: "h1", vmId: "v1" });
    await rejects(
      longTermTokens.acquire({ principal: ALICE, serviceAccount: "narrow@acme.trustplane", scopes: ["storage.read", "storage.write"], hostId: "h1", vmId: "v2" }),
      "PERMISSION_DENIED",
      "SCOPE_NOT_ALLOWED",
    );
    // No allowed_scopes: any declared scope, as before.
    await longTermTokens.acquire({ principal: ALICE, serviceAccount: "builder@acme.trustplane", scopes: ["storage.write", "queue.publish"], hostId: "h1", vmId: "v3" });
  });
});

describe("the mint path's record cache", () => {
  it("refuses a revoked token at once, sees a new holder at once, and forgets what changed behind the hub's back within its lifetime", async () => {
    const clock = manualClock();
    const auth = await createAuthority({ now: clock.now });
    const cache = new TokenRecordCache({ ttlMs: 5_000, now: clock.now });
    // A second LongTermTokens over the same store and hub, with the cache: what the mint path uses.
    const cached = new LongTermTokens({ store: auth.ltStore, accounts: auth.accounts, hub: auth.hub, cache, now: clock.now });
    const a = await auth.longTermTokens.acquire({ principal: ALICE, serviceAccount: "builder@acme.trustplane", scopes: ["storage.read"], hostId: "h1", vmId: "v1" });
    await cached.authenticate(a.token!, "h1");
    expect((await cached.authenticate(a.token!, "h1")).fromCache).toBe(true);
    // Another VM joins (no push for that): the cached record lacks it, storage decides.
    await auth.longTermTokens.acquire({ principal: ALICE, serviceAccount: "builder@acme.trustplane", scopes: ["storage.read"], hostId: "h1", vmId: "v2", hostHasVersion: a.version });
    const exchange = new TokenExchange({ longTermTokens: cached, accounts: auth.accounts, minter: auth.minter });
    expect((await exchange.accessToken({ longTermToken: a.token!, hostId: "h1", vmId: "v2" })).jwt).toBeTruthy();
    // Revoked elsewhere: the push drops the entry before the next mint.
    await auth.longTermTokens.revoke(a.accessor);
    await rejects(cached.authenticate(a.token!, "h1"), "UNAUTHENTICATED", "LONG_TERM_TOKEN_REVOKED");

    // A change no push announced (written to storage directly) lasts at most the lifetime.
    const b = await auth.longTermTokens.acquire({ principal: ALICE, serviceAccount: "reader@acme.trustplane", scopes: ["storage.read"], hostId: "h1", vmId: "v3" });
    await cached.authenticate(b.token!, "h1");
    const row = (await auth.ltStore.findByAccessor(b.accessor))!;
    await auth.ltStore.update({ ...row, revokedAtMs: clock.now(), revokeReason: "TEST" }, row);
    expect((await cached.authenticate(b.token!, "h1")).fromCache).toBe(true);
    clock.advance(5_000);
    await rejects(cached.authenticate(b.token!, "h1"), "UNAUTHENTICATED", "LONG_TERM_TOKEN_REVOKED");
    // A gap (lost NOTIFYs) drops everything.
    const c = await auth.longTermTokens.acquire({ principal: ALICE, serviceAccount: "reader@acme.trustplane", scopes: ["storage.write"], hostId: "h1", vmId: "v4" });
    await cached.authenticate(c.token!, "h1");
    auth.hub.markGap();
    expect((await cached.authenticate(c.token!, "h1")).fromCache).toBe(false);
  });
});

describe("token update hub", () => {
  it("delivers per host in order, resumes from a seq and reports gaps", async () => {
    const hub = new TokenUpdateHub({ backlogSize: 2 });
    const got: number[] = [];
    const stop = hub.subscribe("h1", (u) => got.push(u.seq));
    for (let i = 0; i < 3; i++) await hub.publish({ kind: "REVOKED", hostId: "h1", accessor: `a${i}`, serviceAccount: "s", version: 1, reason: "r" });
    await hub.publish({ kind: "REVOKED", hostId: "h2", accessor: "x", serviceAccount: "s", version: 1, reason: "r" });
    stop();
    expect(got).toEqual([1, 2, 3]);
    const replay: number[] = [];
    let gap = false;
    hub.subscribe("h1", (u) => replay.push(u.seq), { afterSeq: 2 });
    expect(replay).toEqual([3]);
    hub.subscribe("h1", () => undefined, { afterSeq: 0, onGap: () => (gap = true) });
    expect(gap).toBe(true);
  });

  it("seals rotated secrets before they cross a bridge and refuses plaintext from one", async () => {
    const sent: BridgedUpdate[] = [];
    let remote: ((m: BridgedUpdate) => void) | undefined;
    const bridge: TokenUpdateBridge = {
      publish: async (m) => void sent.push(m),
      onRemote: (l) => ((remote = l), () => undefined),
    };
    const hub = new TokenUpdateHub();
    hub.attachBridge(bridge, { seal: async (hostId, token) => `sealed(${hostId}):${token.length}` });
    const local: DeliveredUpdate[] = [];
    hub.subscribe("h1", (u) => local.push(u));
    await hub.publish({ kind: "ROTATED", hostId: "h1", accessor: "a", serviceAccount: "s", scopes: ["x"], version: 2, token: "tplt_secret", expiresAtMs: 1 });
    expect(JSON.stringify(sent)).not.toContain("tplt_secret");
    expect(sent[0]!.update).toMatchObject({ sealedToken: "sealed(h1):11" });
    expect(local[0]).toMatchObject({ token: "tplt_secret" });
    remote!({ origin: "other", update: { kind: "ROTATED", hostId: "h1", accessor: "a", serviceAccount: "s", scopes: ["x"], version: 3, token: "tplt_injected", expiresAtMs: 1 } });
    remote!({ origin: "other", update: { kind: "ROTATED", hostId: "h1", accessor: "a", serviceAccount: "s", scopes: ["x"], version: 3, sealedToken: "sealed", expiresAtMs: 1 } });
    expect(local.map((u) => u.kind === "ROTATED" && u.version)).toEqual([2, 3]);
    expect(local[1]).not.toHaveProperty("token", "tplt_injected");
    // The backlog keeps no plaintext.
    const replay: DeliveredUpdate[] = [];
    hub.subscribe("h1", (u) => replay.push(u), { afterSeq: 0 });
    expect(JSON.stringify(replay)).not.toContain("tplt_secret");
  });
});
