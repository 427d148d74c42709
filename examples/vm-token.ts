// Tour flow for tokens (seed 000): an admin defines a service and a service account and lets
// a user act as it; the user creates a sandbox VM with that account (their own signed CreateVm
// call is the authority's proof); inside the VM, busybox wget fetches a short-term token from
// 169.254.169.254; a resource server verifies it against the JWKS URL with jose and refuses a
// forged and an expired token; terminating the VM releases its hold and revokes the token.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { generateSigningKey } from "../sdk/src/auth/index.js";
import { createClient } from "../sdk/src/client/create-client.js";
import { TrustplaneError } from "../sdk/src/errors.js";
import { AuthServiceService, PolicyEffect } from "../sdk/src/gen/trustplane/auth/v1/service.js";
import { TokenServiceService } from "../sdk/src/gen/trustplane/token/v1/token.js";
import { VmServiceService, VmState } from "../sdk/src/gen/trustplane/vm/v1/vm.js";
import { verifyAccessToken } from "../sdk/src/token/index.js";
import { standaloneContext, type ExampleFlow, type TourContext } from "./tour-context.js";

const AUDIENCE = "https://inventory.example";

/** A tiny resource server: 200 with the caller's identity for a valid token, 401/403 otherwise. */
async function startResourceServer(jwksUrl: string, issuer: string) {
  const server = http.createServer((req, res) => {
    const auth = req.headers.authorization ?? "";
    const jwt = auth.startsWith("Bearer ") ? auth.slice(7) : "";
    // `?at=<ms>` checks the token as of a later time, to show what expiry does to it.
    const at = Number(new URL(req.url ?? "/", "http://x").searchParams.get("at")) || undefined;
    verifyAccessToken(jwt, { jwksUrl, issuer, audience: AUDIENCE, requiredScopes: ["inventory.read"], currentDate: at ? new Date(at) : undefined }).then(
      (claims) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ hello: claims.sub, vm: claims.tp_vm })),
      (e: TrustplaneError) => res.writeHead(e.status === "PERMISSION_DENIED" ? 403 : 401, { "content-type": "text/plain" }).end(`${e.reason}\n`),
    );
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/items`, close: () => new Promise<void>((r) => server.close(() => r())) };
}

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// What runs inside the VM: busybox wget against the metadata address, as any guest would.
const GUEST = [
  "M=http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default",
  "for i in $(seq 1 200); do",
  "  busybox wget -q -O /vm/token.tmp --header 'Metadata-Flavor: Google' $M/token 2>/dev/null && mv /vm/token.tmp /vm/token && break",
  "  sleep 0.1",
  "done",
  "busybox wget -q -O - $M/token > /vm/noflavor 2>&1",
  "sleep 300",
].join("\n");

async function run(ctx: TourContext): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new Error("this flow runs a sandbox VM in its own network namespace with its metadata endpoint at 169.254.169.254, which needs root (run the demo as root)");
  }
  const tag = randomBytes(3).toString("hex");
  const tokens = createClient(TokenServiceService, ctx.server, { key: ctx.admin });
  const auth = createClient(AuthServiceService, ctx.server, { key: ctx.admin });
  const cleanup: (() => Promise<void> | void)[] = [() => tokens.close(), () => auth.close()];
  try {
    // 1. A user who may use VMs, a service with its scope, a service account the user may act as.
    const user = `carol-${tag}`;
    const userKey = generateSigningKey("Ed25519");
    await auth.createPrincipal({ requestId: `demo-user-${tag}`, name: user, kind: "user", policy: { rules: [{ methods: ["/trustplane.vm.v1.VmService/*"], effect: PolicyEffect.POLICY_EFFECT_ALLOW }] } });
    await auth.addKey({ requestId: `demo-key-${tag}`, principal: user, jwk: JSON.stringify(userKey.publicJwk) });
    // Defining the same service again (a re-run against one dev server) just restates it.
    await tokens.defineService({ requestId: `demo-svc-${tag}`, service: { service: "inventory", audience: AUDIENCE, scopes: ["inventory.read"] } });
    const account = `reporter-${tag}@demo.trustplane`;
    await tokens.createServiceAccount({ requestId: `demo-sa-${tag}`, email: account, displayName: "Inventory reporter" });
    await tokens.grantActAs({ requestId: `demo-grant-${tag}`, email: account, principal: user });
    ctx.say(`service account ${account} created; ${user} may act as it`);

    // 2. The user creates a VM with the account. Their own signed CreateVm call is what the
    //    token authority checks before it issues the long-term token: the VM manager cannot.
    const vms = createClient(VmServiceService, ctx.server, { key: userKey });
    cleanup.push(() => vms.close());
    const { vm } = await vms.createVm({
      requestId: `demo-create-${tag}`,
      name: `reporter-${tag}`,
      image: "process",
      resources: { vcpus: 1, memoryMib: 128, diskGib: 0 },
      serviceAccounts: [{ email: account, scopes: ["inventory.read"] }],
      command: ["/bin/sh", "-c", GUEST],
    });
    const vmId = vm!.vmId;
    let terminated = false;
    cleanup.push(async () => {
      if (!terminated) await vms.terminateVm({ requestId: `demo-term-${tag}`, vmId });
    });
    await until("the VM running", async () => ((await vms.getVm({ vmId })).vm!.state === VmState.VM_STATE_RUNNING ? true : undefined));
    const [lt] = await until("the long-term token issued", async () => {
      const t = (await tokens.listLongTermTokens({ serviceAccount: account })).tokens;
      return t.length > 0 ? t : undefined;
    });
    ctx.say(`VM ${vmId} runs on ${vm!.hostId} with ${account}; long-term token ${lt!.accessor} v${lt!.version} is held by its authorization process on the host, never by the guest`);

    // 3. Inside the VM: busybox wget at 169.254.169.254 (the VM's own metadata endpoint).
    const root = path.join(ctx.dataDir, "agent", vm!.hostId, "vms", vmId, "root");
    const tokenFile = path.join(root, "token");
    await until("the guest's token", () => (existsSync(tokenFile) ? true : undefined));
    const got = JSON.parse(readFileSync(tokenFile, "utf8")) as { access_token: string; expires_in: number; token_type: string };
    const claims = JSON.parse(Buffer.from(got.access_token.split(".")[1]!, "base64url").toString()) as Record<string, unknown>;
    ctx.say(`inside the VM, wget got a ${got.token_type} token for ${String(claims.sub)} (scope ${String(claims.scope)}, VM ${String(claims.tp_vm)}), expiring in ${got.expires_in} s`);
    const noFlavor = await until("the guest's header-less attempt", () => (existsSync(path.join(root, "noflavor")) ? readFileSync(path.join(root, "noflavor"), "utf8").trim() : undefined));
    ctx.say(`without Metadata-Flavor: Google the endpoint refuses: ${noFlavor.split("\n")[0]}`);
    if (readFileSync(tokenFile, "utf8").includes("tplt_")) throw new Error("the long-term token reached the guest");

    // 4. A resource server verifies it with jose against the authority's JWKS URL.
    const { jwksUrl, issuer } = await tokens.getJwks({});
    const resource = await startResourceServer(jwksUrl, issuer);
    cleanup.push(() => resource.close());
    const bearer = (jwt: string) => ({ headers: { authorization: `Bearer ${jwt}` } });
    const ok = await fetch(resource.url, bearer(got.access_token));
    if (ok.status !== 200) throw new Error(`the resource server refused a valid token: ${ok.status} ${await ok.text()}`);
    ctx.say(`resource server verified it against ${jwksUrl}: ${(await ok.text()).trim()}`);
    const forged = await fetch(resource.url, bearer(`${got.access_token.slice(0, -6)}AAAAAA`));
    if (forged.status !== 401) throw new Error("a forged token was accepted");
    ctx.say(`a forged signature is refused: ${forged.status} ${(await forged.text()).trim()}`);
    const later = Date.now() + (got.expires_in + 60) * 1000;
    const expired = await fetch(`${resource.url}?at=${later}`, bearer(got.access_token));
    if (expired.status !== 401) throw new Error("an expired token was accepted");
    ctx.say(`the same token a minute past its exp is refused: ${expired.status} ${(await expired.text()).trim()}`);

    // 5. Terminate: the VM manager releases the VM's hold; the last holder takes the token along.
    await vms.terminateVm({ requestId: `demo-term-${tag}`, vmId });
    terminated = true;
    const info = (await tokens.getLongTermToken({ accessor: lt!.accessor })).info!;
    if (!info.revoked) throw new Error(`after the last VM terminated, ${lt!.accessor} is still live`);
    ctx.say(`VM terminated: long-term token ${info.accessor} revoked (${info.revokeReason}); agents dropped it and its cached tokens`);
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
