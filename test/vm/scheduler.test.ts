// The Nova-style scheduler (issue 4 "Scheduler"): each filter proven by a host only it drops,
// weigher normalisation and multipliers, alternates, NO_VALID_HOST naming the filters,
// heartbeats marking hosts down, and claims falling to alternates when a race is lost.
import { describe, expect, it } from "vitest";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { Feature, HypervisorType } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { HostRegistration, HostState } from "../../server/src/vm/manager/host-inventory.js";
import { MemoryHostInventory } from "../../server/src/vm/manager/host-inventory-memory.js";
import { ClaimingScheduler } from "../../server/src/vm/scheduler/claiming-scheduler.js";
import { selectHosts } from "../../server/src/vm/scheduler/filter-scheduler.js";
import {
  ComputeFilter,
  CoreFilter,
  DEFAULT_FILTERS,
  DiskFilter,
  FeatureFilter,
  HypervisorTypeFilter,
  RamFilter,
  RegionFilter,
  type HostFilter,
  type SchedulingRequest,
} from "../../server/src/vm/scheduler/host-filters.js";
import { InstanceCountWeigher, LatencyWeigher, LoadWeigher, normalise, RamWeigher } from "../../server/src/vm/scheduler/host-weighers.js";

const QEMU = HypervisorType.HYPERVISOR_TYPE_QEMU;
const SANDBOX = HypervisorType.HYPERVISOR_TYPE_SANDBOX;

function host(id: string, over: Partial<HostState> = {}): HostState {
  return {
    hostId: id,
    region: "eu-1",
    total: { vcpus: 8, memoryMib: 16384, diskGib: 100 },
    used: { vcpus: 0, memoryMib: 0, diskGib: 0 },
    ratios: { cpu: 4, ram: 1, disk: 1 },
    hypervisors: [
      { hypervisor: QEMU, features: [Feature.FEATURE_BLOCK_HOTPLUG, Feature.FEATURE_MEMORY_INSPECTION], accelerator: "tcg", cost: 4 },
      { hypervisor: SANDBOX, features: [Feature.FEATURE_FAST_START], accelerator: "none", cost: 1 },
    ],
    load: 0,
    instanceCount: 0,
    latencyMs: 1,
    up: true,
    lastHeartbeatMs: 0,
    ...over,
  };
}

const request = (over: Partial<SchedulingRequest> = {}): SchedulingRequest => ({
  resources: { vcpus: 2, memoryMib: 2048, diskGib: 10 },
  hypervisor: QEMU,
  features: [],
  region: "eu-1",
  ...over,
});

function noValidHost(fn: () => unknown): TrustplaneError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(TrustplaneError);
    const err = e as TrustplaneError;
    expect(err.status).toBe("RESOURCE_EXHAUSTED");
    expect(err.reason).toBe("NO_VALID_HOST");
    return err;
  }
  throw new Error("expected NO_VALID_HOST");
}

