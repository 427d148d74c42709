// Tour flow for tokens (seed 000): an admin creates a service account and lets a user act as
// it; the user signs their VM create request; the VM manager (stand-in: the admin with a
// CA certificate as trustplane-server) gets a long-term token with that proof and attaches a
// stand-in VM on the dev agent; code "inside the VM" uses the unmodified gcp-metadata package
// to fetch a token and calls a resource server that verifies it against the JWKS URL with jose.
// Revoking the long-term token makes the next request fail.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { randomBytes } from "node:crypto";
import { generateSigningKey } from "../sdk/src/auth/index.js";
import { createClient } from "../sdk/src/client/create-client.js";
import { TrustplaneError } from "../sdk/src/errors.js";
import { SignedEnvelope } from "../sdk/src/gen/trustplane/auth/v1/auth.js";
import { AuthServiceService } from "../sdk/src/gen/trustplane/auth/v1/service.js";
import { TokenAgentServiceService, TokenServiceService } from "../sdk/src/gen/trustplane/token/v1/token.js";
import { signVmCreateRequest, verifyAccessToken } from "../sdk/src/token/index.js";
import { standaloneContext, type ExampleFlow, type TourContext } from "./tour-context.js";

const AUDIENCE = "https://inventory.example";

/** A tiny resource server: 200 with the caller's identity for a valid token, 401/403 otherwise. */
async function startResourceServer(jwksUrl: string, issuer: string) {
  const server = http.createServer((req, res) => {
    const auth = req.headers.authorization ?? "";
    const jwt = auth.startsWith("Bearer ") ? auth.slice(7) : "";
    verifyAccessToken(jwt, { jwksUrl, issuer, audience: AUDIENCE, requiredScopes: ["inventory.read"] }).then(
      (claims) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ hello: claims.sub, vm: claims.tp_vm })),
      (e: TrustplaneError) => res.writeHead(e.status === "PERMISSION_DENIED" ? 403 : 401, { "content-type": "text/plain" }).end(`${e.reason}\n`),
    );
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/items`, close: () => new Promise<void>((r) => server.close(() => r())) };
}

async function run(ctx: TourContext): Promise<void> {
  const tag = randomBytes(3).toString("hex");
  const tokens = createClient(TokenServiceService, ctx.server, { key: ctx.admin });
  const auth = createClient(AuthServiceService, ctx.server, { key: ctx.admin });
  const cleanup: (() => Promise<void> | void)[] = [() => tokens.close(), () => auth.close()];
  try {
    // 1. A user, a service with its scope, a service account the user may act as.
    const user = `carol-${tag}`;
    const userKey = generateSigningKey("Ed25519");
    await auth.createPrincipal({ requestId: `demo-user-${tag}`, name: user, kind: "user" });
    await auth.addKey({ requestId: `demo-key-${tag}`, principal: user, jwk: JSON.stringify(userKey.publicJwk) });
    // Defining the same service again (a re-run against one dev server) just restates it.
    await tokens.defineService({ requestId: `demo-svc-${tag}`, service: { service: "inventory", audience: AUDIENCE, scopes: ["inventory.read"] } });
    const account = `reporter-${tag}@demo.trustplane`;
    await tokens.createServiceAccount({ requestId: `demo-sa-${tag}`, email: account, displayName: "Inventory reporter" });
    await tokens.grantActAs({ requestId: `demo-grant-${tag}`, email: account, principal: user });
    ctx.say(`service account ${account} created; ${user} may act as it`);

    // 2. The user signs their own create request; the authority accepts nothing less.
    const hostId = (await auth.listHosts({ pageSize: 10 })).hosts[0]!.hostId;
    const vmId = `demo-vm-${tag}`;
    const envelope = signVmCreateRequest({ requestId: `demo-create-${tag}`, name: vmId, serviceAccounts: [{ email: account, scopes: ["inventory.read"] }] }, [userKey]);
    const issued = await tokens.issueLongTermToken({ requestId: `demo-issue-${tag}`, serviceAccount: account, scopes: ["inventory.read"], hostId, vmId, userRequest: envelope });
    ctx.say(`long-term token ${issued.info!.accessor} v${issued.info!.version} issued for ${vmId} on ${hostId} (secret shown once, stored as a hash)`);
    const replay = await tokens
      .issueLongTermToken({ requestId: `demo-replay-${tag}`, serviceAccount: account, scopes: ["inventory.read"], hostId, vmId: `${vmId}-2`, userRequest: envelope })
      .then(() => undefined, (e: TrustplaneError) => e);
    if (replay?.reason !== "USER_REQUEST_REPLAYED") throw new Error(`a replayed user request was not refused (${replay?.reason ?? "accepted"})`);
    ctx.say(`replaying the user's signed request is refused: ${replay.status} ${replay.reason}`);

    // 3. The VM manager attaches the VM on the agent. Stand-in until the VM area lands: the
    //    admin key certified by the CA as trustplane-server, the only principal agents obey.
    const cert = await auth.issueCertificate({ requestId: `demo-cert-${tag}`, principal: "trustplane-server", publicKeyJwk: JSON.stringify(ctx.admin.publicJwk), hostPattern: hostId, ttlSeconds: 300 });
    const agent = createClient(TokenAgentServiceService, ctx.agent, { key: ctx.admin, certificate: SignedEnvelope.encode(cert.certificate!).finish(), targetHost: hostId });
    cleanup.push(() => agent.close());
    const attached = await agent.attachVm({
      requestId: `demo-attach-${tag}`,
      vmId,
      hostname: `${vmId}.local`,
      projectId: "demo",
      accounts: [{ email: account, scopes: ["inventory.read"], longTermToken: issued.token, info: issued.info }],
    });
    cleanup.push(() => agent.detachVm({ requestId: `demo-detach-${tag}`, vmId }).then(() => undefined));
    ctx.say(`VM ${vmId} attached; its metadata endpoint is ${attached.metadataHost}:${attached.metadataPort} (169.254.169.254 inside the VM)`);

    // 4. Inside "the VM": the unmodified gcp-metadata package, pointed at the endpoint.
    process.env.GCE_METADATA_HOST = `${attached.metadataHost}:${attached.metadataPort}`;
    const gcpMetadata = await import("gcp-metadata");
    gcpMetadata.resetIsAvailableCache();
    const email = (await gcpMetadata.instance("service-accounts/default/email")) as string;
    const token = (await gcpMetadata.instance("service-accounts/default/token")) as { access_token: string; expires_in: number };
    ctx.say(`gcp-metadata: default account ${email}, token expires in ${token.expires_in} s`);

    // 5. A resource server verifies it with jose against the authority's JWKS URL.
    const { jwksUrl, issuer } = await tokens.getJwks({});
    const resource = await startResourceServer(jwksUrl, issuer);
    cleanup.push(() => resource.close());
    const ok = await fetch(resource.url, { headers: { authorization: `Bearer ${token.access_token}` } });
    if (ok.status !== 200) throw new Error(`the resource server refused a valid token: ${ok.status} ${await ok.text()}`);
    ctx.say(`resource server verified it against ${jwksUrl}: ${await ok.text()}`.trim());
    const forged = await fetch(resource.url, { headers: { authorization: `Bearer ${token.access_token.slice(0, -4)}AAAA` } });
    ctx.say(`a tampered token is refused: ${forged.status} ${(await forged.text()).trim()}`);
    if (forged.status !== 401) throw new Error("a tampered token was accepted");

    // 6. Revoke: the agent drops the token at once; the VM gets no new token.
    await tokens.revokeLongTermToken({ requestId: `demo-revoke-${tag}`, accessor: issued.info!.accessor });
    let status = 0;
    for (let i = 0; i < 100; i++) {
      status = (await fetch(`http://${attached.metadataHost}:${attached.metadataPort}/computeMetadata/v1/instance/service-accounts/${account}/token`, { headers: { "Metadata-Flavor": "Google" } })).status;
      if (status === 404) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    if (status !== 404) throw new Error(`after revocation the endpoint still answered ${status}`);
    ctx.say(`after revoking ${issued.info!.accessor} the VM's next token request is refused (${status})`);
  } finally {
    for (const c of cleanup.reverse()) await Promise.resolve(c()).catch(() => undefined);
  }
}

export const vmTokenFlow: ExampleFlow = {
  name: "vm-token",
  title: "VM tokens: service account, user-signed create request, metadata endpoint, JWKS-verified call, revocation",
  run,
};

if (process.argv[1]?.endsWith("vm-token.ts")) {
  await vmTokenFlow.run(standaloneContext());
}
