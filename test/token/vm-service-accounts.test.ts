// Service accounts through the product API (VmService on `trustplane dev`, SQLite and
// PostgreSQL): a VM's long-term token holds are released when it terminates and the last one
// revokes the token; a failed attach leaves no hold behind; SetVmServiceAccounts adds an account
// (the user's own signed call as proof) and removes one on a running VM, and the guest's
// wait_for_change listing sees each change without a restart.
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey, type SigningKey } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { AuthServiceService, PolicyEffect } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { TokenServiceService, type LongTermTokenInfo } from "../../sdk/src/gen/trustplane/token/v1/token.js";
import { VmServiceService, VmState } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { verifyAccessToken } from "../../sdk/src/token/index.js";
import { DEV_HOST_ID } from "../../server/src/processes/dev-process.js";
import { hostTokenManager } from "../../server/src/token/agent/token-agent-area.js";
import { bwrapAvailable } from "../../server/src/vm/agent/drivers/sandbox/sandbox-driver.js";
import { devVariants, dropDevVariant, prepareDevVariant } from "../support/backends.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";
import { until } from "../support/until.js";
import { refused as refusal } from "../support/refused.js";

// The sandbox VM reaches its metadata endpoint through its own network namespace (root only).
const rootWithTools = bwrapAvailable() && process.getuid?.() === 0 && existsSync("/usr/bin/curl") && existsSync("/usr/bin/socat");

const variants = devVariants("tp_vmsa");



const META = { "Metadata-Flavor": "Google" };
const RES = { vcpus: 1, memoryMib: 128, diskGib: 0 };

