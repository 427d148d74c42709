// Retry on alternates end to end (seed 004: "alternates kept for a retry when a host fails a
// start"): two agents on one `trustplane dev` server, each with the hotplug test driver; the
// first start anywhere is refused, so the VM comes up on the other host, the failed host's
// claim is given back and the events say what happened. When every host refuses, the VM is
// FAILED naming each host's reason and holds no claim.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, type SignedClient } from "../../sdk/src/client/create-client.js";
import { AuthServiceService } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { HostServiceService, HypervisorType, VmEventType, VmServiceService, VmState, type Vm } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { startAgent, type AgentHandle } from "../../server/src/processes/agent-process.js";
import { DEV_HOST_ID } from "../../server/src/processes/dev-process.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { bwrapAvailable } from "../../server/src/vm/agent/drivers/sandbox/sandbox-driver.js";
import { controlPlaneFor } from "../../server/src/vm/agent/vm-agent-area.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";
import { HotplugTestDriver, newScript } from "./hotplug-test-driver.js";

const SECOND = "dev-host-2";
let env: DevEnv;
let second: AgentHandle | undefined;
let vms: SignedClient<typeof VmServiceService>;
const script = newScript();

async function settled(vmId: string): Promise<Vm> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const { vm } = await vms.getVm({ vmId });
    if (vm!.state === VmState.VM_STATE_RUNNING || vm!.state === VmState.VM_STATE_FAILED) return vm!;
    if (Date.now() > deadline) throw new Error(`${vmId} still ${VmState[vm!.state]}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function usedVcpus(hostId: string): Promise<number> {
  const hosts = createClient(HostServiceService, env.dev.server.address, { key: env.admin });
  try {
    return (await hosts.listHostCapacity({ pageSize: 10 })).hosts.find((h) => h.hostId === hostId)!.used!.vcpus;
  } finally {
    hosts.close();
  }
}

describe.skipIf(!bwrapAvailable())("a start that fails on one host", () => {
  beforeAll(async () => {
    env = await startDevEnv();
    vms = createClient(VmServiceService, env.dev.server.address, { key: env.admin });
    const auth = createClient(AuthServiceService, env.dev.server.address, { key: env.admin });
    const { joinToken } = await auth.createJoinToken({ requestId: "join-2", hostId: SECOND, ttlSeconds: 600 });
    auth.close();
    second = await startAgent({ ...env.config, hostId: SECOND, serverAddress: env.dev.server.address, joinToken, agentListen: "127.0.0.1:0" }, createLogger({ level: "silent" }));
    for (const hostId of [DEV_HOST_ID, SECOND]) controlPlaneFor(hostId)!.registerDriver(new HotplugTestDriver(hostId, script));
    const deadline = Date.now() + 15_000;
    for (;;) {
      const { hosts } = await vms.getCapabilities({});
      if (hosts.filter((h) => h.drivers.some((d) => d.hypervisor === HypervisorType.HYPERVISOR_TYPE_QEMU)).length === 2) break;
      if (Date.now() > deadline) throw new Error("the test driver did not reach the capability matrix of both hosts");
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  afterAll(async () => {
    vms?.close();
    await second?.shutdown();
    await env?.stop();
  });

  it("comes up on an alternate, gives the failed host's claim back and says so in the events", async () => {
    script.failStarts = 1;
    script.started.length = 0;
    const { vm } = await vms.createVm({ requestId: "retry-1", name: "retry", image: "tiny-linux", resources: { vcpus: 1, memoryMib: 128, diskGib: 0 } });
    expect(vm!.alternateHostIds).toHaveLength(1);
    const up = await settled(vm!.vmId);
    expect(VmState[up.state]).toBe("VM_STATE_RUNNING");
    const [failedHost, goodHost] = script.started;
    expect(failedHost).toBe(vm!.hostId);
    expect(goodHost).not.toBe(failedHost);
    expect(up.hostId).toBe(goodHost);
    expect(await usedVcpus(failedHost!)).toBe(0);
    expect(await usedVcpus(goodHost!)).toBe(1);
    const events: string[] = [];
    const stream = vms.watchVmEvents({ vmId: vm!.vmId, afterSeq: 1 });
    for await (const { event } of stream) {
      events.push(`${VmEventType[event!.type]} ${event!.initiator}: ${event!.detail}`);
      if (event!.state === VmState.VM_STATE_RUNNING) break;
    }
    stream.cancel();
    expect(events.some((e) => e.startsWith(`VM_EVENT_TYPE_DEFINED scheduler: retrying on ${goodHost} after ${failedHost}: BOOT_FAILED`))).toBe(true);
    await vms.terminateVm({ requestId: "retry-1-term", vmId: vm!.vmId });
  });

  it("is FAILED naming every host's reason when no host starts it, holding no claim", async () => {
    script.failStarts = 2;
    script.started.length = 0;
    const { vm } = await vms.createVm({ requestId: "retry-2", name: "doomed", image: "tiny-linux", resources: { vcpus: 1, memoryMib: 128, diskGib: 0 } });
    const failed = await settled(vm!.vmId);
    expect(VmState[failed.state]).toBe("VM_STATE_FAILED");
    expect(script.started.sort()).toEqual([DEV_HOST_ID, SECOND].sort());
    for (const h of [DEV_HOST_ID, SECOND]) {
      expect(failed.failureReason).toContain(`${h}: BOOT_FAILED`);
      expect(await usedVcpus(h)).toBe(0);
    }
    await vms.terminateVm({ requestId: "retry-2-term", vmId: vm!.vmId });
  });
});
