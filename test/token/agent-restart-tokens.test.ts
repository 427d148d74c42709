// A VM that outlives its agent keeps its metadata endpoint and service accounts (seed 000 over
// seed 004's restart reconciliation): after `trustplane agent` restarts, the sandbox guest's
// own token request at 169.254.169.254 succeeds again without recreating the VM — the control
// plane re-binds the VM's authorization process on the port the guest is routed to, and the
// VM manager re-delivers the accounts with fresh long-term tokens when the host registers.
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { AuthServiceService, PolicyEffect } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { TokenServiceService } from "../../sdk/src/gen/trustplane/token/v1/token.js";
import { VmServiceService, VmState } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { startAgent, type AgentHandle } from "../../server/src/processes/agent-process.js";
import { DEV_HOST_ID } from "../../server/src/processes/dev-process.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { hostTokenManager } from "../../server/src/token/agent/token-agent-area.js";
import { bwrapAvailable } from "../../server/src/vm/agent/drivers/sandbox/sandbox-driver.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";
import { until } from "../support/until.js";

// The sandbox guest reaches its endpoint through its own network namespace (root only).
const rootWithTools = bwrapAvailable() && process.getuid?.() === 0 && existsSync("/usr/bin/curl") && existsSync("/usr/bin/socat");


const META = { "Metadata-Flavor": "Google" };

