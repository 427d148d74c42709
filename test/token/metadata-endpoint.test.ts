// The VM's GCE-compatible metadata endpoint over real HTTP on loopback, backed by a real
// authority: tree and formats, ETag and wait_for_change, and each refusal (403/404/429).
import { createRemoteJWKSet, decodeJwt } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyAccessToken, verifyIdentityToken } from "../../server/src/token/authority/access-token-verifier.js";
import { ISSUER, STORAGE_AUD, createAuthority, grant, rawGet, startJwksServer, startVm, type Authority } from "./token-fixture.js";

const SA = "builder@acme.trustplane";
const SA2 = "reader@acme.trustplane";
const V1 = "/computeMetadata/v1";

describe("metadata endpoint", () => {
  let auth: Authority;
  let vm: Awaited<ReturnType<typeof startVm>>;
  let jwks: Awaited<ReturnType<typeof startJwksServer>>;
  let keys: ReturnType<typeof createRemoteJWKSet>;

  beforeAll(async () => {
    auth = await createAuthority();
    jwks = await startJwksServer(auth.keys);
    keys = createRemoteJWKSet(jwks.url);
    vm = await startVm(auth, { accounts: [{ serviceAccount: SA, scopes: ["storage.read", "storage.write"] }] });
  });
  afterAll(async () => {
    await vm.stop();
    await jwks.close();
  });

  it("serves a token that verifies at a resource server, with GCE's headers", async () => {
    const r = await rawGet(vm.port, `${V1}/instance/service-accounts/default/token`);
    expect(r.status).toBe(200);
    expect(r.headers["metadata-flavor"]).toBe("Google");
    expect(r.headers.server).toBe("Metadata Server for VM");
    expect(r.headers.etag).toMatch(/^[0-9a-f]{16}$/);
    expect(r.headers["content-type"]).toBe("application/json");
    const body = JSON.parse(r.body) as { access_token: string; expires_in: number; token_type: string };
    expect(Object.keys(body)).toEqual(["access_token", "expires_in", "token_type"]);
    expect(body.token_type).toBe("Bearer");
    // Every token handed out outlives the clients' 5-minute eager-refresh threshold.
    expect(body.expires_in).toBeGreaterThan(300);
    const claims = await verifyAccessToken(body.access_token, { keys, issuer: ISSUER, audience: STORAGE_AUD }, ["storage.write"]);
    expect(claims).toMatchObject({ sub: SA, tp_vm: "vm-1", tp_host: "host-a" });
    // The account's email path gives the same cached token.
    const again = await rawGet(vm.port, `${V1}/instance/service-accounts/${SA}/token`);
    expect(JSON.parse(again.body).access_token).toBe(body.access_token);
  });

  it("narrows with ?scopes= and refuses scopes beyond the grant with 403", async () => {
    const r = await rawGet(vm.port, `${V1}/instance/service-accounts/default/token?scopes=storage.read`);
    expect(r.status).toBe(200);
    expect(decodeJwt(JSON.parse(r.body).access_token).scope).toBe("storage.read");
    const minted = vm.state.accessMints;
    const bad = await rawGet(vm.port, `${V1}/instance/service-accounts/default/token?scopes=storage.read,queue.publish`);
    expect(bad.status).toBe(403);
    expect(bad.headers["metadata-flavor"]).toBe("Google");
    expect(bad.body).toMatch(/exceed/);
    expect(vm.state.accessMints).toBe(minted);
  });

  it("refuses a missing or wrong Metadata-Flavor with 403", async () => {
    const path = `${V1}/instance/service-accounts/default/token`;
    const variants: Record<string, string>[] = [{}, { "Metadata-Flavor": "google" }, { "Metadata-Flavor": "Googl" }, { "X-Google-Metadata-Request": "True" }];
    for (const headers of variants) {
      const r = await rawGet(vm.port, path, headers);
      expect(r.status, JSON.stringify(headers)).toBe(403);
      expect(r.body).not.toMatch(/access_token/);
    }
    expect((await rawGet(vm.port, `${V1}/project/project-id`, {})).status).toBe(403);
  });

  it("refuses requests carrying X-Forwarded-For (SSRF) with 403", async () => {
    const r = await rawGet(vm.port, `${V1}/instance/service-accounts/default/token`, { "Metadata-Flavor": "Google", "X-Forwarded-For": "10.0.0.9" });
    expect(r.status).toBe(403);
    expect(r.body).toMatch(/X-Forwarded-For/);
    expect(r.body).not.toMatch(/access_token/);
    const empty = await rawGet(vm.port, `${V1}/project/project-id`, { "Metadata-Flavor": "Google", "X-Forwarded-For": "" });
    expect(empty.status).toBe(403);
  });

  it("answers 404 for an account the VM does not have and for unknown paths", async () => {
    for (const p of [
      `${V1}/instance/service-accounts/${SA2}/token`,
      `${V1}/instance/service-accounts/nobody@x/email`,
      `${V1}/instance/service-accounts/${SA2}/identity?audience=x`,
      `${V1}/instance/nothing`,
      `${V1}/instance/service-accounts/default/email/`,
      `${V1}/instance/service-accounts/..%2F..%2Fproject/email`,
      `/computeMetadata/v2/instance/id`,
    ]) {
      expect((await rawGet(vm.port, p)).status, p).toBe(404);
    }
  });

  it("serves the directory tree, leaves, alt=json|text and recursive like GCE", async () => {
    expect((await rawGet(vm.port, "/")).body).toBe("computeMetadata/\n");
    expect((await rawGet(vm.port, `${V1}/`)).body).toBe("instance/\nproject/\n");
    expect((await rawGet(vm.port, `${V1}/instance/service-accounts/`)).body).toBe(`${SA}/\ndefault/\n`);
    expect((await rawGet(vm.port, `${V1}/instance/service-accounts/default/`)).body).toBe("aliases\nemail\nidentity\nscopes\ntoken\n");
    expect((await rawGet(vm.port, `${V1}/instance/service-accounts/default/email`)).body).toBe(SA);
    expect((await rawGet(vm.port, `${V1}/instance/service-accounts/default/scopes`)).body).toBe("storage.read\nstorage.write\n");
    expect((await rawGet(vm.port, `${V1}/instance/service-accounts/default/aliases`)).body).toBe("default\n");
    expect((await rawGet(vm.port, `${V1}/instance/service-accounts/default/scopes?alt=json`)).body).toBe('["storage.read","storage.write"]');
    expect((await rawGet(vm.port, `${V1}/instance/id`)).body).toBe("vm-1");
    expect((await rawGet(vm.port, `${V1}/instance/hostname`)).body).toBe("vm-1.local");
    expect((await rawGet(vm.port, `${V1}/instance/zone`)).body).toBe("projects/4242/zones/local-a");
    expect((await rawGet(vm.port, `${V1}/project/project-id`)).body).toBe("acme");
    expect((await rawGet(vm.port, `${V1}/project/numeric-project-id`)).body).toBe("4242");
    const rec = await rawGet(vm.port, `${V1}/instance/service-accounts/default/?recursive=true`);
    expect(rec.headers["content-type"]).toBe("application/json");
    expect(JSON.parse(rec.body)).toEqual({ aliases: ["default"], email: SA, scopes: ["storage.read", "storage.write"] });
    const inst = JSON.parse((await rawGet(vm.port, `${V1}/instance/?recursive=true`)).body);
    expect(inst).toMatchObject({ id: "vm-1", serviceAccounts: { default: { email: SA }, [SA]: { email: SA } } });
    expect(JSON.stringify(inst)).not.toMatch(/token|eyJ/);
    expect(JSON.parse((await rawGet(vm.port, `${V1}/project/?recursive=true`)).body)).toEqual({ numericProjectId: "4242", projectId: "acme" });
    expect((await rawGet(vm.port, `${V1}/project/?recursive=true&alt=text`)).body).toBe("numericProjectId 4242\nprojectId acme\n");
    // The ETag follows the value, whatever the rendering.
    const a = await rawGet(vm.port, `${V1}/instance/service-accounts/?alt=json`);
    const b = await rawGet(vm.port, `${V1}/instance/service-accounts/`);
    expect(a.headers.etag).toBe(b.headers.etag);
    expect((await rawGet(vm.port, `${V1}/instance/id?alt=xml`)).status).toBe(400);
  });

  it("serves identity tokens for a caller-chosen audience, format=full with instance facts", async () => {
    const r = await rawGet(vm.port, `${V1}/instance/service-accounts/default/identity?audience=https://app.example&format=full`);
    expect(r.status).toBe(200);
    const claims = await verifyIdentityToken(r.body, { keys, issuer: ISSUER, audience: "https://app.example" });
    expect(claims).toMatchObject({ email: SA, google: { compute_engine: { instance_id: "vm-1", project_id: "acme" } } });
    expect((await rawGet(vm.port, `${V1}/instance/service-accounts/default/identity`)).status).toBe(400);
    expect((await rawGet(vm.port, `${V1}/instance/service-accounts/default/identity?audience=x&format=weird`)).status).toBe(400);
  });

  it("long-polls the account listing: last_etag, timeout_sec, and a wake-up when an account is added", async () => {
    const first = await rawGet(vm.port, `${V1}/instance/service-accounts/`);
    const etag = first.headers.etag as string;
    // A stale last_etag answers at once.
    const stale = await rawGet(vm.port, `${V1}/instance/service-accounts/?wait_for_change=true&last_etag=0000000000000000`);
    expect(stale.headers.etag).toBe(etag);
    // Nothing changes: the bounded timeout answers with the same value.
    const t0 = Date.now();
    const timedOut = await rawGet(vm.port, `${V1}/instance/service-accounts/?wait_for_change=true&last_etag=${etag}&timeout_sec=1`);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    expect(timedOut.headers.etag).toBe(etag);
    // An account added while waiting wakes the waiter with the new listing.
    const waiting = rawGet(vm.port, `${V1}/instance/service-accounts/?wait_for_change=true&last_etag=${etag}&timeout_sec=20`);
    await new Promise((r) => setTimeout(r, 100));
    const t1 = Date.now();
    await grant(auth, vm.vm, { serviceAccount: SA2, scopes: ["storage.read"], vmId: "vm-1", hostId: "host-a" });
    const woke = await waiting;
    expect(Date.now() - t1).toBeLessThan(2000);
    expect(woke.body).toBe(`${SA}/\ndefault/\n${SA2}/\n`);
    expect(woke.headers.etag).not.toBe(etag);
    expect((await rawGet(vm.port, `${V1}/instance/service-accounts/${SA2}/token`)).status).toBe(200);
    // Removal wakes too, and the account is gone at once.
    const waiting2 = rawGet(vm.port, `${V1}/instance/service-accounts/?wait_for_change=true&timeout_sec=20`);
    await new Promise((r) => setTimeout(r, 100));
    vm.vm.removeAccount(SA2);
    expect((await waiting2).body).toBe(`${SA}/\ndefault/\n`);
    expect((await rawGet(vm.port, `${V1}/instance/service-accounts/${SA2}/token`)).status).toBe(404);
    expect((await rawGet(vm.port, `${V1}/instance/service-accounts/default/token?wait_for_change=true`)).status).toBe(400);
  });

  it("revoking the long-term token makes the endpoint drop the account and its cached tokens", async () => {
    const other = await startVm(auth, { vmId: "vm-2", hostId: "host-b", accounts: [{ serviceAccount: SA2, scopes: ["storage.read"] }] });
    try {
      expect((await rawGet(other.port, `${V1}/instance/service-accounts/default/token`)).status).toBe(200);
      expect(other.vm.cache.size()).toBe(1);
      await auth.longTermTokens.revoke(other.grants[0]!.accessor);
      expect(other.vm.cache.size()).toBe(0);
      expect((await rawGet(other.port, `${V1}/instance/service-accounts/default/token`)).status).toBe(404);
      expect((await rawGet(other.port, `${V1}/instance/service-accounts/`)).body).toBe("");
    } finally {
      await other.stop();
    }
  });

  it("one VM's endpoint never serves another VM's account", async () => {
    const other = await startVm(auth, { vmId: "vm-3", hostId: "host-a", accounts: [{ serviceAccount: SA2, scopes: ["storage.read"] }] });
    try {
      expect((await rawGet(vm.port, `${V1}/instance/service-accounts/${SA2}/token`)).status).toBe(404);
      const t = JSON.parse((await rawGet(other.port, `${V1}/instance/service-accounts/default/token`)).body).access_token as string;
      expect(decodeJwt(t)).toMatchObject({ sub: SA2, tp_vm: "vm-3" });
    } finally {
      await other.stop();
    }
  });
});

