// query_hypervisor (seed 002): what the hypervisor itself says about a guest. For QEMU guests
// the driver asks over QMP (query-status, query-version, query-pci, query-named-block-nodes);
// drivers without a monitor report the control plane's view of the instance.
import type { HypervisorStatus } from "../../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { HypervisorType, VmState } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { ControlPlane } from "../../vm/agent/control-plane.js";
import { QemuDriver } from "../../vm/agent/drivers/qemu/qemu-driver.js";

interface PciDevice {
  bus: number;
  slot: number;
  function: number;
  qdev_id?: string;
  class_info?: { desc?: string };
  pci_bridge?: { devices?: PciDevice[] };
}

/** "00:02.0 virtio-blk-pci dev-data" style names for every device, bridges walked. */
export function pciDeviceNames(pci: unknown): string[] {
  const out: string[] = [];
  const hex = (n: number, w: number) => n.toString(16).padStart(w, "0");
  const walk = (devices: PciDevice[] | undefined) => {
    for (const d of devices ?? []) {
      const what = [d.class_info?.desc, d.qdev_id].filter(Boolean).join(" ");
      out.push(`${hex(d.bus, 2)}:${hex(d.slot, 2)}.${d.function}${what ? ` ${what}` : ""}`);
      walk(d.pci_bridge?.devices);
    }
  };
  for (const bus of (Array.isArray(pci) ? pci : []) as { devices?: PciDevice[] }[]) walk(bus.devices);
  return out;
}

export async function queryHypervisor(cp: ControlPlane, vmId: string): Promise<HypervisorStatus> {
  const inst = cp.get(vmId);
  const live = inst.state === VmState.VM_STATE_RUNNING || inst.state === VmState.VM_STATE_PAUSED ? cp.runningGuest(vmId) : undefined;
  if (live && live.driver instanceof QemuDriver) {
    const [status, version, devices] = await Promise.all([live.driver.queryStatus(live.handle), live.driver.queryVersion(live.handle), live.driver.listDevices(live.handle)]);
    const v = version.qemu;
    return {
      vmId,
      status: status.status,
      running: status.running,
      hypervisorVersion: `qemu ${v.major}.${v.minor}.${v.micro}${version.package ? ` (${version.package.trim()})` : ""}`,
      accelerator: inst.accelerator,
      devices: pciDeviceNames(devices.pci),
      blockDevices: (Array.isArray(devices.block) ? (devices.block as { "node-name"?: string }[]) : []).map((b) => b["node-name"] ?? "").filter(Boolean),
    };
  }
  const state = VmState[inst.state]?.replace("VM_STATE_", "").toLowerCase() ?? String(inst.state);
  return {
    vmId,
    status: state,
    running: inst.state === VmState.VM_STATE_RUNNING,
    hypervisorVersion: HypervisorType[inst.hypervisor]?.replace("HYPERVISOR_TYPE_", "").toLowerCase() ?? "",
    accelerator: inst.accelerator,
    devices: [],
    blockDevices: inst.volumes.map((v) => v.volumeId),
  };
}
