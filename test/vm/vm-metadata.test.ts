// Each VM reaches its own authorization process at 169.254.169.254 and nothing else's: two
// process VMs on `trustplane dev` each read their own instance id from the GCE-compatible
// metadata endpoint (Metadata-Flavor: Google), from inside their own network namespace.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "../../sdk/src/client/create-client.js";
import { VmServiceService, VmState } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { TokenServiceService } from "../../sdk/src/gen/trustplane/token/v1/token.js";
import { bwrapAvailable } from "../../server/src/vm/agent/drivers/sandbox/sandbox-driver.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";

const rootWithTools = bwrapAvailable() && process.getuid?.() === 0 && existsSync("/usr/bin/curl") && existsSync("/usr/bin/socat");
let env: DevEnv;

describe.skipIf(!rootWithTools)("VM metadata endpoint", () => {
  beforeAll(async () => {
    env = await startDevEnv();
  });
  afterAll(async () => {
    await env?.stop();
  });

  it("serves each VM its own identity at 169.254.169.254", async () => {
    const vms = createClient(VmServiceService, env.dev.server.address, { key: env.admin });
    const fetch = ["/bin/sh", "-c", "curl -s -H 'Metadata-Flavor: Google' http://169.254.169.254/computeMetadata/v1/instance/id > /vm/id; curl -s http://169.254.169.254/computeMetadata/v1/instance/id > /vm/noflavor; echo done > /vm/done; sleep 30"];
    const ids: string[] = [];
    try {
      for (const name of ["alpha", "beta"]) {
        const { vm } = await vms.createVm({ requestId: `md-${name}`, name, image: "process", resources: { vcpus: 1, memoryMib: 128, diskGib: 0 }, command: fetch });
        ids.push(vm!.vmId);
      }
      for (const vmId of ids) {
        const out = path.join(env.config.dataDir, "agent", "dev-host-1", "vms", vmId, "root", "id");
        for (let i = 0; i < 200 && (await vms.getVm({ vmId })).vm!.state !== VmState.VM_STATE_RUNNING; i++) await new Promise((r) => setTimeout(r, 50));
        expect((await vms.getVm({ vmId })).vm!.state).toBe(VmState.VM_STATE_RUNNING);
        // Both fetches finished (the second starts only once the first curl has exited).
        for (let i = 0; i < 200 && !existsSync(path.join(path.dirname(out), "done")); i++) await new Promise((r) => setTimeout(r, 50));
        expect(readFileSync(out, "utf8").trim()).toBe(vmId);
        // Without the Metadata-Flavor header the endpoint refuses, as GCE's does.
        expect(readFileSync(path.join(path.dirname(out), "noflavor"), "utf8")).not.toContain(vmId);
      }
    } finally {
      for (const vmId of ids) await vms.terminateVm({ requestId: `md-term-${vmId}`, vmId }).catch(() => undefined);
      vms.close();
    }
  });

  it("gives a VM created with a service account short-term tokens for it, minted from a long-term token the guest never sees", async () => {
    const tokens = createClient(TokenServiceService, env.dev.server.address, { key: env.admin });
    const vms = createClient(VmServiceService, env.dev.server.address, { key: env.admin });
    const email = "reporter@proj.trustplane";
    let vmId = "";
    try {
      await tokens.defineService({ requestId: "md-svc", service: { service: "storage", audience: "https://storage.test", scopes: ["storage.read", "storage.write"] } });
      await tokens.createServiceAccount({ requestId: "md-sa", email, displayName: "Reporter" });
      await tokens.grantActAs({ requestId: "md-grant", email, principal: "admin" });
      const script = [
        "for i in $(seq 1 100); do",
        "  curl -s -H 'Metadata-Flavor: Google' http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token > /vm/token.tmp",
        "  if grep -q access_token /vm/token.tmp; then mv /vm/token.tmp /vm/token; break; fi; sleep 0.1;",
        "done; env > /vm/env; sleep 30",
      ].join("\n");
      const { vm } = await vms.createVm({ requestId: "md-sa-vm", name: "reporter", image: "process", resources: { vcpus: 1, memoryMib: 128, diskGib: 0 }, serviceAccounts: [{ email, scopes: ["storage.read"] }], command: ["/bin/sh", "-c", script] });
      vmId = vm!.vmId;
      const out = path.join(env.config.dataDir, "agent", "dev-host-1", "vms", vmId, "root", "token");
      for (let i = 0; i < 300 && !existsSync(out); i++) await new Promise((r) => setTimeout(r, 50));
      const body = JSON.parse(readFileSync(out, "utf8")) as { access_token: string; expires_in: number; token_type: string };
      expect(body.token_type).toBe("Bearer");
      expect(body.expires_in).toBeGreaterThan(300);
      const claims = JSON.parse(Buffer.from(body.access_token.split(".")[1]!, "base64url").toString()) as Record<string, unknown>;
      expect(claims).toMatchObject({ sub: email, scope: "storage.read", tp_vm: vmId, tp_host: "dev-host-1" });
      // The long-term secret never entered the guest: not in its files, not in its environment
      // (written by the guest just after the token).
      const envFile = path.join(path.dirname(out), "env");
      for (let i = 0; i < 100 && !existsSync(envFile); i++) await new Promise((r) => setTimeout(r, 50));
      const guestText = readFileSync(out, "utf8") + readFileSync(path.join(path.dirname(out), "env"), "utf8");
      expect(guestText).not.toMatch(/tplt_/);
    } finally {
      if (vmId) await vms.terminateVm({ requestId: "md-sa-term", vmId }).catch(() => undefined);
      tokens.close();
      vms.close();
    }
  });
});