describe("wait_for_change bounds", () => {
  it("caps timeout_sec and the number of concurrent waiters", async () => {
    const auth = await createAuthority();
    const vm = await startVm(auth, { accounts: [{ serviceAccount: SA, scopes: ["storage.read"] }], maxWaitSeconds: 1, maxWaiters: 1 });
    try {
      const t0 = Date.now();
      const long = rawGet(vm.port, `${V1}/instance/service-accounts/?wait_for_change=true&timeout_sec=3600`);
      await new Promise((r) => setTimeout(r, 100));
      expect((await rawGet(vm.port, `${V1}/instance/service-accounts/?wait_for_change=true&timeout_sec=5`)).status).toBe(429);
      expect((await long).status).toBe(200);
      expect(Date.now() - t0).toBeLessThan(2500);
      expect((await rawGet(vm.port, `${V1}/instance/service-accounts/?wait_for_change=true&timeout_sec=-1`)).status).toBe(400);
    } finally {
      await vm.stop();
    }
  });
});

describe("per-VM rate limit", () => {
  it("answers 429 with Retry-After once the bucket is empty", async () => {
    const auth = await createAuthority();
    const vm = await startVm(auth, { accounts: [{ serviceAccount: SA, scopes: ["storage.read"] }], rateLimit: { ratePerSecond: 1, burst: 5 } });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 8; i++) statuses.push((await rawGet(vm.port, `${V1}/instance/service-accounts/default/token`)).status);
      expect(statuses.slice(0, 5)).toEqual([200, 200, 200, 200, 200]);
      expect(statuses.slice(5)).toEqual([429, 429, 429]);
      const r = await rawGet(vm.port, `${V1}/project/project-id`);
      expect(r.status).toBe(429);
      expect(Number(r.headers["retry-after"])).toBeGreaterThanOrEqual(1);
      expect(vm.state.accessMints).toBe(1);
    } finally {
      await vm.stop();
    }
  });
});
