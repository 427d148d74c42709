// Example flow: one VM command set. The service picks the hypervisor and says why, the
// scheduler places the VM, the host's control plane boots a real process VM under
// bubblewrap, and the lifecycle (stop, start, terminate) streams as events.
import { createClient } from "../sdk/src/client/create-client.js";
import { TrustplaneError } from "../sdk/src/errors.js";
import { HypervisorType, VmServiceService, VmState } from "../sdk/src/gen/trustplane/vm/v1/vm.js";
import { standaloneContext, type ExampleFlow, type TourContext } from "./tour-context.js";

const st = (s: VmState) => VmState[s]?.replace("VM_STATE_", "");

export const vmLifecycleFlow: ExampleFlow = {
  name: "vm-lifecycle",
  title: "VM control: schedule, boot a sandbox VM, stop, start, terminate, with events",
  async run(ctx: TourContext) {
    const vms = createClient(VmServiceService, ctx.server, { key: ctx.admin });
    const events = vms.watchVmEvents({ vmId: "", afterSeq: 0 });
    const seen: string[] = [];
    const watching = (async () => {
      try {
        for await (const { event } of events) seen.push(st(event!.state)!);
      } catch {
        // cancelled at the end
      }
    })();
    try {
      const { vm } = await vms.createVm({ requestId: `demo-vm-${Date.now()}`, name: "demo", image: "process", resources: { vcpus: 1, memoryMib: 256, diskGib: 0 } });
      ctx.say(`created ${vm!.vmId} on ${vm!.hostId}: ${vm!.hypervisorReason}`);
      const t0 = Date.now();
      let current = vm!;
      while (current.state !== VmState.VM_STATE_RUNNING) {
        if (current.state === VmState.VM_STATE_FAILED) throw new Error(`VM failed: ${current.failureReason}`);
        if (Date.now() - t0 > 20_000) throw new Error(`VM still ${st(current.state)} after 20 s`);
        await new Promise((r) => setTimeout(r, 25));
        current = (await vms.getVm({ vmId: vm!.vmId })).vm!;
      }
      ctx.say(`RUNNING ${Date.now() - t0} ms after the create returned (own pid/net/mount namespaces, read-only system)`);
      try {
        await vms.attachVolume({ requestId: `demo-attach-${Date.now()}`, vmId: vm!.vmId, volume: { volumeId: "data", sizeGib: 1, readOnly: false } });
      } catch (e) {
        ctx.say(`attach volume refused: ${(e as TrustplaneError).status} ${(e as TrustplaneError).reason} (${(e as TrustplaneError).message})`);
      }
      await vms.stopVm({ requestId: `demo-stop-${Date.now()}`, vmId: vm!.vmId, timeoutSeconds: 5 });
      await vms.startVm({ requestId: `demo-start-${Date.now()}`, vmId: vm!.vmId });
      const term = await vms.terminateVm({ requestId: `demo-term-${Date.now()}`, vmId: vm!.vmId });
      await new Promise((r) => setTimeout(r, 200));
      ctx.say(`stopped, started again and terminated: ${st(term.vm!.state)}; events seen: ${seen.join(" → ")}`);
      let qemuVm: string | undefined;
      try {
        const { vm: tiny } = await vms.createVm({ requestId: `demo-qemu-${Date.now()}`, name: "needs-qemu", image: "tiny-linux", resources: { vcpus: 1, memoryMib: 192, diskGib: 0 }, hypervisor: HypervisorType.HYPERVISOR_TYPE_UNSPECIFIED });
        // Only where the agent runs the qemu driver (TRUSTPLANE_VM_DRIVERS=sandbox,qemu).
        qemuVm = tiny!.vmId;
        ctx.say(`tiny-linux scheduled on ${tiny!.hostId}: ${tiny!.hypervisorReason}`);
        let state = tiny!;
        const t1 = Date.now();
        while (state.state !== VmState.VM_STATE_RUNNING && state.state !== VmState.VM_STATE_FAILED && Date.now() - t1 < 120_000) {
          await new Promise((r) => setTimeout(r, 250));
          state = (await vms.getVm({ vmId: qemuVm })).vm!;
        }
        ctx.say(`tiny-linux ${st(state.state)} after ${Date.now() - t1} ms${state.accelerator ? ` (${state.accelerator})` : ""}${state.failureReason ? `: ${state.failureReason}` : ""}`);
        if (state.state === VmState.VM_STATE_RUNNING) {
          const { device } = await vms.attachVolume({ requestId: `demo-qemu-attach-${Date.now()}`, vmId: qemuVm, volume: { volumeId: "data", sizeGib: 1, readOnly: false } });
          ctx.say(`hot-plugged volume data, the guest sees it as ${device || "?"}`);
        }
      } catch (e) {
        ctx.say(`a tiny-linux VM on a host without QEMU: ${(e as TrustplaneError).status} ${(e as TrustplaneError).reason}: ${(e as TrustplaneError).message}`);
      } finally {
        // Whatever this flow created, it ends.
        if (qemuVm) await vms.terminateVm({ requestId: `demo-qemu-term-${Date.now()}`, vmId: qemuVm }).catch((e: Error) => ctx.say(`terminating ${qemuVm} failed: ${e.message}`));
      }
    } finally {
      events.cancel();
      await watching;
      vms.close();
    }
  },
};

if (process.argv[1]?.endsWith("vm-lifecycle.ts")) {
  await vmLifecycleFlow.run(standaloneContext());
}
