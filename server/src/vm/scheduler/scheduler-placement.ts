// The scheduler behind the VM manager's Placement seam (issue 4 "Scheduler" + hypervisor choice):
// choose the hypervisor from the image, features, up hosts and cost, then filter, weigh and
// claim a host atomically under the VM's id; alternates are kept for a retry after a failed start.
import { HypervisorType } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { HostCapabilities } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { chooseHypervisor, type HypervisorProfile } from "../manager/hypervisor-choice.js";
import { capabilitiesOf } from "../manager/host-inventory-messages.js";
import type { HostInventory } from "../manager/host-inventory.js";
import type { Placement, PlacementDecision, PlacementRequest } from "../manager/placement.js";
import { imageInfo } from "../manager/vm-images.js";
import { ClaimingScheduler, type ClaimingSchedulerOptions } from "./claiming-scheduler.js";
import type { SchedulingRequest } from "./host-filters.js";

export interface SchedulerPlacementOptions {
  scheduler?: ClaimingSchedulerOptions;
  /** Per-hypervisor cost table for the choice (lower is cheaper). */
  costs?: ReadonlyMap<HypervisorType, number>;
  profiles?: readonly HypervisorProfile[];
}

export class SchedulerPlacement implements Placement {
  private readonly scheduler: ClaimingScheduler;

  constructor(
    private readonly inventory: HostInventory,
    private readonly options: SchedulerPlacementOptions = {},
  ) {
    this.scheduler = new ClaimingScheduler(inventory, options.scheduler);
  }

  private schedulingRequest(req: PlacementRequest, hypervisor: HypervisorType): SchedulingRequest {
    const r = req.resources;
    return { resources: { vcpus: r.vcpus, memoryMib: r.memoryMib, diskGib: r.diskGib }, hypervisor, features: req.features, region: req.region };
  }

  async place(req: PlacementRequest): Promise<PlacementDecision> {
    const image = imageInfo(req.image);
    const choice = chooseHypervisor({
      os: req.os || image.os,
      compatible: image.hypervisors,
      requested: req.hypervisor,
      features: req.features,
      hosts: await this.inventory.list(),
      ...(this.options.costs ? { costs: this.options.costs } : {}),
      ...(this.options.profiles ? { profiles: this.options.profiles } : {}),
    });
    const p = await this.scheduler.schedule(this.schedulingRequest(req, choice.hypervisor), req.vmId);
    return {
      hostId: p.hostId,
      region: p.region,
      alternates: p.alternates,
      hypervisor: choice.hypervisor,
      reason: `${choice.reason}; host ${p.hostId}: ${p.detail}`,
      ...(choice.suggestion ? { suggestion: choice.suggestion } : {}),
    };
  }

  /** Moves the VM's claim to hostId (an alternate after a failed start); false when it no longer fits. */
  async reclaim(vmId: string, hostId: string, req: PlacementRequest): Promise<{ region: string } | undefined> {
    await this.inventory.release(vmId);
    const r = req.resources;
    if (!(await this.inventory.claim(hostId, { vcpus: r.vcpus, memoryMib: r.memoryMib, diskGib: r.diskGib }, vmId))) return undefined;
    return { region: (await this.inventory.get(hostId))?.region ?? "" };
  }

  async release(vmId: string): Promise<void> {
    await this.inventory.release(vmId);
  }

  async capabilities(): Promise<HostCapabilities[]> {
    return (await this.inventory.list()).filter((h) => h.up).map(capabilitiesOf);
  }
}