describe("filters: each drops exactly the host that violates it", () => {
  // A host that fails only the named filter, next to one that passes all of them.
  const cases: [HostFilter, HostState, SchedulingRequest?][] = [
    [ComputeFilter, host("bad", { up: false })],
    [RegionFilter, host("bad", { region: "us-1" })],
    [HypervisorTypeFilter, host("bad", { hypervisors: [{ hypervisor: SANDBOX, features: [Feature.FEATURE_FAST_START], accelerator: "none", cost: 1 }] })],
    [
      FeatureFilter,
      host("bad", { hypervisors: [{ hypervisor: QEMU, features: [Feature.FEATURE_MEMORY_INSPECTION], accelerator: "tcg", cost: 4 }] }),
      request({ features: [Feature.FEATURE_BLOCK_HOTPLUG] }),
    ],
    // 8 vCPUs × ratio 4 = 32 schedulable; 31 used + 2 requested does not fit.
    [CoreFilter, host("bad", { used: { vcpus: 31, memoryMib: 0, diskGib: 0 } })],
    [RamFilter, host("bad", { used: { vcpus: 0, memoryMib: 15000, diskGib: 0 } })],
    [DiskFilter, host("bad", { used: { vcpus: 0, memoryMib: 0, diskGib: 95 } })],
  ];

  it.each(cases.map(([f, h, r]) => ({ name: f.name, f, h, r: r ?? request() })))("$name", ({ f, h, r }) => {
    expect(f.passes(h, r)).toBe(false);
    expect(f.passes(host("good"), r)).toBe(true);
    // Through the scheduler: the only host is dropped and the message charges this filter.
    const err = noValidHost(() => selectHosts([h], r));
    expect(err.message).toContain(`0 of 1 hosts fit: ${f.name} removed 1`);
    // And alongside a good host, the good one is chosen.
    expect(selectHosts([h, host("good")], r).ranked.map((x) => x.host.hostId)).toEqual(["good"]);
  });

  it("applies allocation ratios: CPU overcommit 4.0 admits 32 vCPUs on 8 cores, RAM ratio 1.0 none", () => {
    const h = host("h", { used: { vcpus: 30, memoryMib: 14336, diskGib: 0 } });
    expect(CoreFilter.passes(h, request())).toBe(true); // 30 + 2 = 32 ≤ 8 × 4
    expect(CoreFilter.passes(h, request({ resources: { vcpus: 3, memoryMib: 0, diskGib: 0 } }))).toBe(false);
    expect(RamFilter.passes(h, request())).toBe(true); // 14336 + 2048 = 16384 ≤ 16384 × 1
    expect(RamFilter.passes(h, request({ resources: { vcpus: 0, memoryMib: 2049, diskGib: 0 } }))).toBe(false);
    const ram15 = host("r", { ratios: { cpu: 4, ram: 1.5, disk: 1 }, used: { vcpus: 0, memoryMib: 20000, diskGib: 0 } });
    expect(RamFilter.passes(ram15, request())).toBe(true); // 22048 ≤ 24576
  });

  it("an unspecified hypervisor accepts any driver that has every feature", () => {
    const r = request({ hypervisor: HypervisorType.HYPERVISOR_TYPE_UNSPECIFIED, features: [Feature.FEATURE_FAST_START] });
    const qemuOnly = host("q", { hypervisors: [{ hypervisor: QEMU, features: [Feature.FEATURE_BLOCK_HOTPLUG], accelerator: "tcg", cost: 4 }] });
    expect(HypervisorTypeFilter.passes(qemuOnly, r)).toBe(true);
    expect(FeatureFilter.passes(qemuOnly, r)).toBe(false);
    expect(FeatureFilter.passes(host("both"), r)).toBe(true);
  });

  it("features must come from one driver, not the union of a host's drivers", () => {
    const r = request({ hypervisor: HypervisorType.HYPERVISOR_TYPE_UNSPECIFIED, features: [Feature.FEATURE_FAST_START, Feature.FEATURE_BLOCK_HOTPLUG] });
    expect(FeatureFilter.passes(host("both"), r)).toBe(false);
  });
});

describe("NO_VALID_HOST message", () => {
  it("says which filter eliminated how many of the hosts", () => {
    const hosts = [
      ...Array.from({ length: 12 }, (_, i) => host(`ram-${i}`, { used: { vcpus: 0, memoryMib: 16000, diskGib: 0 } })),
      ...Array.from({ length: 8 }, (_, i) => host(`far-${i}`, { region: "us-1" })),
    ];
    const err = noValidHost(() => selectHosts(hosts, request()));
    expect(err.message).toMatch(/^0 of 20 hosts fit: RegionFilter removed 8, RamFilter removed 12;/);
  });

  it("says when no host has registered", () => {
    expect(noValidHost(() => selectHosts([], request())).message).toContain("no host has registered");
  });
});

