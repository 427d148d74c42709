// The seam between the VM manager and scheduling: where a VM goes and on which hypervisor,
// with the reason recorded in the VM and alternates kept for a retry when a start fails.
import type { Feature, HostCapabilities, HypervisorType, Resources } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";

export interface PlacementRequest {
  vmId: string;
  image: string;
  os: string;
  resources: Resources;
  /** UNSPECIFIED: choose from the OS, the features, availability and cost. */
  hypervisor: HypervisorType;
  features: Feature[];
  region: string;
}

export interface PlacementDecision {
  hostId: string;
  /** The chosen host's region: the VM's region when the request named none (as Nova's AZ). */
  region: string;
  alternates: string[];
  hypervisor: HypervisorType;
  reason: string;
  /** Set when the customer's explicit choice is worse for the requested features. */
  suggestion?: { hypervisor: HypervisorType; text: string };
}

export interface Placement {
  /** Chooses a host and claims its resources atomically; throws RESOURCE_EXHAUSTED when none fits. */
  place(req: PlacementRequest): Promise<PlacementDecision>;
  /** Moves the claim to an alternate host after a failed start (the old claim is released);
   * answers that host's region, or undefined when it no longer fits. */
  reclaim(vmId: string, hostId: string, req: PlacementRequest): Promise<{ region: string } | undefined>;
  /** Releases whatever the VM holds (terminate, failure). Idempotent. */
  release(vmId: string): Promise<void>;
  capabilities(): Promise<HostCapabilities[]>;
}
