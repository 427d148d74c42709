// The agent's short-term token cache against the real authority: single-flight, refresh
// ahead of the clients' 5-minute threshold, stale serving when the authority is down,
// dropping an account when its long-term token is refused, and rotation races.
import { decodeJwt } from "jose";
import { describe, expect, it } from "vitest";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { CLIENT_EAGER_REFRESH_MS, TokenCache } from "../../server/src/token/agent/token-cache.js";
import { ALICE, authorityUpstream, createAuthority, manualClock, rawGet, startVm } from "./token-fixture.js";

const SA = "builder@acme.trustplane";

async function setup(options: { graceMs?: number } = {}) {
  const clock = manualClock();
  const auth = await createAuthority({ now: clock.now, graceMs: options.graceMs });
  const issued = await auth.longTermTokens.acquire({ principal: ALICE, serviceAccount: SA, scopes: ["storage.read", "storage.write"], hostId: "h1", vmId: "v1" });
  const held = { token: issued.token! };
  const { upstream, state } = authorityUpstream(auth.exchange);
  const refused: string[] = [];
  const cache = new TokenCache({
    upstream,
    vmId: "v1",
    hostId: "h1",
    credential: (a) => (a === SA ? held.token : undefined),
    onRefused: (a, e) => refused.push(`${a}:${e.reason}`),
    now: clock.now,
  });
  return { clock, auth, issued, held, upstream, state, cache, refused };
}