describe("weighers", () => {
  it("normalise maps min → 0 and max → 1, all-equal → 0", () => {
    expect([...normalise(Float64Array.from([5, 5, 10, 10, 15, 20, 20, 15, 10, 5]))].map((x) => +x.toFixed(2))).toEqual([
      0, 0, 0.33, 0.33, 0.67, 1, 1, 0.67, 0.33, 0,
    ]);
    expect([...normalise(Float64Array.from([7, 7, 7]))]).toEqual([0, 0, 0]);
  });

  it("total weight = Σ multiplier × normalised raw; the scale of a raw value does not matter", () => {
    // RAM free differs by GiBs, load by fractions: after normalisation each counts by its multiplier only.
    const hosts = [
      host("a", { used: { vcpus: 0, memoryMib: 0, diskGib: 0 }, load: 0.9 }), // most free RAM, highest load
      host("b", { used: { vcpus: 0, memoryMib: 8192, diskGib: 0 }, load: 0.1 }), // less RAM, least load
      host("c", { used: { vcpus: 0, memoryMib: 4096, diskGib: 0 }, load: 0.5 }),
    ];
    const cfg = (ram: number, load: number) => ({ weighers: [{ weigher: RamWeigher, multiplier: ram }, { weigher: LoadWeigher, multiplier: load }] });
    const weights = (ram: number, load: number) => Object.fromEntries(selectHosts(hosts, request(), cfg(ram, load)).ranked.map((r) => [r.host.hostId, +r.weight.toFixed(3)]));
    // a: ram 1, load 1 → 1·1 + (−1)·1 = 0; b: ram 0, load 0 → 0; c: ram 0.5, load 0.5 → 0.
    expect(weights(1, -1)).toEqual({ a: 0, b: 0, c: 0 });
    expect(weights(2, -1)).toEqual({ a: 1, c: 0.5, b: 0 });
    expect(selectHosts(hosts, request(), cfg(1, -2)).ranked[0]!.host.hostId).toBe("b");
    // Negative RAM multiplier stacks: the fullest host wins.
    expect(selectHosts(hosts, request(), cfg(-1, 0)).ranked[0]!.host.hostId).toBe("b");
  });

  it("default weighers prefer free memory, low load, few instances and low latency", () => {
    const base = { used: { vcpus: 0, memoryMib: 0, diskGib: 0 } };
    for (const [field, worse] of [
      ["used", { vcpus: 0, memoryMib: 8192, diskGib: 0 }],
      ["load", 0.8],
      ["instanceCount", 7],
      ["latencyMs", 40],
    ] as const) {
      const hosts = [host("worse", { ...base, [field]: worse }), host("better", base)];
      expect(selectHosts(hosts, request()).ranked.map((r) => r.host.hostId), field).toEqual(["better", "worse"]);
    }
    expect([RamWeigher, LoadWeigher, InstanceCountWeigher, LatencyWeigher].map((w) => Math.sign(w.defaultMultiplier))).toEqual([1, -1, -1, -1]);
  });
});

describe("alternates", () => {
  it("returns the chosen host then alternates ordered by weight, as many as configured", () => {
    const hosts = Array.from({ length: 10 }, (_, i) => host(`h${i}`, { load: (i * 7) % 10 / 10 }));
    const sel = selectHosts(hosts, request(), { alternates: 3 });
    expect(sel.ranked.map((r) => r.host.hostId)).toEqual(["h0", "h3", "h6", "h9"]); // loads 0, .1, .2, .3
    const weights = sel.ranked.map((r) => r.weight);
    expect([...weights].sort((a, b) => b - a)).toEqual(weights);
    expect(sel.passed).toBe(10);
    expect(selectHosts(hosts, request(), { alternates: 0 }).ranked).toHaveLength(1);
  });

  it("top-k equals a full sort over many hosts", () => {
    const hosts = Array.from({ length: 500 }, (_, i) => host(`h${i}`, { load: ((i * 7919) % 997) / 997, latencyMs: (i * 31) % 50, instanceCount: i % 13 }));
    const sel = selectHosts(hosts, request(), { alternates: 5 });
    const all = selectHosts(hosts, request(), { alternates: 1000 });
    expect(sel.ranked.map((r) => r.host.hostId)).toEqual(all.ranked.slice(0, 6).map((r) => r.host.hostId));
    expect(all.ranked).toHaveLength(500);
  });
});

const reg = (id: string, over: Partial<HostRegistration> = {}): HostRegistration => ({
  hostId: id,
  region: "eu-1",
  total: { vcpus: 4, memoryMib: 8192, diskGib: 50 },
  hypervisors: [{ hypervisor: QEMU, features: [Feature.FEATURE_BLOCK_HOTPLUG], accelerator: "tcg", cost: 4 }],
  ...over,
});

