// Job VMs from the VM area (seed 003 step 3: "through the VM area's scheduler; the sandbox
// driver by default"): the job service asks VmService — over its signed gRPC client, as the
// server's service principal — for a `job-runner` VM sized for the job, so the scheduler's
// atomic claim on a host's CPU and memory is the job's admission control (RESOURCE_EXHAUSTED
// when no host has room), and terminates it when the job ends.
import type { SignedClient } from "../../../sdk/src/client/create-client.js";
import { TrustplaneError } from "../../../sdk/src/errors.js";
import { HypervisorType, VmState, type VmServiceService } from "../../../sdk/src/gen/trustplane/vm/v1/vm.js";

export const JOB_VM_IMAGE = "job-runner";
/** Memory a job VM needs beside the module's own cap: Node, the worker, segments in flight. */
export const RUNNER_OVERHEAD_MIB = 256;

export interface JobVmInfo {
  vmId: string;
  hostId: string;
  state: VmState;
  failureReason: string;
}

/** What the job service needs of the VM area. */
export interface JobVms {
  create(input: { name: string; memoryBytes: number; requestId: string }): Promise<JobVmInfo>;
  get(vmId: string): Promise<JobVmInfo | undefined>;
  terminate(vmId: string): Promise<void>;
}

/** The job service's one check of a requested hypervisor: only drivers with a host channel. */
export function checkJobHypervisor(h: HypervisorType | undefined, field: string): void {
  if (h === undefined || h === HypervisorType.HYPERVISOR_TYPE_UNSPECIFIED || h === HypervisorType.HYPERVISOR_TYPE_SANDBOX) return;
  if (h === HypervisorType.HYPERVISOR_TYPE_QEMU) {
    throw new TrustplaneError("UNIMPLEMENTED", "DRIVER_UNSUPPORTED", `${field}: the qemu driver has no host channel for the job runner yet; use the sandbox driver (the default)`, field);
  }
  throw new TrustplaneError("INVALID_ARGUMENT", "UNKNOWN_HYPERVISOR", `${field}: unknown hypervisor ${h}`, field);
}

export class VmServiceJobVms implements JobVms {
  constructor(private readonly client: () => SignedClient<typeof VmServiceService>) {}

  async create(input: { name: string; memoryBytes: number; requestId: string }): Promise<JobVmInfo> {
    const memoryMib = Math.ceil(input.memoryBytes / (1024 * 1024)) + RUNNER_OVERHEAD_MIB;
    try {
      const { vm } = await this.client().createVm({
        requestId: input.requestId,
        name: input.name,
        image: JOB_VM_IMAGE,
        resources: { vcpus: 1, memoryMib, diskGib: 0 },
        hypervisor: HypervisorType.HYPERVISOR_TYPE_SANDBOX,
        // A job VM talks to nothing but its host channel: no network, no metadata endpoint.
        network: { mode: "none", portForwards: [] },
      });
      return { vmId: vm!.vmId, hostId: vm!.hostId, state: vm!.state, failureReason: vm!.failureReason };
    } catch (e) {
      // "No host" because none runs the sandbox driver (no bubblewrap) is a setup problem, not
      // a full house: say so, instead of RESOURCE_EXHAUSTED.
      if (e instanceof TrustplaneError && e.reason === "NO_VALID_HOST") {
        const { hosts } = await this.client().getCapabilities({});
        if (!hosts.some((h) => h.drivers.some((d) => d.hypervisor === HypervisorType.HYPERVISOR_TYPE_SANDBOX))) {
          throw new TrustplaneError("FAILED_PRECONDITION", "NO_JOB_VM_DRIVER", "no host runs the sandbox driver that job VMs need: install bubblewrap on the agents (apt-get install bubblewrap); jobs never run unconfined");
        }
      }
      throw e;
    }
  }

  async get(vmId: string): Promise<JobVmInfo | undefined> {
    try {
      const { vm } = await this.client().getVm({ vmId });
      return { vmId: vm!.vmId, hostId: vm!.hostId, state: vm!.state, failureReason: vm!.failureReason };
    } catch (e) {
      if (e instanceof TrustplaneError && e.status === "NOT_FOUND") return undefined;
      throw e;
    }
  }

  async terminate(vmId: string): Promise<void> {
    try {
      await this.client().terminateVm({ requestId: `terminate-${vmId}`, vmId }, { deadlineMs: 60_000 });
    } catch (e) {
      // Already gone is what we wanted.
      if (e instanceof TrustplaneError && (e.status === "NOT_FOUND" || e.reason === "INVALID_STATE")) return;
      throw e;
    }
  }
}
