// Instance facts for identity tokens with format=full (what google-auth-library's Compute ID
// token client asks for), read from the VM manager's own records through VmService: the
// agent's word is never taken for what goes into a signed token (seed 000, GCE identity).
import type { SignedClient } from "../../../../sdk/src/client/create-client.js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { VmState, type VmServiceService } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { INSTANCE_ZONE, numericProjectId } from "../instance-identity.js";
import type { InstanceFacts } from "./access-token-minter.js";

type VmClient = SignedClient<typeof VmServiceService>;

/**
 * Facts about `vmId` when it runs on `hostId`, else undefined (an unknown VM, one on another
 * host, or one already terminated gets no instance claims). Project and name are the same
 * the VM's metadata endpoint serves: the owner as project id, the VM's name.
 */
export function vmInstanceFacts(vms: () => VmClient): (vmId: string, hostId: string) => Promise<InstanceFacts | undefined> {
  return async (vmId, hostId) => {
    const client = vms();
    try {
      const { vm } = await client.getVm({ vmId });
      if (!vm || vm.hostId !== hostId || vm.state === VmState.VM_STATE_TERMINATED || vm.state === VmState.VM_STATE_TERMINATING) return undefined;
      return { instanceId: vm.vmId, instanceName: vm.name || vm.vmId, projectId: vm.owner, projectNumber: numericProjectId(vm.owner), zone: INSTANCE_ZONE };
    } catch (e) {
      if (e instanceof TrustplaneError && e.status === "NOT_FOUND") return undefined;
      throw e;
    } finally {
      client.close();
    }
  };
}
