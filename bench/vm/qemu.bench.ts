// QEMU benchmark (issue 4): the tiny guest (Debian kernel + busybox initramfs) from spawn to
// its serial ready line, with the accelerator the one-time probe chose; the target is < 3 s
// with KVM and < 15 s with TCG.
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { HypervisorType, InstanceSpec } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { QemuDriver, qemuAvailable } from "../../server/src/vm/agent/drivers/qemu/qemu-driver.js";
import { median, result, type Benchmark } from "../harness.js";

const boot: Benchmark = {
  name: "vm.qemu-boot-to-ready",
  description: "tiny guest spawn → serial ready line (median of 3); target < 3 s with KVM, < 15 s with TCG",
  async run() {
    if (!qemuAvailable()) throw new Error("qemu-system-x86_64 is not installed (npm run setup installs it)");
    const driver = new QemuDriver();
    await driver.ensureGuest();
    const accel = await driver.probeAccelerator();
    const targetMs = accel === "kvm" ? 3000 : 15000;
    const dir = mkdtempSync(path.join(os.tmpdir(), "tp-bench-qemu-"));
    const times: number[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const spec = InstanceSpec.fromPartial({ vmId: `bench-qemu-${i}`, name: `bench-qemu-${i}`, hypervisor: HypervisorType.HYPERVISOR_TYPE_QEMU, image: "tiny-linux", resources: { vcpus: 1, memoryMib: 128 } });
        const vmDir = path.join(dir, spec.vmId);
        const t0 = performance.now();
        const handle = await driver.start(spec, vmDir, { exited: () => undefined });
        times.push(performance.now() - t0);
        await driver.stop(handle, 0, true);
      }
    } finally {
      await driver.close?.();
      rmSync(dir, { recursive: true, force: true });
    }
    const p50 = median(times);
    return [result({ name: `${this.name}.${accel}`, value: p50, baseline: targetMs, unit: "ms", target: 1, lowerIsBetter: true, note: `accelerator ${accel}; runs ${times.map((t) => t.toFixed(0)).join(", ")} ms` })];
  },
};

export const QEMU_BENCHMARKS: Benchmark[] = [boot];
