// The VM area on the agent: a control plane over the drivers this host can run (the
// bubblewrap sandbox here; QEMU when its driver is present), reconciled with the real
// processes at start, served as HostControlService, registered with the scheduler.
import path from "node:path";
import { HostControlServiceService } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { AgentArea } from "../../processes/area.js";
import { vmTokenManager } from "../../token/agent/token-agent-area.js";
import { ControlPlane } from "./control-plane.js";
import type { Driver } from "./driver.js";
import { SandboxDriver, bwrapAvailable } from "./drivers/sandbox/sandbox-driver.js";
import { createHostControlHandlers } from "./host-control-handlers.js";
import { startHostRegistration } from "./host-registration.js";

const controlPlanes = new Map<string, ControlPlane>();

/** The control plane of the agent for `hostId` (other agent areas act on guests through it). */
export function controlPlaneFor(hostId: string): ControlPlane | undefined {
  return controlPlanes.get(hostId);
}

export function availableDrivers(): Driver[] {
  const drivers: Driver[] = [];
  if (bwrapAvailable()) drivers.push(new SandboxDriver());
  return drivers;
}

export const vmAgentArea: AgentArea = {
  name: "vm",
  async start(ctx) {
    const drivers = availableDrivers();
    const cp = new ControlPlane(ctx.hostId, drivers, path.join(ctx.stateDir, "vms"), ctx.logger);
    await cp.reconcile();
    controlPlanes.set(ctx.hostId, cp);
    ctx.logger.info({ drivers: drivers.map((d) => d.name) }, "VM control plane ready");
    ctx.bind(
      HostControlServiceService,
      createHostControlHandlers(cp, {
        terminated: async (vmId) => {
          await vmTokenManager(ctx.hostId)?.detachVm(vmId);
        },
      }),
    );
    // Serving first, then registering: the scheduler may place a VM here the moment it knows us.
    const registration = await startHostRegistration(ctx, cp);
    return {
      async stop() {
        await registration.stop();
        controlPlanes.delete(ctx.hostId);
      },
    };
  },
};
