// The scheduler behind the VM manager's Placement seam, the heartbeat monitor and the wire
// conversions (issue 4 "Scheduler", "Hosts"): hypervisor choice + claim in one call, the reason
// recorded, suggestions passed through, reclaim/release, and hosts marked down by the monitor.
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { Feature, HypervisorType } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { MemoryHostInventory } from "../../server/src/vm/manager/host-inventory-memory.js";
import { capacityOf, heartbeatFromRequest, registrationFromCapacity } from "../../server/src/vm/manager/host-inventory-messages.js";
import type { PlacementRequest } from "../../server/src/vm/manager/placement.js";
import { HeartbeatMonitor } from "../../server/src/vm/scheduler/heartbeat-monitor.js";
import { SchedulerPlacement } from "../../server/src/vm/scheduler/scheduler-placement.js";

const { HYPERVISOR_TYPE_QEMU: QEMU, HYPERVISOR_TYPE_SANDBOX: SANDBOX, HYPERVISOR_TYPE_UNSPECIFIED: ANY } = HypervisorType;

const capacity = (hostId: string, region = "eu-1") =>
  registrationFromCapacity({
    hostId,
    region,
    total: { vcpus: 2, memoryMib: 4096, diskGib: 40 },
    used: undefined,
    cpuAllocationRatio: 0,
    ramAllocationRatio: 0,
    diskAllocationRatio: 0,
    load: 0,
    instanceCount: 0,
    latencyMs: 1,
    up: true,
    lastHeartbeatMs: 0,
    drivers: [
      { hypervisor: QEMU, operations: ["start", "stop", "attachVolume"], features: [Feature.FEATURE_BLOCK_HOTPLUG], accelerator: "tcg", cost: 4 },
      { hypervisor: SANDBOX, operations: ["start", "stop"], features: [Feature.FEATURE_FAST_START], accelerator: "none", cost: 1 },
    ],
  });

const preq = (over: Partial<PlacementRequest> = {}): PlacementRequest => ({
  vmId: "vm-1",
  image: "tiny-linux",
  os: "linux",
  resources: { vcpus: 2, memoryMib: 1024, diskGib: 10 },
  hypervisor: ANY,
  features: [],
  region: "eu-1",
  ...over,
});

describe("SchedulerPlacement", () => {
  it("chooses the hypervisor, claims a host, records why, and keeps alternates", async () => {
    const inv = new MemoryHostInventory();
    for (const id of ["a", "b", "c"]) await inv.register(capacity(id), 0);
    const placement = new SchedulerPlacement(inv);
    const d = await placement.place(preq());
    expect(d.hypervisor).toBe(QEMU);
    expect(d.reason).toMatch(/^qemu: os linux runs on qemu; cost 4; on 3 up hosts; host [abc]: weight/);
    expect(d.alternates).toHaveLength(2);
    expect(d.region).toBe("eu-1");
    expect((await inv.get(d.hostId))!.used).toEqual({ vcpus: 2, memoryMib: 1024, diskGib: 10 });
    // Reclaim on an alternate moves the claim; release gives it back.
    expect(await placement.reclaim("vm-1", d.alternates[0]!, preq())).toEqual({ region: (await inv.get(d.alternates[0]!))!.region });
    expect((await inv.get(d.hostId))!.used.vcpus).toBe(0);
    expect((await inv.get(d.alternates[0]!))!.used.vcpus).toBe(2);
    await placement.release("vm-1");
    await placement.release("vm-1");
    expect((await inv.get(d.alternates[0]!))!.used.vcpus).toBe(0);
  });

  it("passes a suggestion through and refuses a driver that cannot do a required feature", async () => {
    const inv = new MemoryHostInventory();
    await inv.register(capacity("a"), 0);
    const placement = new SchedulerPlacement(inv);
    await expect(placement.place(preq({ image: "process", os: "process", hypervisor: SANDBOX, features: [Feature.FEATURE_BLOCK_HOTPLUG] }))).rejects.toMatchObject({
      status: "FAILED_PRECONDITION",
      reason: "UNSUPPORTED_FEATURE",
    });
    await expect(placement.place(preq({ region: "us-1" }))).rejects.toMatchObject({ reason: "NO_VALID_HOST", message: expect.stringContaining("RegionFilter removed 1") });
    await expect(placement.place(preq({ resources: { vcpus: 9, memoryMib: 1, diskGib: 1 } }))).rejects.toMatchObject({ message: expect.stringContaining("CoreFilter removed 1") });
  });

  it("reports the capability matrix of up hosts only", async () => {
    const inv = new MemoryHostInventory();
    await inv.register(capacity("a"), 0);
    await inv.register(capacity("b"), 10_000);
    await inv.markDownMissedHeartbeats(5_000, 1_000);
    const caps = await new SchedulerPlacement(inv).capabilities();
    expect(caps.map((c) => c.hostId)).toEqual(["b"]);
    expect(caps[0]!.drivers.map((d) => [d.hypervisor, d.operations])).toEqual([[QEMU, ["start", "stop", "attachVolume"]], [SANDBOX, ["start", "stop"]]]);
  });
});

describe("wire conversions", () => {
  it("unset ratios take the defaults (cpu 4.0, ram 1.0, disk 1.0) and round-trip to HostCapacity", async () => {
    const inv = new MemoryHostInventory();
    const h = await inv.register(capacity("a"), 7);
    const c = capacityOf(h);
    expect([c.cpuAllocationRatio, c.ramAllocationRatio, c.diskAllocationRatio]).toEqual([4, 1, 1]);
    expect(c.drivers).toHaveLength(2);
    expect(() => registrationFromCapacity({ ...c, total: undefined })).toThrow(/capacity.total/);
    expect(heartbeatFromRequest({ hostId: "a", load: 0.5, instanceCount: 1, latencyMs: 2, instances: [], used: undefined, drivers: [], events: [], final: false })).toEqual({ load: 0.5, instanceCount: 1, latencyMs: 2 });
  });
});

describe("HeartbeatMonitor", () => {
  it("marks down hosts after three missed intervals and logs it", async () => {
    const lines: string[] = [];
    const logger = createLogger({ destination: new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }) });
    const inv = new MemoryHostInventory();
    let now = 0;
    await inv.register(capacity("quiet"), 0);
    await inv.register(capacity("chatty"), 0);
    const mon = new HeartbeatMonitor(inv, logger, { intervalMs: 1000, now: () => now });
    now = 3000;
    expect(await mon.sweep()).toEqual([]); // exactly 3 intervals: not yet missed
    await inv.heartbeat("chatty", { load: 0, instanceCount: 0, latencyMs: 1 }, 2500);
    now = 3001;
    expect(await mon.sweep()).toEqual(["quiet"]);
    expect(lines.join("")).toContain("marked down");
    expect((await inv.get("chatty"))!.up).toBe(true);
  });

  it("gives every host a full grace period after the monitor (the server) starts", async () => {
    const inv = new MemoryHostInventory();
    // A row last heard long ago: the server itself was down meanwhile.
    await inv.register(capacity("old"), 0);
    let now = 100_000;
    const mon = new HeartbeatMonitor(inv, createLogger({ level: "silent" }), { intervalMs: 1000, now: () => now });
    now = 102_999;
    expect(await mon.sweep()).toEqual([]);
    now = 103_000;
    expect(await mon.sweep()).toEqual(["old"]);
  });
});
