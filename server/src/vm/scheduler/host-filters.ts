// The scheduler's pass/fail filters (issue 4 "Scheduler", Nova's filter stage): each is a small
// named plugin that keeps or drops one host for one request. The scheduler counts, per filter,
// how many hosts it removed so NO_VALID_HOST can say why nothing fits.
import { HypervisorType, type Feature } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { HostState, HypervisorOffer, ResourceAmounts } from "../manager/host-inventory.js";

export interface SchedulingRequest {
  resources: ResourceAmounts;
  /** UNSPECIFIED: any driver on the host that meets the features. */
  hypervisor: HypervisorType;
  features: readonly Feature[];
  /** Empty: any region. */
  region: string;
}

export interface HostFilter {
  /** Named as Nova names its filters; appears in NO_VALID_HOST messages. */
  readonly name: string;
  passes(host: HostState, req: SchedulingRequest): boolean;
}

/** Whether a driver is one the request may use: the named hypervisor, or any when unspecified. */
const eligible = (d: HypervisorOffer, req: SchedulingRequest) =>
  req.hypervisor === HypervisorType.HYPERVISOR_TYPE_UNSPECIFIED || d.hypervisor === req.hypervisor;

// Plain loops below: these run for every host on every create (10k hosts), so no per-host allocation.
function hasAll(d: HypervisorOffer, features: readonly Feature[]): boolean {
  for (const f of features) if (!d.features.includes(f)) return false;
  return true;
}

/** Nova's ComputeFilter: only hosts whose agent is heartbeating. */
export const ComputeFilter: HostFilter = { name: "ComputeFilter", passes: (h) => h.up };

/** The host offers the requested hypervisor type. */
export const HypervisorTypeFilter: HostFilter = {
  name: "HypervisorTypeFilter",
  passes: (h, req) => {
    for (const d of h.hypervisors) if (eligible(d, req)) return true;
    return false;
  },
};

/** One eligible driver on the host provides every required feature. */
export const FeatureFilter: HostFilter = {
  name: "FeatureFilter",
  passes: (h, req) => {
    if (req.features.length === 0) return true;
    for (const d of h.hypervisors) if (eligible(d, req) && hasAll(d, req.features)) return true;
    return false;
  },
};

/** The host is in the requested region (Nova's AvailabilityZoneFilter). */
export const RegionFilter: HostFilter = { name: "RegionFilter", passes: (h, req) => req.region === "" || h.region === req.region };

/** Free vCPUs with the CPU allocation ratio: used + requested ≤ total × ratio. */
export const CoreFilter: HostFilter = {
  name: "CoreFilter",
  passes: (h, req) => h.used.vcpus + req.resources.vcpus <= h.total.vcpus * h.ratios.cpu,
};

/** Free memory with the RAM allocation ratio. */
export const RamFilter: HostFilter = {
  name: "RamFilter",
  passes: (h, req) => h.used.memoryMib + req.resources.memoryMib <= h.total.memoryMib * h.ratios.ram,
};

/** Free disk with the disk allocation ratio. */
export const DiskFilter: HostFilter = {
  name: "DiskFilter",
  passes: (h, req) => h.used.diskGib + req.resources.diskGib <= h.total.diskGib * h.ratios.disk,
};

/** Cheap, selective checks first: a host is charged to the first filter that drops it. */
export const DEFAULT_FILTERS: readonly HostFilter[] = [
  ComputeFilter,
  RegionFilter,
  HypervisorTypeFilter,
  FeatureFilter,
  CoreFilter,
  RamFilter,
  DiskFilter,
];
