// Between the wire and the host inventory (issue 4 "Hosts"): RegisterHost / Heartbeat messages
// from agents become inventory calls, and inventory rows become HostCapacity / HostCapabilities
// for ListHostCapacity, RegisterHost's answer and `trustplane hypervisors`.
import { invalidArgument } from "../../../../sdk/src/errors.js";
import type { DriverCapabilities, HeartbeatRequest, HostCapabilities, HostCapacity } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { HostHeartbeat, HostRegistration, HostState, HypervisorOffer } from "./host-inventory.js";

const offer = (d: DriverCapabilities): HypervisorOffer => ({
  hypervisor: d.hypervisor,
  features: [...d.features],
  accelerator: d.accelerator,
  cost: d.cost,
  operations: [...d.operations],
});

const driver = (o: HypervisorOffer): DriverCapabilities => ({
  hypervisor: o.hypervisor,
  operations: [...(o.operations ?? [])],
  features: [...o.features],
  accelerator: o.accelerator,
  cost: o.cost,
});

/** A RegisterHost capacity as the agent sent it; unset (0) ratios take the defaults. */
export function registrationFromCapacity(c: HostCapacity): HostRegistration {
  if (!c.hostId) throw invalidArgument("capacity.host_id", "is required");
  if (!c.total) throw invalidArgument("capacity.total", "is required: the host's vCPUs, memory and disk");
  const ratio = (v: number) => (v === 0 ? undefined : v);
  const ratios = { cpu: ratio(c.cpuAllocationRatio), ram: ratio(c.ramAllocationRatio), disk: ratio(c.diskAllocationRatio) };
  return {
    hostId: c.hostId,
    region: c.region,
    total: { vcpus: c.total.vcpus, memoryMib: c.total.memoryMib, diskGib: c.total.diskGib },
    ratios: Object.fromEntries(Object.entries(ratios).filter(([, v]) => v !== undefined)),
    hypervisors: c.drivers.map(offer),
    load: c.load,
    instanceCount: c.instanceCount,
    latencyMs: c.latencyMs,
  };
}

export function heartbeatFromRequest(r: HeartbeatRequest): HostHeartbeat {
  return {
    load: r.load,
    instanceCount: r.instanceCount,
    latencyMs: r.latencyMs,
    ...(r.drivers.length ? { hypervisors: r.drivers.map(offer) } : {}),
  };
}

export function capacityOf(h: HostState): HostCapacity {
  return {
    hostId: h.hostId,
    region: h.region,
    total: { ...h.total },
    used: { ...h.used },
    cpuAllocationRatio: h.ratios.cpu,
    ramAllocationRatio: h.ratios.ram,
    diskAllocationRatio: h.ratios.disk,
    load: h.load,
    instanceCount: h.instanceCount,
    latencyMs: h.latencyMs,
    up: h.up,
    lastHeartbeatMs: h.lastHeartbeatMs,
    drivers: h.hypervisors.map(driver),
  };
}

export function capabilitiesOf(h: HostState): HostCapabilities {
  return { hostId: h.hostId, drivers: h.hypervisors.map(driver) };
}
