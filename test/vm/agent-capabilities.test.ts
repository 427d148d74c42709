// What an agent tells the scheduler about itself (issue 4 "Hosts", seed 004 capability matrix):
// its region comes from configuration like every other setting, the qemu accelerator reads ""
// until the KVM probe answers (never a guessed "tcg"), and a VM gets a metadata endpoint exactly
// when its driver can route 169.254.169.254 to it (QEMU's guestfwd needs no root).
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { HypervisorType, InstanceSpec } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { loadConfig } from "../../server/src/runtime/config.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { ControlPlane } from "../../server/src/vm/agent/control-plane.js";
import { QemuDriver, guestIsCurrent, scriptGuestVersion } from "../../server/src/vm/agent/drivers/qemu/qemu-driver.js";
import { bwrapAvailable } from "../../server/src/vm/agent/drivers/sandbox/sandbox-driver.js";
import { HotplugTestDriver } from "./hotplug-test-driver.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "tp-agent-caps-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("agent capabilities", () => {
  it("takes the host's region from the config file, TRUSTPLANE_REGION or --region, and refuses a malformed one", () => {
    expect(loadConfig({ env: { TRUSTPLANE_REGION: "eu-west-1" } }).region).toBe("eu-west-1");
    expect(loadConfig({ env: { TRUSTPLANE_REGION: "eu-west-1" }, flags: { region: "us-east-2" } }).region).toBe("us-east-2");
    expect(loadConfig({ env: {} }).region).toBeUndefined();
    expect(() => loadConfig({ env: { TRUSTPLANE_REGION: "EU West" } })).toThrow(/config region \(from environment\)/);
  });

  it("reports no accelerator until the KVM probe answers, then the probed one", async () => {
    const guestDir = path.join(dir, "guest");
    const driver = new QemuDriver({ guestDir });
    expect(driver.accelerator()).toBe("");
    const cp = new ControlPlane("h", [driver], path.join(dir, "vms"), createLogger({ level: "silent" }));
    expect(cp.capabilities().drivers[0]!.accelerator).toBe("");
    let told = 0;
    cp.onCapabilitiesChanged(() => told++);
    if (process.platform === "linux" && !(await import("node:fs")).existsSync("/dev/kvm")) {
      // No /dev/kvm: the probe answers tcg without booting anything.
      expect(await driver.probeAccelerator()).toBe("tcg");
      cp.capabilitiesChanged();
      expect(cp.capabilities().drivers[0]!.accelerator).toBe("tcg");
      expect(told).toBe(1);
    }
    // An explicit choice needs no probe.
    expect(new QemuDriver({ guestDir, accelerator: "tcg" }).accelerator()).toBe("tcg");
  });

  it("rebuilds the guest when build-guest.sh's GUEST_VERSION is newer than the built one", async () => {
    const { writeFileSync, mkdirSync } = await import("node:fs");
    const want = scriptGuestVersion();
    expect(want).toMatch(/^\d+$/);
    const g = path.join(dir, "stale-guest");
    mkdirSync(g, { recursive: true });
    expect(guestIsCurrent(g)).toBe(false);
    writeFileSync(path.join(g, "manifest"), `kernel=6.1\nguest_version=${Number(want) - 1}\n`);
    expect(guestIsCurrent(g)).toBe(false);
    writeFileSync(path.join(g, "manifest"), `kernel=6.1\nguest_version=${want}\n`);
    expect(guestIsCurrent(g)).toBe(true);
  });

  it.skipIf(!bwrapAvailable())("asks for a metadata endpoint only for a driver that can route it", async () => {
    const asked: string[] = [];
    const routing = new (class extends HotplugTestDriver {
      override routesMetadata() {
        return true;
      }
    })("h");
    const notRouting = new HotplugTestDriver("h");
    for (const [driver, vmId] of [[routing, "vm-routes"], [notRouting, "vm-no-route"]] as const) {
      const cp = new ControlPlane("h", [driver], path.join(dir, "vms"), createLogger({ level: "silent" }), {
        metadataEndpoint: async (spec) => {
          asked.push(spec.vmId);
          return { host: "127.0.0.1", port: 1 };
        },
      });
      const inst = await cp.create(InstanceSpec.fromPartial({ vmId, name: vmId, hypervisor: HypervisorType.HYPERVISOR_TYPE_QEMU, image: "tiny-linux", resources: { vcpus: 1, memoryMib: 64 } }), true, "tester");
      expect(inst.metadataEndpoint).toBe(vmId === "vm-routes" ? "127.0.0.1:1" : "");
      await cp.terminate(vmId, "tester");
    }
    expect(asked).toEqual(["vm-routes"]);
  });
});