describe("token cache", () => {
  it("collapses 100 concurrent misses into one upstream mint (direct and over HTTP)", async () => {
    const { cache, state } = await setup();
    state.delayMs = 30;
    const results = await Promise.all(Array.from({ length: 100 }, () => cache.getAccessToken(SA, [])));
    expect(state.accessMints).toBe(1);
    expect(new Set(results.map((r) => r.token)).size).toBe(1);

    const auth = await createAuthority();
    const vm = await startVm(auth, { accounts: [{ serviceAccount: SA, scopes: ["storage.read"] }] });
    try {
      vm.state.delayMs = 50;
      const responses = await Promise.all(Array.from({ length: 100 }, () => rawGet(vm.port, "/computeMetadata/v1/instance/service-accounts/default/token")));
      expect(responses.every((r) => r.status === 200)).toBe(true);
      expect(new Set(responses.map((r) => JSON.parse(r.body).access_token)).size).toBe(1);
      expect(vm.state.accessMints).toBe(1);
    } finally {
      await vm.stop();
    }
  });

  it("never hands out a token with 5 minutes or less left while the authority answers, and refreshes ahead", async () => {
    const { cache, clock, state } = await setup();
    let worst = Infinity;
    // Two hours of requests every 20 s: every token served outlives the clients' threshold.
    for (let t = 0; t < 2 * 3600_000; t += 20_000) {
      const got = await cache.getAccessToken(SA, []);
      worst = Math.min(worst, got.expiresAtMs - clock.now());
      expect(got.stale).toBe(false);
      clock.advance(20_000);
      await new Promise((r) => setImmediate(r)); // let a background refresh land
    }
    expect(worst).toBeGreaterThan(CLIENT_EAGER_REFRESH_MS);
    // One-hour tokens refreshed ~10 minutes early: about one mint per 50 minutes.
    expect(state.accessMints).toBeGreaterThanOrEqual(2);
    expect(state.accessMints).toBeLessThanOrEqual(4);
  });

  it("keeps scope sets and identity audiences apart", async () => {
    const { cache } = await setup();
    const all = await cache.getAccessToken(SA, []);
    const read = await cache.getAccessToken(SA, ["storage.read"]);
    expect(decodeJwt(all.token).scope).toBe("storage.read storage.write");
    expect(decodeJwt(read.token).scope).toBe("storage.read");
    const a = await cache.getIdentityToken(SA, "aud-a", "standard");
    const b = await cache.getIdentityToken(SA, "aud-b", "standard");
    expect(decodeJwt(a.token).aud).toBe("aud-a");
    expect(decodeJwt(b.token).aud).toBe("aud-b");
    expect(cache.size()).toBe(4);
  });

  it("serves a still-valid cached token when the authority is unreachable, reports it, and stops at expiry", async () => {
    const { cache, clock, state } = await setup();
    const first = await cache.getAccessToken(SA, []);
    state.down = true;
    clock.advance(56 * 60_000); // 4 minutes left: past the refresh point
    const stale = await cache.getAccessToken(SA, []);
    expect(stale).toMatchObject({ token: first.token, stale: true });
    expect(cache.health()).toMatchObject({ upstreamReachable: false, servingStale: true, lastUpstreamError: "AUTHORITY_UNREACHABLE" });
    clock.advance(4 * 60_000);
    await expect(Promise.resolve(cache.getAccessToken(SA, []))).rejects.toMatchObject({ status: "UNAVAILABLE" });
    state.down = false;
    const fresh = await cache.getAccessToken(SA, []);
    expect(fresh.stale).toBe(false);
    expect(fresh.token).not.toBe(first.token);
    expect(cache.health()).toMatchObject({ upstreamReachable: true, servingStale: false });
  });

  it("does not serve stale tokens past a refusal: a revoked long-term token drops the account at once", async () => {
    const { cache, clock, auth, issued, refused, state } = await setup();
    await cache.getAccessToken(SA, []);
    await cache.getAccessToken(SA, ["storage.read"]);
    await cache.getIdentityToken(SA, "aud", "standard");
    expect(cache.size()).toBe(3);
    await auth.longTermTokens.revoke(issued.accessor);
    clock.advance(51 * 60_000); // 9 minutes left: served, with a refresh behind it
    await cache.getAccessToken(SA, []);
    await new Promise((r) => setTimeout(r, 10));
    // The background refresh was refused: every token of the account is gone at once.
    expect(cache.size()).toBe(0);
    const e = await Promise.resolve(cache.getAccessToken(SA, [])).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(TrustplaneError);
    expect(e).toMatchObject({ status: "UNAUTHENTICATED", reason: "LONG_TERM_TOKEN_REVOKED" });
    expect(cache.size()).toBe(0);
    expect(refused).toEqual([`${SA}:LONG_TERM_TOKEN_REVOKED`, `${SA}:LONG_TERM_TOKEN_REVOKED`]);
    expect(state.accessMints).toBe(4);
  });

  it("a mint racing a rotation retries once with the newest secret instead of failing", async () => {
    const { cache, auth, held, state } = await setup({ graceMs: 0 });
    state.delayMs = 30;
    const pending = cache.getAccessToken(SA, []);
    // While the call is in flight the authority rotates with no grace, and the push lands.
    const rotated = await auth.longTermTokens.acquire({ principal: ALICE, serviceAccount: SA, scopes: ["storage.read", "storage.write"], hostId: "h2", vmId: "v2" });
    held.token = rotated.token!;
    const got = await pending;
    expect(decodeJwt(got.token).sub).toBe(SA);
    expect(state.accessMints).toBe(2);
  });

  it("a dropped account's in-flight mint is not cached afterwards", async () => {
    const { cache, state } = await setup();
    state.delayMs = 30;
    const pending = cache.getAccessToken(SA, []);
    cache.dropAccount(SA);
    await pending;
    expect(cache.size()).toBe(0);
  });

  it("bounds the number of cached tokens (fresh identity audiences cannot grow the host without limit)", async () => {
    const auth = await createAuthority();
    const { upstream, state } = authorityUpstream(auth.exchange);
    const held = await auth.longTermTokens.acquire({ principal: ALICE, serviceAccount: "reader@acme.trustplane", scopes: ["storage.read"], hostId: "h1", vmId: "v1" });
    const cache = new TokenCache({ upstream, vmId: "v1", hostId: "h1", credential: () => held.token, maxEntries: 8 });
    for (let i = 0; i < 20; i++) await cache.getIdentityToken("reader@acme.trustplane", `aud-${i}`, "standard");
    expect(cache.size()).toBe(8);
    // The newest ones stay.
    const before = state.identityMints;
    await cache.getIdentityToken("reader@acme.trustplane", "aud-19", "standard");
    expect(state.identityMints).toBe(before);
  });

  it("200 VMs refreshing together cost one upstream mint per (VM, account, scopes) per refresh period", async () => {
    const clock = manualClock();
    const auth = await createAuthority({ now: clock.now });
    const { upstream, state } = authorityUpstream(auth.exchange);
    const caches: TokenCache[] = [];
    // The token is shared per (account, scopes): each new host rotates it and the hub pushes
    // the new version to the hosts already holding it.
    const secrets = new Map<string, string>();
    for (let i = 0; i < 200; i++) {
      const host = `h${i}`;
      auth.hub.subscribe(host, (u) => {
        if (u.kind === "ROTATED" && u.token) secrets.set(host, u.token);
      });
      const issued = await auth.longTermTokens.acquire({ principal: ALICE, serviceAccount: SA, scopes: ["storage.read"], hostId: host, vmId: `v${i}` });
      secrets.set(host, issued.token!);
      caches.push(new TokenCache({ upstream, vmId: `v${i}`, hostId: host, credential: () => secrets.get(host), now: clock.now }));
    }
    const burst = () => Promise.all(caches.flatMap((c) => Array.from({ length: 5 }, () => c.getAccessToken(SA, []))));
    await burst();
    expect(state.accessMints).toBe(200);
    clock.advance(51 * 60_000); // every VM crosses its refresh point at once
    await burst();
    await new Promise((r) => setTimeout(r, 50));
    expect(state.accessMints).toBe(400);
    await burst();
    expect(state.accessMints).toBe(400);
  });

  it("refuses margins at or below the clients' eager-refresh threshold", () => {
    const base = { upstream: { mintAccessToken: async () => ({ token: "", expiresAtMs: 0 }), mintIdentityToken: async () => ({ token: "", expiresAtMs: 0 }) }, vmId: "v", hostId: "h", credential: () => undefined };
    expect(() => new TokenCache({ ...base, minRemainingMs: CLIENT_EAGER_REFRESH_MS })).toThrow(TrustplaneError);
    expect(() => new TokenCache({ ...base, minRemainingMs: 7 * 60_000, refreshAheadMs: 6 * 60_000 })).toThrow(TrustplaneError);
  });
});
