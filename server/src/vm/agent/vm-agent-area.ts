// The VM area on the agent: a control plane over the drivers this host can run (the
// bubblewrap sandbox by default; QEMU when enabled), reconciled with the real
// processes at start, served as HostControlService, registered with the scheduler.
import path from "node:path";
import { HostControlServiceService } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { AgentArea } from "../../processes/area.js";
import { vmTokenManager } from "../../token/agent/token-agent-area.js";
import { ControlPlane } from "./control-plane.js";
import type { Driver } from "./driver.js";
import { QemuDriver, qemuAvailable } from "./drivers/qemu/qemu-driver.js";
import { sandboxCgroupsAvailable } from "./drivers/sandbox/sandbox-cgroup.js";
import { SandboxDriver, bwrapAvailable } from "./drivers/sandbox/sandbox-driver.js";
import { createHostControlHandlers } from "./host-control-handlers.js";
import { startHostRegistration } from "./host-registration.js";

const controlPlanes = new Map<string, ControlPlane>();

/** The control plane of the agent for `hostId` (other agent areas act on guests through it). */
export function controlPlaneFor(hostId: string): ControlPlane | undefined {
  return controlPlanes.get(hostId);
}

/**
 * The drivers this host can run. QEMU is opt-in (TRUSTPLANE_VM_DRIVERS=sandbox,qemu): it needs
 * qemu-system-x86, the tiny guest (scripts/build-guest.sh) and a KVM probe boot of up to 8 s.
 */
export function availableDrivers(env: NodeJS.ProcessEnv = process.env): Driver[] {
  const wanted = (env.TRUSTPLANE_VM_DRIVERS ?? "sandbox").split(",").map((x) => x.trim());
  const drivers: Driver[] = [];
  if (wanted.includes("sandbox") && bwrapAvailable()) drivers.push(new SandboxDriver());
  if (wanted.includes("qemu") && qemuAvailable()) drivers.push(new QemuDriver());
  return drivers;
}

export const vmAgentArea: AgentArea = {
  name: "vm",
  async start(ctx) {
    const drivers = availableDrivers();
    // Every VM gets its own authorization process; the driver routes the guest's
    // 169.254.169.254:80 to it (QEMU guestfwd to the process's loopback port, no privileges;
    // the sandbox's own network namespace, root only), and the control plane asks for one only
    // for drivers that can. Accounts arrive later with their long-term tokens (token area);
    // after an agent restart the reconciliation re-binds each one where its guest is routed,
    // and the VM manager re-delivers the accounts when this host registers again.
    const cp = new ControlPlane(ctx.hostId, drivers, path.join(ctx.stateDir, "vms"), ctx.logger, {
      metadataEndpoint: async (spec, at) => {
        const tokens = vmTokenManager(ctx.hostId);
        if (!tokens) return undefined;
        const vm = { vmId: spec.vmId, hostname: spec.name || spec.vmId, projectId: spec.projectId, accounts: [] };
        // A re-attached instance: the same address or a reported failure (the control plane's).
        if (at) return tokens.attachVm(vm, at);
        try {
          return await tokens.attachVm(vm);
        } catch (e) {
          ctx.logger.warn({ vmId: spec.vmId, err: (e as Error).message }, "no metadata endpoint for this VM");
          return undefined;
        }
      },
    });
    await cp.reconcile();
    controlPlanes.set(ctx.hostId, cp);
    ctx.logger.info({ drivers: drivers.map((d) => d.name), metadata: Object.fromEntries(drivers.map((d) => [d.name, d.routesMetadata()])) }, "VM control plane ready");
    if (drivers.some((d) => d instanceof SandboxDriver) && !sandboxCgroupsAvailable()) {
      ctx.logger.warn("no writable cgroup hierarchy: sandbox VMs run with rlimits only (no vCPU pacing, memory or pid cap)");
    }
    // The KVM probe (a bounded boot) runs now, not at the first QEMU create, so the capability
    // matrix is right early; until it answers the accelerator reads "" and the result is
    // re-reported with an immediate heartbeat.
    for (const d of drivers) {
      if (!(d instanceof QemuDriver)) continue;
      void d
        .probeAccelerator()
        .then((accel) => {
          ctx.logger.info({ accelerator: accel }, "qemu accelerator probed");
          cp.capabilitiesChanged();
        })
        .catch((e: Error) => ctx.logger.warn({ err: e.message }, "qemu accelerator probe failed"));
    }
    ctx.bind(
      HostControlServiceService,
      createHostControlHandlers(cp, {
        terminated: async (vmId) => {
          await vmTokenManager(ctx.hostId)?.detachVm(vmId);
        },
        // Removals take effect on the host at once; additions come with their long-term
        // tokens from the VM manager (TokenAgentService.UpdateVmAccounts).
        serviceAccountsChanged: async (vmId, accounts) => {
          vmTokenManager(ctx.hostId)?.retainAccounts(vmId, accounts);
        },
      }),
    );
    // Serving first, then registering: the scheduler may place a VM here the moment it knows us.
    const registration = await startHostRegistration(ctx, cp, ctx.config.region ?? "");
    return {
      // With --stop-vms, the VMs stop while the agent still serves: its last beat reports them,
      // and the server, asking back as it always does, records them STOPPED before the agent goes.
      async drain() {
        if (!ctx.config.stopVmsOnShutdown) return;
        const stopped = await cp.stopAll();
        ctx.logger.info({ vms: stopped }, "stopped this host's VMs at shutdown (--stop-vms)");
        await registration.finalBeat();
      },
      async stop() {
        await registration.stop();
        controlPlanes.delete(ctx.hostId);
      },
    };
  },
};