describe("heartbeats and the claiming scheduler (in-memory inventory)", () => {
  it("a host that misses heartbeats is marked down and excluded; a heartbeat brings it back", async () => {
    const inv = new MemoryHostInventory();
    await inv.register(reg("a"), 1000);
    await inv.register(reg("b"), 1000);
    await inv.heartbeat("b", { load: 0, instanceCount: 0, latencyMs: 1 }, 20_000);
    expect(await inv.markDownMissedHeartbeats(31_000, 15_000)).toEqual(["a"]);
    expect(await inv.markDownMissedHeartbeats(31_000, 15_000)).toEqual([]);
    const sched = new ClaimingScheduler(inv);
    const p = await sched.schedule(request(), "vm-1");
    expect(p.hostId).toBe("b");
    expect(p.alternates).toEqual([]);
    expect(await inv.claim("a", { vcpus: 1, memoryMib: 1, diskGib: 1 }, "on-down")).toBe(false);
    await inv.heartbeat("a", { load: 0, instanceCount: 0, latencyMs: 1 }, 32_000);
    expect((await inv.get("a"))!.up).toBe(true);
    expect(await inv.heartbeat("ghost", { load: 0, instanceCount: 0, latencyMs: 1 }, 32_000)).toBe(false);
    await inv.markDownMissedHeartbeats(100_000, 15_000);
    await expect(sched.schedule(request(), "vm-2")).rejects.toMatchObject({ reason: "NO_VALID_HOST", message: expect.stringContaining("ComputeFilter removed 2") });
  });

  it("falls to the alternate when the best host's claim loses a race", async () => {
    const inv = new MemoryHostInventory();
    await inv.register(reg("best", { total: { vcpus: 4, memoryMib: 16384, diskGib: 50 } }), 0);
    await inv.register(reg("second"), 0);
    const snapshot = await inv.list();
    // A concurrent create fills "best" after our snapshot but before our claim.
    const racing: typeof inv = Object.create(inv);
    racing.list = async () => {
      await inv.claim("best", { vcpus: 16, memoryMib: 16384, diskGib: 0 }, "other-vm");
      return snapshot;
    };
    const p = await new ClaimingScheduler(racing).schedule(request(), "vm-1");
    expect(p).toMatchObject({ hostId: "second", attempts: 2 });
    expect((await inv.get("second"))!.used).toEqual({ vcpus: 2, memoryMib: 2048, diskGib: 10 });
  });

  it("reschedule after a failed start releases the claim and claims an alternate", async () => {
    const inv = new MemoryHostInventory();
    for (const id of ["a", "b", "c"]) await inv.register(reg(id), 0);
    const sched = new ClaimingScheduler(inv);
    const p = await sched.schedule(request(), "vm-1");
    expect(p.alternates).toHaveLength(2);
    const q = await sched.reschedule(request(), "vm-1", [p.hostId], p.alternates);
    expect(q.hostId).toBe(p.alternates[0]);
    expect((await inv.get(p.hostId))!.used.vcpus).toBe(0);
    expect((await inv.get(q.hostId))!.used.vcpus).toBe(2);
    expect(await sched.release("vm-1")).toBe(true);
    expect(await sched.release("vm-1")).toBe(false);
    expect((await inv.get(q.hostId))!.used.vcpus).toBe(0);
  });

  it("filters and claims agree: a host is filled to its allocation ratio and no further", async () => {
    const inv = new MemoryHostInventory();
    await inv.register(reg("only", { total: { vcpus: 2, memoryMib: 65536, diskGib: 1000 } }), 0); // 8 schedulable vCPUs
    const sched = new ClaimingScheduler(inv);
    for (let i = 0; i < 4; i++) await sched.schedule(request(), `vm-${i}`);
    await expect(sched.schedule(request(), "vm-5")).rejects.toMatchObject({ message: expect.stringContaining("CoreFilter removed 1") });
  });
});

it("DEFAULT_FILTERS holds every built-in filter", () => {
  expect(DEFAULT_FILTERS.map((f) => f.name).sort()).toEqual(
    ["ComputeFilter", "CoreFilter", "DiskFilter", "FeatureFilter", "HypervisorTypeFilter", "RamFilter", "RegionFilter"].sort(),
  );
});
