// The host inventory the scheduler reads and claims against (issue 4, "Hosts" and the
// scheduler's atomic claims): capacity, allocation ratios, drivers, load and heartbeats per host.
// Two implementations share this interface: SQL (SQLite/PostgreSQL) and in-memory.
import { invalidArgument } from "../../../../sdk/src/errors.js";
import type { Feature, HypervisorType } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";

export interface ResourceAmounts {
  vcpus: number;
  memoryMib: number;
  diskGib: number;
}

/** Overcommit ratios as Nova's: schedulable = total × ratio. */
export interface AllocationRatios {
  cpu: number;
  ram: number;
  disk: number;
}

export const DEFAULT_ALLOCATION_RATIOS: Readonly<AllocationRatios> = Object.freeze({ cpu: 4.0, ram: 1.0, disk: 1.0 });

/** One driver on one host, as its agent reported it (a row of the capability matrix). */
export interface HypervisorOffer {
  hypervisor: HypervisorType;
  features: readonly Feature[];
  /** "kvm", "tcg" or "none" (sandbox), as probed on the host. */
  accelerator: string;
  /** Relative cost (lower is cheaper), from the driver. */
  cost: number;
  /** Uniform operation names the driver implements (capability matrix); kept for display. */
  operations?: readonly string[];
}

export interface HostRegistration {
  hostId: string;
  region: string;
  total: ResourceAmounts;
  ratios?: Partial<AllocationRatios>;
  hypervisors: readonly HypervisorOffer[];
  load?: number;
  instanceCount?: number;
  latencyMs?: number;
}

export interface HostHeartbeat {
  /** 1-minute load average divided by the number of cores. */
  load: number;
  instanceCount: number;
  /** Agent ↔ server round trip the agent measured. */
  latencyMs: number;
  /** Set when the drivers changed since registration (e.g. a KVM probe finished). */
  hypervisors?: readonly HypervisorOffer[];
}

export interface HostState {
  readonly hostId: string;
  readonly region: string;
  readonly total: Readonly<ResourceAmounts>;
  /** What the server's claims hold on this host (not what the agent measures). */
  readonly used: Readonly<ResourceAmounts>;
  readonly ratios: Readonly<AllocationRatios>;
  readonly hypervisors: readonly HypervisorOffer[];
  readonly load: number;
  readonly instanceCount: number;
  readonly latencyMs: number;
  readonly up: boolean;
  readonly lastHeartbeatMs: number;
}

export interface HostInventory {
  /** Adds or updates a host (capacity, ratios, drivers); its claims and used amounts survive. Marks it up. */
  register(reg: HostRegistration, nowMs: number): Promise<HostState>;
  /** Records a heartbeat and marks the host up; false when the host never registered. */
  heartbeat(hostId: string, hb: HostHeartbeat, nowMs: number): Promise<boolean>;
  /** Marks down every up host whose last heartbeat is older than nowMs − graceMs; returns their ids. */
  markDownMissedHeartbeats(nowMs: number, graceMs: number): Promise<string[]>;
  get(hostId: string): Promise<HostState | undefined>;
  list(): Promise<readonly HostState[]>;
  /**
   * Claims resources on an up host atomically: succeeds only if used + requested ≤ total × ratio
   * for every resource at the moment of the claim, so concurrent claims never over-commit.
   * Claiming an id that is already held on the same host answers true without counting twice.
   */
  claim(hostId: string, amounts: ResourceAmounts, claimId: string): Promise<boolean>;
  /** Gives a claim's resources back; idempotent (false when nothing was held). */
  release(claimId: string): Promise<boolean>;
}

/** Free schedulable amount of one resource: total × ratio − used (may be negative after a ratio cut). */
export function freeAmounts(h: HostState): ResourceAmounts {
  return {
    vcpus: h.total.vcpus * h.ratios.cpu - h.used.vcpus,
    memoryMib: h.total.memoryMib * h.ratios.ram - h.used.memoryMib,
    diskGib: h.total.diskGib * h.ratios.disk - h.used.diskGib,
  };
}

export function resolveRatios(r: Partial<AllocationRatios> | undefined): AllocationRatios {
  const out = { ...DEFAULT_ALLOCATION_RATIOS, ...(r ?? {}) };
  for (const [k, v] of Object.entries(out)) {
    if (!Number.isFinite(v) || v <= 0) throw invalidArgument(`ratios.${k}`, `allocation ratio must be a positive number, got ${v}`);
  }
  return out;
}

/** Rejects negative, fractional or non-finite amounts before they reach a claim or a registration. */
export function checkAmounts(field: string, a: ResourceAmounts): void {
  for (const [k, v] of Object.entries(a)) {
    if (!Number.isSafeInteger(v) || v < 0) throw invalidArgument(`${field}.${k}`, `must be a non-negative integer, got ${v}`);
  }
}
