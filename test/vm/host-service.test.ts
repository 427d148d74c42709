// HostService: a host reports only for itself, unjoined hosts cannot register, and a heartbeat
// naming a VM the server does not know gets it back as orphaned (the agent terminates it).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "../../sdk/src/client/create-client.js";
import { HostServiceService, Instance, VmState } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";
import { refused } from "../support/refused.js";

let env: DevEnv;
beforeAll(async () => {
  env = await startDevEnv();
});
afterAll(async () => {
  await env?.stop();
});

describe("HostService", () => {
  const asHost = () => createClient(HostServiceService, env.dev.server.address, { key: env.dev.agent.signingKey });
  const capacity = (hostId: string) => ({ hostId, total: { vcpus: 2, memoryMib: 1024, diskGib: 10 }, drivers: [] });

  it("lets the agent register and heartbeat as itself", async () => {
    const host = asHost();
    try {
      const res = await host.registerHost({ requestId: "reg-self", capacity: capacity("dev-host-1") });
      expect(res.capacity?.up).toBe(true);
      expect((await host.heartbeat({ hostId: "dev-host-1", load: 0.1, instanceCount: 0, latencyMs: 1 })).serverTimeMs).toBeGreaterThan(0);
    } finally {
      host.close();
    }
  });

  it("refuses a host reporting for another host", async () => {
    const host = asHost();
    try {
      const err = await refused(host.registerHost({ requestId: "reg-other", capacity: capacity("someone-else") }));
      expect([err.status, err.reason]).toEqual(["PERMISSION_DENIED", "HOST_MISMATCH"]);
      const hb = await refused(host.heartbeat({ hostId: "someone-else", load: 0, instanceCount: 0, latencyMs: 0 }));
      expect(hb.reason).toBe("HOST_MISMATCH");
    } finally {
      host.close();
    }
  });

  it("refuses to register a host that never joined", async () => {
    const admin = createClient(HostServiceService, env.dev.server.address, { key: env.admin });
    try {
      const err = await refused(admin.registerHost({ requestId: "reg-ghost", capacity: capacity("ghost-host") }));
      expect([err.status, err.reason]).toEqual(["FAILED_PRECONDITION", "HOST_NOT_JOINED"]);
    } finally {
      admin.close();
    }
  });

  it("returns VMs the server does not know as orphaned", async () => {
    const host = asHost();
    try {
      const res = await host.heartbeat({ hostId: "dev-host-1", load: 0, instanceCount: 1, latencyMs: 1, instances: [Instance.fromPartial({ vmId: "vm-unknown", state: VmState.VM_STATE_RUNNING })] });
      expect(res.orphanedVmIds).toEqual(["vm-unknown"]);
    } finally {
      host.close();
    }
  });
});