describe.skipIf(!rootWithTools)("a running VM across an agent restart", () => {
  let env: DevEnv;
  let restarted: AgentHandle | undefined;
  const tag = randomBytes(3).toString("hex");
  const email = `worker-${tag}@proj.trustplane`;

  beforeAll(async () => {
    env = await startDevEnv();
    const address = env.dev.server.address;
    const auth = createClient(AuthServiceService, address, { key: env.admin });
    const admin = createClient(TokenServiceService, address, { key: env.admin });
    try {
      await admin.defineService({ requestId: "svc", service: { service: "storage", audience: "https://storage.test", scopes: ["storage.read"] } });
      await admin.createServiceAccount({ requestId: "sa", email });
    } finally {
      auth.close();
      admin.close();
    }
  }, 60_000);

  // VMs outlive agents: a failed run must not leave its guests and relays on the machine.
  const created: string[] = [];
  afterAll(async () => {
    if (env && created.length) {
      const vms = createClient(VmServiceService, env.dev.server.address, { key: env.admin });
      for (const vmId of created) await vms.terminateVm({ requestId: `cleanup-${vmId}`, vmId }).catch(() => undefined);
      vms.close();
    }
    await restarted?.shutdown();
    await env?.stop();
  });

  it("gets its metadata endpoint and its account's token back without being recreated", async () => {
    const address = env.dev.server.address;
    const alice = generateSigningKey("Ed25519");
    const auth = createClient(AuthServiceService, address, { key: env.admin });
    await auth.createPrincipal({ requestId: "p-alice", name: "alice", kind: "user", policy: { rules: [{ methods: ["/trustplane.vm.v1.VmService/*"], effect: PolicyEffect.POLICY_EFFECT_ALLOW }] } });
    await auth.addKey({ requestId: "k-alice", principal: "alice", jwk: JSON.stringify(alice.publicJwk) });
    auth.close();
    const admin = createClient(TokenServiceService, address, { key: env.admin });
    await admin.grantActAs({ requestId: "g-alice", email, principal: "alice" });
    const vms = createClient(VmServiceService, address, { key: alice });
    try {
      // The guest asks for its account's token every 200 ms, as a workload would, and keeps
      // the last answer's status where the test can read it.
      const ask = [
        "while true; do",
        `  curl -s -o /vm/body -w '%{http_code}' -H 'Metadata-Flavor: Google' http://169.254.169.254/computeMetadata/v1/instance/service-accounts/${email}/token > /vm/status.tmp || echo 000 > /vm/status.tmp`,
        "  mv /vm/status.tmp /vm/status; sleep 0.2",
        "done",
      ].join("\n");
      const { vm } = await vms.createVm({
        requestId: `c-${tag}`,
        name: "survivor",
        image: "process",
        resources: { vcpus: 1, memoryMib: 128, diskGib: 0 },
        serviceAccounts: [{ email, scopes: ["storage.read"] }],
        command: ["/bin/sh", "-c", ask],
      });
      const vmId = vm!.vmId;
      created.push(vmId);
      const vmDir = path.join(env.config.dataDir, "agent", DEV_HOST_ID, "vms", vmId);
      const status = path.join(vmDir, "root", "status");
      const guestStatus = () => (existsSync(status) ? readFileSync(status, "utf8").trim() : "");
      await until("the guest gets a token", () => (guestStatus() === "200" ? true : undefined));
      // A second VM on the host with the same account shares the host's token (no rotation).
      const { vm: sib } = await vms.createVm({ requestId: `c2-${tag}`, name: "sibling", image: "process", resources: { vcpus: 1, memoryMib: 64, diskGib: 0 }, serviceAccounts: [{ email, scopes: ["storage.read"] }], command: ["/bin/sh", "-c", "sleep 120"] });
      const sibling = sib!.vmId;
      created.push(sibling);
      await until("the sibling holds the account", () => (hostTokenManager(DEV_HOST_ID)?.vm(sibling)?.heldVersion(email) !== undefined ? true : undefined));
      const [issued] = (await admin.listLongTermTokens({ serviceAccount: email })).tokens;
      expect(issued!.version).toBe(1);
      const before = hostTokenManager(DEV_HOST_ID)!.vm(vmId)!.endpoint()!;
      const { handle } = JSON.parse(readFileSync(path.join(vmDir, "instance.json"), "utf8")) as { handle: { pid: number } };

      // The agent goes away; the VM keeps running and its requests fail meanwhile.
      const agentAddress = env.dev.agent.address;
      await env.dev.agent.shutdown();
      writeFileSync(status, "");
      await until("the guest's requests fail while the agent is down", () => (guestStatus() !== "" && guestStatus() !== "200" ? true : undefined));
      expect(() => process.kill(handle.pid, 0)).not.toThrow();

      restarted = await startAgent({ ...env.config, hostId: DEV_HOST_ID, serverAddress: address, agentListen: agentAddress }, createLogger({ level: "silent" }));
      // The authorization process is back where the guest's relay points.
      const after = hostTokenManager(DEV_HOST_ID)?.vm(vmId)?.endpoint();
      expect(after).toMatchObject({ address: before.address, port: before.port });
      // And the VM manager re-delivered the account: the guest's own request succeeds again.
      writeFileSync(status, "");
      await until("the guest gets a token again", () => (guestStatus() === "200" ? true : undefined));
      const body = JSON.parse(readFileSync(path.join(vmDir, "root", "body"), "utf8")) as { access_token: string };
      expect(body.access_token.split(".")).toHaveLength(3);
      const endpointAnswer = await fetch(`http://${before.address}:${before.port}/computeMetadata/v1/instance/service-accounts/default/token`, { headers: META });
      expect(endpointAnswer.status).toBe(200);
      // Same VM, never recreated.
      expect((await vms.getVm({ vmId })).vm!.state).toBe(VmState.VM_STATE_RUNNING);
      const { handle: still } = JSON.parse(readFileSync(path.join(vmDir, "instance.json"), "utf8")) as { handle: { pid: number } };
      expect(still.pid).toBe(handle.pid);

      // One new secret for the host, shared by both VMs: a single rotation, not one per VM.
      await until("the sibling holds the account again", () => (hostTokenManager(DEV_HOST_ID)?.vm(sibling)?.heldVersion(email) !== undefined ? true : undefined));
      const [now] = (await admin.listLongTermTokens({ serviceAccount: email })).tokens;
      expect(now).toMatchObject({ accessor: issued!.accessor, version: 2 });
      expect(hostTokenManager(DEV_HOST_ID)!.vm(sibling)!.heldVersion(email)).toBe(2);
      // Audited as deliveries are: by the authority (with the user who made the hold) and per VM.
      const audit = await env.dev.server.storage.db.all<{ action: string; target: string; outcome: string; detail_json: string }>(
        "SELECT action, target, outcome, detail_json FROM audit_log WHERE action IN ('token.long_term.redeliver', 'vm.service_accounts.redeliver') ORDER BY seq",
      );
      // One rotation for whichever VM came first; the per-VM records in either order.
      expect(audit.map((a) => [a.action, a.target, a.outcome])[0]).toEqual(["token.long_term.redeliver", issued!.accessor, "ok"]);
      expect(audit.slice(1).map((a) => [a.action, a.target, a.outcome]).sort()).toEqual(
        [
          ["vm.service_accounts.redeliver", vmId, "ok"],
          ["vm.service_accounts.redeliver", sibling, "ok"],
        ].sort(),
      );
      expect(JSON.parse(audit[0]!.detail_json)).toMatchObject({ user: "alice", hostId: DEV_HOST_ID, version: 2 });
      expect([vmId, sibling]).toContain(JSON.parse(audit[0]!.detail_json).vmId);
      // The secret travelled sealed: no stored response holds it in clear.
      for (const r of await env.dev.server.storage.db.all<{ response: Uint8Array }>("SELECT response FROM idempotency")) expect(Buffer.from(r.response).toString("latin1")).not.toContain("tplt_");
      await vms.terminateVm({ requestId: `t2-${tag}`, vmId: sibling });
      await vms.terminateVm({ requestId: `t-${tag}`, vmId });
    } finally {
      vms.close();
      admin.close();
    }
  }, 90_000);

  it("re-delivers only for the VM manager: a caller allowed the method but not an admin is refused", async () => {
    const address = env.dev.server.address;
    const ops = generateSigningKey("Ed25519");
    const auth = createClient(AuthServiceService, address, { key: env.admin });
    await auth.createPrincipal({ requestId: "p-ops", name: "ops", kind: "user", policy: { rules: [{ methods: ["/trustplane.token.v1.TokenService/*"], effect: PolicyEffect.POLICY_EFFECT_ALLOW }] } });
    await auth.addKey({ requestId: "k-ops", principal: "ops", jwk: JSON.stringify(ops.publicJwk) });
    auth.close();
    const tokens = createClient(TokenServiceService, address, { key: ops });
    try {
      const e = await tokens.redeliverLongTermToken({ requestId: "r-ops", accessor: "tpla_x", hostId: DEV_HOST_ID, vmId: "vm-x" }).catch((x: unknown) => x);
      expect(e).toMatchObject({ status: "PERMISSION_DENIED", reason: "NOT_VM_MANAGER" });
    } finally {
      tokens.close();
    }
  });
});
