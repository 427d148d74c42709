// Real clients no one here wrote: the unmodified gcp-metadata@7 and google-auth-library@10,
// pointed at the VM's endpoint through their documented GCE_METADATA_HOST override, get
// tokens that a resource server verifies with jose's remote JWKS. Own process (vitest forks).
import { createRemoteJWKSet, decodeJwt } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyAccessToken, verifyIdentityToken } from "../../server/src/token/authority/access-token-verifier.js";
import { ISSUER, STORAGE_AUD, createAuthority, startJwksServer, startVm, type Authority } from "./token-fixture.js";

const SA = "builder@acme.trustplane";

describe("gcp-metadata and google-auth-library against the metadata endpoint", () => {
  let auth: Authority;
  let vm: Awaited<ReturnType<typeof startVm>>;
  let jwks: Awaited<ReturnType<typeof startJwksServer>>;
  let keys: ReturnType<typeof createRemoteJWKSet>;
  let gcpMetadata: typeof import("gcp-metadata");
  let gal: typeof import("google-auth-library");

  beforeAll(async () => {
    auth = await createAuthority();
    jwks = await startJwksServer(auth.keys);
    keys = createRemoteJWKSet(jwks.url);
    vm = await startVm(auth, { accounts: [{ serviceAccount: SA, scopes: ["storage.read", "storage.write"] }] });
    // The documented override, set before the libraries are loaded; nothing else points them here.
    process.env.GCE_METADATA_HOST = `127.0.0.1:${vm.port}`;
    delete process.env.GCE_METADATA_IP;
    delete process.env.METADATA_SERVER_DETECTION;
    delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
    delete process.env.GOOGLE_CLOUD_PROJECT;
    delete process.env.GCLOUD_PROJECT;
    gcpMetadata = await import("gcp-metadata");
    gal = await import("google-auth-library");
    gcpMetadata.resetIsAvailableCache();
  });
  afterAll(async () => {
    await vm.stop();
    await jwks.close();
  });

  it("gcp-metadata detects the endpoint and reads instance, project and account values", async () => {
    expect(await gcpMetadata.isAvailable()).toBe(true);
    expect(await gcpMetadata.instance("service-accounts/default/email")).toBe(SA);
    expect(await gcpMetadata.instance("hostname")).toBe("vm-1.local");
    expect(await gcpMetadata.project("project-id")).toBe("acme");
    expect(await gcpMetadata.instance({ property: "service-accounts/default/", params: { recursive: "true" } })).toEqual({
      aliases: ["default"],
      email: SA,
      scopes: ["storage.read", "storage.write"],
    });
    const token = (await gcpMetadata.instance({ property: "service-accounts/default/token", params: { scopes: "storage.read" } })) as {
      access_token: string;
      expires_in: number;
      token_type: string;
    };
    expect(token.token_type).toBe("Bearer");
    expect(token.expires_in).toBeGreaterThan(300);
    expect(decodeJwt(token.access_token).scope).toBe("storage.read");
  });

  it("gcp-metadata surfaces 403 for scope escalation and 404 for an unknown account", async () => {
    await expect(gcpMetadata.instance({ property: "service-accounts/default/token", params: { scopes: "queue.publish" } })).rejects.toMatchObject({
      status: 403,
    });
    await expect(gcpMetadata.instance("service-accounts/nobody@acme.trustplane/token")).rejects.toMatchObject({ status: 404 });
  });

  it("google-auth-library's GoogleAuth picks Compute credentials and its token verifies at a resource server", async () => {
    const googleAuth = new gal.GoogleAuth();
    const client = await googleAuth.getClient();
    expect(client).toBeInstanceOf(gal.Compute);
    expect(await googleAuth.getProjectId()).toBe("acme");
    const { token } = await client.getAccessToken();
    const claims = await verifyAccessToken(token!, { keys, issuer: ISSUER, audience: STORAGE_AUD }, ["storage.read", "storage.write"]);
    expect(claims).toMatchObject({ sub: SA, tp_vm: "vm-1", tp_host: "host-a" });
    // The client caches it: the token outlives its 5-minute eager refresh, so no second fetch.
    const before = vm.vm.cache.stats.hits + vm.vm.cache.stats.misses;
    expect((await client.getAccessToken()).token).toBe(token);
    expect(vm.vm.cache.stats.hits + vm.vm.cache.stats.misses).toBe(before);
    const credentials = await googleAuth.getCredentials();
    expect(credentials.client_email).toBe(SA);
  });

  it("google-auth-library's Compute client asks for narrowed scopes and is refused beyond the grant", async () => {
    const narrow = new gal.Compute({ scopes: ["storage.read"] });
    const { token } = await narrow.getAccessToken();
    await verifyAccessToken(token!, { keys, issuer: ISSUER, audience: STORAGE_AUD }, ["storage.read"]);
    await expect(verifyAccessToken(token!, { keys, issuer: ISSUER, audience: STORAGE_AUD }, ["storage.write"])).rejects.toMatchObject({
      reason: "INSUFFICIENT_SCOPE",
    });
    const greedy = new gal.Compute({ scopes: ["storage.read", "queue.publish"] });
    await expect(greedy.getAccessToken()).rejects.toMatchObject({ status: 403 });
    const stranger = new gal.Compute({ serviceAccountEmail: "reader@acme.trustplane" });
    await expect(stranger.getAccessToken()).rejects.toMatchObject({ status: 404 });
  });

  it("google-auth-library's ID token client gets an identity token for its audience", async () => {
    const googleAuth = new gal.GoogleAuth();
    const idClient = await googleAuth.getIdTokenClient("https://app.example");
    const headers = await idClient.getRequestHeaders();
    const authorization = headers instanceof Headers ? headers.get("authorization") : (headers as Record<string, string>).Authorization;
    expect(authorization).toMatch(/^Bearer /);
    const claims = await verifyIdentityToken(authorization!.slice(7), { keys, issuer: ISSUER, audience: "https://app.example" });
    expect(claims).toMatchObject({ email: SA, google: { compute_engine: { instance_id: "vm-1" } } });
  });
});