describe.skipIf(!rootWithTools).each(variants)("service accounts through VmService ($name)", (variant) => {
  let env: DevEnv;
  let admin: ReturnType<typeof createClient<typeof TokenServiceService>>;
  let aliceVms: ReturnType<typeof createClient<typeof VmServiceService>>;
  let bobVms: ReturnType<typeof createClient<typeof VmServiceService>>;
  let alice: SigningKey;
  let jwksUrl = "";
  let issuer = "";
  const tag = randomBytes(3).toString("hex");
  const sa = (n: string) => `${n}-${tag}@proj.trustplane`;

  beforeAll(async () => {
    env = await startDevEnv(await prepareDevVariant(variant));
    const address = env.dev.server.address;
    admin = createClient(TokenServiceService, address, { key: env.admin });
    const auth = createClient(AuthServiceService, address, { key: env.admin });
    alice = generateSigningKey("Ed25519");
    const bob = generateSigningKey("Ed25519");
    for (const [name, key] of [
      ["alice", alice],
      ["bob", bob],
    ] as const) {
      await auth.createPrincipal({ requestId: `p-${name}`, name, kind: "user", policy: { rules: [{ methods: ["/trustplane.vm.v1.VmService/*"], effect: PolicyEffect.POLICY_EFFECT_ALLOW }] } });
      await auth.addKey({ requestId: `k-${name}`, principal: name, jwk: JSON.stringify(key.publicJwk) });
    }
    auth.close();
    await admin.defineService({ requestId: "svc", service: { service: "storage", audience: "https://storage.test", scopes: ["storage.read", "storage.write"] } });
    for (const n of ["builder", "reporter", "auditor"]) {
      await admin.createServiceAccount({ requestId: `sa-${n}`, email: sa(n) });
      await admin.grantActAs({ requestId: `g-${n}`, email: sa(n), principal: "alice" });
    }
    aliceVms = createClient(VmServiceService, address, { key: alice });
    bobVms = createClient(VmServiceService, address, { key: bob });
    ({ jwksUrl, issuer } = await admin.getJwks({}));
  }, 60_000);

  afterAll(async () => {
    admin?.close();
    aliceVms?.close();
    bobVms?.close();
    await env?.stop();
    await dropDevVariant(variant);
  });

  async function tokensOf(email: string, includeRevoked = false): Promise<LongTermTokenInfo[]> {
    return (await admin.listLongTermTokens({ serviceAccount: email, includeRevoked })).tokens;
  }

  async function createVm(name: string, accounts: { email: string; scopes: string[] }[], command = ["/bin/sh", "-c", "sleep 120"]) {
    const { vm } = await aliceVms.createVm({ requestId: `c-${name}-${tag}`, name, image: "process", resources: RES, serviceAccounts: accounts, command });
    await until(`${name} running`, async () => ((await aliceVms.getVm({ vmId: vm!.vmId })).vm!.state === VmState.VM_STATE_RUNNING ? true : undefined));
    return vm!.vmId;
  }

  const process = (vmId: string) => hostTokenManager(DEV_HOST_ID)!.vm(vmId);
  const holds = (vmId: string, email: string) => process(vmId)?.heldVersion(email) !== undefined;

  it("releases a terminated VM's holds; the last VM to go revokes the token and the agent drops it", async () => {
    const email = sa("builder");
    const first = await createVm("holder-a", [{ email, scopes: ["storage.read"] }]);
    await until("first VM holds the account", () => (holds(first, email) ? true : undefined));
    const second = await createVm("holder-b", [{ email, scopes: ["storage.read"] }]);
    await until("second VM holds the account", () => (holds(second, email) ? true : undefined));
    const [token] = await tokensOf(email);
    expect(token!.holders.map((h) => h.vmId).sort()).toEqual([first, second].sort());
    // The VM manager carried the secret sealed to the host: no stored response (idempotent
    // replay of IssueLongTermToken or UpdateVmAccounts) holds it in clear.
    const stored = await env.dev.server.storage.db.all<{ response: Uint8Array }>("SELECT response FROM idempotency");
    expect(stored.length).toBeGreaterThan(0);
    for (const r of stored) expect(Buffer.from(r.response).toString("latin1")).not.toContain("tplt_");
    // The second VM joined the token this host already held: no rotation for it.
    expect(token!.version).toBe(1);

    await aliceVms.terminateVm({ requestId: `t-a-${tag}`, vmId: first });
    const after = (await admin.getLongTermToken({ accessor: token!.accessor })).info!;
    expect(after.revoked).toBe(false);
    expect(after.holders.map((h) => h.vmId)).toEqual([second]);
    // The remaining VM keeps minting.
    const at = process(second)!.endpoint()!;
    const res = await fetch(`http://127.0.0.1:${at.port}/computeMetadata/v1/instance/service-accounts/default/token`, { headers: META });
    expect(res.status).toBe(200);

    await aliceVms.terminateVm({ requestId: `t-b-${tag}`, vmId: second });
    const gone = (await admin.getLongTermToken({ accessor: token!.accessor })).info!;
    expect(gone).toMatchObject({ revoked: true, revokeReason: "LAST_HOLDER_GONE", holders: [] });
    expect(await tokensOf(email)).toEqual([]);
  }, 60_000);

  it("a VM whose accounts could not all be attached keeps no hold on any of them", async () => {
    const email = sa("reporter");
    // The second grant names a scope no service owns: the authority refuses it after the
    // first account's token was issued, and that first hold must not outlive the failure.
    const { vm } = await aliceVms.createVm({
      requestId: `c-partial-${tag}`,
      name: "partial",
      image: "process",
      resources: RES,
      serviceAccounts: [
        { email, scopes: ["storage.read"] },
        { email: sa("auditor"), scopes: ["nobody.owns.this"] },
      ],
      command: ["/bin/sh", "-c", "sleep 60"],
    });
    const all = await until("the first token issued and then released", async () => {
      const t = await tokensOf(email, true);
      return t.length > 0 && t.every((i) => i.revoked) ? t : undefined;
    });
    expect(all[0]).toMatchObject({ revoked: true, revokeReason: "LAST_HOLDER_GONE" });
    expect(process(vm!.vmId)?.accounts() ?? []).toEqual([]);
    await aliceVms.terminateVm({ requestId: `t-partial-${tag}`, vmId: vm!.vmId });
  }, 60_000);

  it("adds and removes accounts on a running VM; the guest's wait_for_change listing sees each change", async () => {
    const one = sa("auditor");
    const two = sa("reporter");
    // The guest follows the account listing the way a GCE guest agent does.
    const watch = [
      "etag=''; i=0",
      "while [ $i -lt 6 ]; do",
      "  curl -s -D /vm/h -H 'Metadata-Flavor: Google' \"http://169.254.169.254/computeMetadata/v1/instance/service-accounts/?wait_for_change=true&timeout_sec=60&last_etag=$etag\" > /vm/body",
      "  etag=$(grep -i '^etag:' /vm/h | tr -d '\\r' | cut -d' ' -f2)",
      "  { echo \"--- $etag\"; cat /vm/body; } >> /vm/changes",
      "  i=$((i+1))",
      "done; sleep 60",
    ].join("\n");
    const vmId = await createVm("changer", [{ email: one, scopes: ["storage.read"] }], ["/bin/sh", "-c", watch]);
    const changes = path.join(env.config.dataDir, "agent", DEV_HOST_ID, "vms", vmId, "root", "changes");
    const lastListing = () => {
      if (!existsSync(changes)) return undefined;
      const blocks = readFileSync(changes, "utf8").split(/^--- .*$/m);
      return blocks[blocks.length - 1]!.split("\n").filter(Boolean).sort();
    };
    const sees = (wanted: string[]) => () => {
      const l = lastListing();
      return l && JSON.stringify(l) === JSON.stringify(wanted.sort()) ? true : undefined;
    };
    await until("guest sees the first account", sees(["default/", `${one}/`]));

    // bob may not act as the account: refused before anything reaches the authority.
    const denied = await refusal(bobVms.setVmServiceAccounts({ requestId: `s-bob-${tag}`, vmId, serviceAccounts: [{ email: two, scopes: ["storage.read"] }] }));
    expect(denied.status).toBe("NOT_FOUND"); // bob cannot even see alice's VM

    const { vm: added } = await aliceVms.setVmServiceAccounts({
      requestId: `s-add-${tag}`,
      vmId,
      serviceAccounts: [
        { email: one, scopes: ["storage.read"] },
        { email: two, scopes: ["storage.read", "storage.write"] },
      ],
    });
    expect(added!.serviceAccounts.map((a) => a.email)).toEqual([one, two]);
    await until("guest sees the added account", sees(["default/", `${one}/`, `${two}/`]));
    const at = process(vmId)!.endpoint()!;
    const res = await fetch(`http://127.0.0.1:${at.port}/computeMetadata/v1/instance/service-accounts/${two}/token`, { headers: META });
    expect(res.status).toBe(200);
    const claims = await verifyAccessToken(((await res.json()) as { access_token: string }).access_token, { jwksUrl, issuer, audience: "https://storage.test", requiredScopes: ["storage.write"] });
    expect(claims).toMatchObject({ sub: two, tp_vm: vmId });
    const [firstToken] = await tokensOf(one);

    // An account alice may not act as: refused, and the VM keeps what it had.
    await admin.revokeActAs({ requestId: `rv-${tag}`, email: sa("builder"), principal: "alice" });
    const notOnAcl = await refusal(
      aliceVms.setVmServiceAccounts({ requestId: `s-acl-${tag}`, vmId, serviceAccounts: [{ email: one, scopes: ["storage.read"] }, { email: sa("builder"), scopes: ["storage.read"] }] }),
    );
    expect(notOnAcl.reason).toBe("NOT_ON_ACL");
    expect(process(vmId)!.accounts().map((a) => a.email).sort()).toEqual([one, two].sort());

    // Removal: the guest sees it, and the removed account's last hold took its token along.
    await aliceVms.setVmServiceAccounts({ requestId: `s-rm-${tag}`, vmId, serviceAccounts: [{ email: two, scopes: ["storage.read", "storage.write"] }] });
    await until("guest sees the removal", sees(["default/", `${two}/`]));
    expect((await admin.getLongTermToken({ accessor: firstToken!.accessor })).info).toMatchObject({ revoked: true, revokeReason: "LAST_HOLDER_GONE" });
    const removed = await fetch(`http://127.0.0.1:${at.port}/computeMetadata/v1/instance/service-accounts/${one}/token`, { headers: META });
    expect(removed.status).toBe(404);
    await aliceVms.terminateVm({ requestId: `t-changer-${tag}`, vmId });
    expect(await tokensOf(two)).toEqual([]);
  }, 90_000);
});
