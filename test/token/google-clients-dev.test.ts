// The unmodified gcp-metadata and google-auth-library packages against a real VM's
// authorization process on `trustplane dev` (not the in-process fixture): a sandbox VM created
// through VmService with a service account; access and ID tokens (format=full, instance facts
// from the VM manager's records) verify with jose's createRemoteJWKSet at the JWKS URL.
import { existsSync } from "node:fs";
import { createRemoteJWKSet } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "../../sdk/src/client/create-client.js";
import { TokenServiceService } from "../../sdk/src/gen/trustplane/token/v1/token.js";
import { VmServiceService, VmState } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { DEV_HOST_ID } from "../../server/src/processes/dev-process.js";
import { hostTokenManager } from "../../server/src/token/agent/token-agent-area.js";
import { verifyAccessToken, verifyIdentityToken } from "../../server/src/token/authority/access-token-verifier.js";
import { numericProjectId } from "../../server/src/token/instance-identity.js";
import { bwrapAvailable } from "../../server/src/vm/agent/drivers/sandbox/sandbox-driver.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";

const rootWithTools = bwrapAvailable() && process.getuid?.() === 0 && existsSync("/usr/bin/socat");
const SA = "crawler@proj.trustplane";
const AUD = "https://storage.test";

describe.skipIf(!rootWithTools)("Google's client libraries against a VM's authorization process on trustplane dev", () => {
  let env: DevEnv;
  let vms: ReturnType<typeof createClient<typeof VmServiceService>>;
  let vmId = "";
  let keys: ReturnType<typeof createRemoteJWKSet>;
  let issuer = "";
  let gcpMetadata: typeof import("gcp-metadata");
  let gal: typeof import("google-auth-library");

  beforeAll(async () => {
    env = await startDevEnv();
    const tokens = createClient(TokenServiceService, env.dev.server.address, { key: env.admin });
    vms = createClient(VmServiceService, env.dev.server.address, { key: env.admin });
    try {
      await tokens.defineService({ requestId: "svc", service: { service: "storage", audience: AUD, scopes: ["storage.read", "storage.write"] } });
      await tokens.createServiceAccount({ requestId: "sa", email: SA });
      await tokens.grantActAs({ requestId: "grant", email: SA, principal: "admin" });
      const jwks = await tokens.getJwks({});
      keys = createRemoteJWKSet(new URL(jwks.jwksUrl));
      issuer = jwks.issuer;
    } finally {
      tokens.close();
    }
    const { vm } = await vms.createVm({
      requestId: "vm",
      name: "crawler",
      image: "process",
      resources: { vcpus: 1, memoryMib: 128, diskGib: 0 },
      serviceAccounts: [{ email: SA, scopes: ["storage.read", "storage.write"] }],
      command: ["/bin/sh", "-c", "sleep 120"],
    });
    vmId = vm!.vmId;
    let endpoint: { port: number } | undefined;
    for (let i = 0; i < 400 && !endpoint; i++) {
      const p = hostTokenManager(DEV_HOST_ID)?.vm(vmId);
      if (p && p.heldVersion(SA) !== undefined) endpoint = p.endpoint();
      else await new Promise((r) => setTimeout(r, 50));
    }
    expect((await vms.getVm({ vmId })).vm!.state).toBe(VmState.VM_STATE_RUNNING);
    // The documented override, set before the libraries load; the same endpoint the guest
    // reaches at 169.254.169.254 (the sandbox relays its own namespace's address here).
    process.env.GCE_METADATA_HOST = `127.0.0.1:${endpoint!.port}`;
    for (const v of ["GCE_METADATA_IP", "METADATA_SERVER_DETECTION", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"]) delete process.env[v];
    gcpMetadata = await import("gcp-metadata");
    gal = await import("google-auth-library");
    gcpMetadata.resetIsAvailableCache();
  }, 60_000);

  afterAll(async () => {
    if (vmId) await vms.terminateVm({ requestId: "term", vmId }).catch(() => undefined);
    vms?.close();
    await env?.stop();
  });

  it("gcp-metadata reads the VM's own identity and account", async () => {
    expect(await gcpMetadata.isAvailable()).toBe(true);
    expect(await gcpMetadata.instance("id")).toBe(vmId);
    expect(await gcpMetadata.instance("service-accounts/default/email")).toBe(SA);
    expect(await gcpMetadata.project("project-id")).toBe("admin");
  });

  it("google-auth-library's Compute client gets an access token that verifies against the remote JWKS", async () => {
    const googleAuth = new gal.GoogleAuth();
    const client = await googleAuth.getClient();
    expect(client).toBeInstanceOf(gal.Compute);
    const { token } = await client.getAccessToken();
    const claims = await verifyAccessToken(token!, { keys, issuer, audience: AUD }, ["storage.read", "storage.write"]);
    expect(claims).toMatchObject({ sub: SA, tp_vm: vmId, tp_host: DEV_HOST_ID });
  });

  it("google-auth-library's ID token client (identity?format=full) gets instance facts from the VM manager's records", async () => {
    const googleAuth = new gal.GoogleAuth();
    const idClient = await googleAuth.getIdTokenClient("https://app.example");
    const headers = await idClient.getRequestHeaders();
    const authorization = headers instanceof Headers ? headers.get("authorization") : (headers as Record<string, string>).Authorization;
    expect(authorization).toMatch(/^Bearer /);
    const claims = await verifyIdentityToken(authorization!.slice(7), { keys, issuer, audience: "https://app.example" });
    expect(claims).toMatchObject({
      email: SA,
      tp_vm: vmId,
      google: { compute_engine: { instance_id: vmId, instance_name: "crawler", project_id: "admin", project_number: numericProjectId("admin"), zone: "local-a" } },
    });
    // The zone and project number agree with what the metadata endpoint tells the guest.
    expect(await gcpMetadata.instance("zone")).toBe(`projects/${numericProjectId("admin")}/zones/local-a`);
  });
});
