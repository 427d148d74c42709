// The VM area end to end on `trustplane dev`: VmService schedules onto the agent, whose
// control plane boots a real bubblewrap process VM; lifecycle, events, capability matrix,
// unsupported operations and bad input, each with its status and reason.
import { existsSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, type SignedClient } from "../../sdk/src/client/create-client.js";
import { HypervisorType, VmServiceService, VmState, type Vm } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { processAlive } from "../../server/src/vm/agent/process-liveness.js";
import { bwrapAvailable } from "../../server/src/vm/agent/drivers/sandbox/sandbox-driver.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";
import { refused } from "../support/refused.js";

let env: DevEnv;
let vms: SignedClient<typeof VmServiceService>;

beforeAll(async () => {
  env = await startDevEnv();
  vms = createClient(VmServiceService, env.dev.server.address, { key: env.admin });
});

afterAll(async () => {
  vms?.close();
  await env?.stop();
});

async function until(vmId: string, state: VmState, ms = 15_000): Promise<Vm> {
  const deadline = Date.now() + ms;
  for (;;) {
    const { vm } = await vms.getVm({ vmId });
    if (vm!.state === state) return vm!;
    if (Date.now() > deadline) throw new Error(`VM ${vmId} is ${VmState[vm!.state]} (${vm!.failureReason}), not ${VmState[state]}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.skipIf(!bwrapAvailable())("VM lifecycle on the sandbox driver", () => {
  it("creates, runs, stops, starts and terminates a process VM, leaving nothing behind", async () => {
    const { vm: created } = await vms.createVm({ requestId: "vm-life-1", name: "life", image: "process", resources: { vcpus: 1, memoryMib: 256, diskGib: 0 } });
    expect(created!.state).toBe(VmState.VM_STATE_SCHEDULED);
    expect(created!.hypervisor).toBe(HypervisorType.HYPERVISOR_TYPE_SANDBOX);
    expect(created!.hypervisorReason).toContain("sandbox");
    const running = await until(created!.vmId, VmState.VM_STATE_RUNNING);
    expect(running.hostId).toBe("dev-host-1");
    expect(running.accelerator).toBe("none");

    const stopped = (await vms.stopVm({ requestId: "vm-life-stop", vmId: running.vmId, timeoutSeconds: 5 })).vm!;
    expect(stopped.state).toBe(VmState.VM_STATE_STOPPED);
    const again = (await vms.startVm({ requestId: "vm-life-start", vmId: running.vmId })).vm!;
    expect(again.state).toBe(VmState.VM_STATE_RUNNING);

    const dir = path.join(env.config.dataDir, "agent", "dev-host-1", "vms", running.vmId);
    const state = JSON.parse((await import("node:fs")).readFileSync(path.join(dir, "instance.json"), "utf8")) as { handle: { pid: number } };
    expect(processAlive(state.handle.pid, running.vmId)).toBe(true);

    const terminated = (await vms.terminateVm({ requestId: "vm-life-term", vmId: running.vmId })).vm!;
    expect(terminated.state).toBe(VmState.VM_STATE_TERMINATED);
    expect(processAlive(state.handle.pid, running.vmId)).toBe(false);
    expect(existsSync(dir)).toBe(false);

    const err = await refused(vms.startVm({ requestId: "vm-life-start-2", vmId: running.vmId }));
    expect([err.status, err.reason]).toEqual(["FAILED_PRECONDITION", "INVALID_STATE"]);
  });

  it("refuses illegal transitions and unsupported operations with the driver's name", async () => {
    const { vm } = await vms.createVm({ requestId: "vm-ops-1", name: "ops", image: "process", resources: { vcpus: 1, memoryMib: 128, diskGib: 0 } });
    await until(vm!.vmId, VmState.VM_STATE_RUNNING);
    const startRunning = await refused(vms.startVm({ requestId: "vm-ops-start", vmId: vm!.vmId }));
    expect([startRunning.status, startRunning.reason]).toEqual(["FAILED_PRECONDITION", "INVALID_STATE"]);
    const attach = await refused(vms.attachVolume({ requestId: "vm-ops-attach", vmId: vm!.vmId, volume: { volumeId: "data", sizeGib: 1, readOnly: false } }));
    expect([attach.status, attach.reason]).toEqual(["UNIMPLEMENTED", "DRIVER_UNSUPPORTED"]);
    expect(attach.message).toContain("sandbox driver");
    await vms.terminateVm({ requestId: "vm-ops-term", vmId: vm!.vmId });
  });

  it("stops by force when the guest outlives the graceful window, and says so", async () => {
    // The guest ignores SIGTERM (children inherit the ignored signal).
    const { vm } = await vms.createVm({ requestId: "vm-stubborn", name: "stubborn", image: "process", resources: { vcpus: 1, memoryMib: 128, diskGib: 0 }, command: ["/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"] });
    await until(vm!.vmId, VmState.VM_STATE_RUNNING);
    const t0 = Date.now();
    const res = await vms.stopVm({ requestId: "vm-stubborn-stop", vmId: vm!.vmId, timeoutSeconds: 1 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
    expect(res.vm!.state).toBe(VmState.VM_STATE_STOPPED);
    expect(res.forced).toBe(true);
    // A guest that honours SIGTERM stops gracefully: forced is false.
    const { vm: polite } = await vms.createVm({ requestId: "vm-polite", name: "polite", image: "process", resources: { vcpus: 1, memoryMib: 128, diskGib: 0 } });
    await until(polite!.vmId, VmState.VM_STATE_RUNNING);
    expect((await vms.stopVm({ requestId: "vm-polite-stop", vmId: polite!.vmId, timeoutSeconds: 10 })).forced).toBe(false);
    for (const v of [vm!, polite!]) await vms.terminateVm({ requestId: `vm-force-term-${v.vmId}`, vmId: v.vmId });
  });

  it("reports the capability matrix from the drivers' own tables", async () => {
    const { hosts } = await vms.getCapabilities({});
    const sandbox = hosts.find((h) => h.hostId === "dev-host-1")!.drivers.find((d) => d.hypervisor === HypervisorType.HYPERVISOR_TYPE_SANDBOX)!;
    expect(sandbox.operations).toEqual(expect.arrayContaining(["create", "start", "stop", "terminate"]));
    expect(sandbox.operations).not.toContain("attachVolume");
  });

  it("streams state changes with type, detail and initiator", async () => {
    const stream = vms.watchVmEvents({ vmId: "", afterSeq: 0 });
    const seen: string[] = [];
    const reading = (async () => {
      for await (const { event } of stream) {
        seen.push(`${VmState[event!.state]}:${event!.initiator}`);
        if (event!.state === VmState.VM_STATE_RUNNING) break;
      }
    })();
    await new Promise((r) => setTimeout(r, 100));
    const { vm } = await vms.createVm({ requestId: "vm-watch-1", name: "watched", image: "process", resources: { vcpus: 1, memoryMib: 128, diskGib: 0 } });
    await reading;
    stream.cancel();
    expect(seen).toEqual(expect.arrayContaining(["VM_STATE_SCHEDULED:admin", "VM_STATE_STARTING:admin", "VM_STATE_RUNNING:admin"]));
    await vms.terminateVm({ requestId: "vm-watch-term", vmId: vm!.vmId });
  });
});

describe("VM bad input", () => {
  it.each([
    [{ name: "Bad Name", image: "process" }, "INVALID_ARGUMENT", "name"],
    [{ name: "ok", image: "windows-11" }, "INVALID_ARGUMENT", "UNKNOWN_IMAGE"],
    [{ name: "ok", image: "process", resources: { vcpus: 1000, memoryMib: 128, diskGib: 0 } }, "INVALID_ARGUMENT", "IMPOSSIBLE_RESOURCES"],
    [{ name: "ok", image: "process", hypervisor: HypervisorType.HYPERVISOR_TYPE_QEMU }, "INVALID_ARGUMENT", "UNSUITABLE_HYPERVISOR"],
  ])("refuses %j", async (req, status, what) => {
    const err = await refused(vms.createVm({ requestId: `bad-${Math.random()}`, resources: { vcpus: 1, memoryMib: 128, diskGib: 0 }, ...req }));
    expect(err.status).toBe(status);
    expect(`${err.reason} ${err.message} ${err.field}`).toContain(what);
  });

  it("refuses an unknown hypervisor type", async () => {
    const err = await refused(vms.createVm({ requestId: "bad-hv", name: "ok", image: "process", resources: { vcpus: 1, memoryMib: 128, diskGib: 0 }, hypervisor: 99 as HypervisorType }));
    expect([err.status, err.reason, err.field]).toEqual(["INVALID_ARGUMENT", "UNKNOWN_HYPERVISOR", "hypervisor"]);
  });

  it("names the filter that eliminated the hosts when none has room (RESOURCE_EXHAUSTED)", async () => {
    // Within the API's limits, beyond this host's memory.
    const err = await refused(vms.createVm({ requestId: "no-room", name: "huge", image: "process", resources: { vcpus: 1, memoryMib: 1024 * 1024, diskGib: 0 } }));
    expect([err.status, err.reason]).toEqual(["RESOURCE_EXHAUSTED", "NO_VALID_HOST"]);
    expect(err.message).toContain("0 of 1 hosts fit: RamFilter removed 1");
    const cpu = await refused(vms.createVm({ requestId: "no-cpu", name: "wide", image: "process", resources: { vcpus: 64, memoryMib: 128, diskGib: 0 } }));
    expect(cpu.message).toContain("CoreFilter removed 1");
  });

  it("says which hosts were eliminated when none fits", async () => {
    const err = await refused(vms.createVm({ requestId: "no-host", name: "big", image: "tiny-linux", resources: { vcpus: 1, memoryMib: 128, diskGib: 0 } }));
    expect([err.status, err.reason]).toEqual(["RESOURCE_EXHAUSTED", "NO_VALID_HOST"]);
    expect(err.message).toContain("qemu");
  });

  it("hides other principals' VMs", async () => {
    const err = await refused(vms.getVm({ vmId: "vm-doesnotexist" }));
    expect([err.status, err.reason]).toEqual(["NOT_FOUND", "VM_NOT_FOUND"]);
  });
});
