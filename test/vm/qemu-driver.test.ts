// The qemu driver under the agent's control plane with a real guest (Debian kernel + busybox
// initramfs from scripts/build-guest.sh): boot to the ready line (KVM probe, else TCG), a
// hot-plugged qcow2 volume the guest lists in /sys/block, detach (and a late DEVICE_DELETED after
// a timed-out one), QMP STOP/RESUME from outside followed by the state, graceful powerdown, the
// metadata guestfwd, reconciliation after SIGKILL, and terminate leaving nothing behind.
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Feature, HypervisorType, InstanceSpec, VmEventType, VmState, type VmEvent } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { ConsoleWatcher } from "../../server/src/vm/agent/console-watcher.js";
import { ControlPlane } from "../../server/src/vm/agent/control-plane.js";
import { QemuDriver, blockDevices, qemuAvailable } from "../../server/src/vm/agent/drivers/qemu/qemu-driver.js";
import { processAlive } from "../../server/src/vm/agent/process-liveness.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { VmServiceService } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { startDevEnv } from "../support/dev-env.js";
import { refused } from "../support/refused.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "tp-qemu-"));
const logger = createLogger({ level: "silent" });
const guestDir = process.env.TRUSTPLANE_GUEST_DIR || path.resolve(".trustplane/guest");
// Unique per run, so a leftover from an interrupted run never counts as this run's process.
const run = Math.random().toString(36).slice(2, 8);
const id = (name: string) => `vm-${name}-${run}`;
const spec = (vmId: string) =>
  InstanceSpec.fromPartial({ vmId, name: vmId, hypervisor: HypervisorType.HYPERVISOR_TYPE_QEMU, image: "tiny-linux", resources: { vcpus: 1, memoryMib: 192 }, network: { mode: "user", portForwards: [] } });

// A stand-in for the VM's authorization process: answers on loopback, says who asked.
let metadata: http.Server;
let metadataPort = 0;
beforeAll(async () => {
  metadata = http.createServer((req, res) => {
    res.end(req.headers["metadata-flavor"] === "Google" ? `hello-from-endpoint ${req.url}` : "missing-flavor");
  });
  await new Promise<void>((r) => metadata.listen(0, "127.0.0.1", r));
  metadataPort = (metadata.address() as AddressInfo).port;
});
afterAll(async () => {
  // A failed assertion must not leave a guest running.
  for (const p of readdirSync("/proc")) if (/^\d+$/.test(p) && (processAlive(Number(p), `trustplane-${id("q1")}`) || processAlive(Number(p), `trustplane-${id("q2")}`))) process.kill(Number(p), "SIGKILL");
  await new Promise((r) => metadata?.close(r));
  rmSync(dir, { recursive: true, force: true });
});

const skipReason = qemuAvailable() ? "" : "qemu-system-x86_64 is not installed (apt-get install -y qemu-system-x86 qemu-utils busybox-static socat)";
if (skipReason) console.warn(`SKIPPED qemu driver tests: ${skipReason}`);

describe.skipIf(!!skipReason)("qemu driver with a real guest", () => {
  it("boots, hot-plugs a volume the guest sees, detaches it, powers down gracefully and terminates cleanly", { timeout: 150_000 }, async () => {
    const driver = new QemuDriver({ guestDir, kernelArgs: ["trustplane.metadata=/computeMetadata/v1/instance/hostname"] });
    const cp = new ControlPlane("h1", [driver], dir, logger, { metadataEndpoint: async () => ({ host: "127.0.0.1", port: metadataPort }) });
    const events: VmEvent[] = [];
    const ac = new AbortController();
    void (async () => {
      for await (const e of cp.watch(undefined, ac.signal)) events.push(e);
    })();

    const t0 = Date.now();
    const running = await cp.create(spec(id("q1")), true, "tester");
    const bootMs = Date.now() - t0;
    expect(running.state).toBe(VmState.VM_STATE_RUNNING);
    expect(["kvm", "tcg"]).toContain(running.accelerator);
    expect(running.metadataEndpoint).toBe(`127.0.0.1:${metadataPort}`);
    console.log(`qemu boot to ready line: ${bootMs} ms (${running.accelerator}, driver-measured ${driver.bootMs.get(id("q1"))} ms)`);
    const caps = cp.capabilities().drivers[0]!;
    expect(caps.accelerator).toBe(running.accelerator);
    expect(caps.features).toEqual(expect.arrayContaining([Feature.FEATURE_BLOCK_HOTPLUG, Feature.FEATURE_MEMORY_INSPECTION]));

    const vmDir = path.join(dir, id("q1"));
    const consoleLog = new ConsoleWatcher(path.join(vmDir, "console.log"));
    // The guest fetched 169.254.169.254 through guestfwd and reached this VM's endpoint.
    await consoleLog.waitFor(/^TRUSTPLANE-METADATA /, 30_000);
    expect(consoleLog.lines.find((l) => l.startsWith("TRUSTPLANE-METADATA "))).toContain("200 hello-from-endpoint /computeMetadata/v1/instance/hostname");

    // QMP helpers used by privileged operations.
    const handle = { vmId: id("q1"), pid: running.pid, cmdlineMarker: `trustplane-${id("q1")}`, dir: vmDir, accelerator: running.accelerator };
    expect((await driver.queryStatus(handle)).status).toBe("running");
    expect((await driver.queryVersion(handle)).qemu.major).toBeGreaterThanOrEqual(7);
    const dump = path.join(vmDir, "mem.bin");
    await driver.pmemsave(handle, 0, 4096, dump);
    expect(statSync(dump).size).toBe(4096);
    rmSync(dump);

    // Port forwards change at runtime (HMP hostfwd_add through QMP); port 0 picks a free one.
    const net = await cp.configureNetwork(id("q1"), { mode: "user", portForwards: [{ protocol: "tcp", hostPort: 0, guestPort: 8080 }] });
    const hostPort = net.network!.portForwards[0]!.hostPort;
    expect(hostPort).toBeGreaterThan(0);
    const usernet = await (await driver.monitor(handle)).execute<string>("human-monitor-command", { "command-line": "info usernet" });
    expect(usernet).toContain(String(hostPort));

    // Illegal transitions.
    const again = await refused(cp.start(id("q1"), "tester"));
    expect([again.status, again.reason]).toEqual(["FAILED_PRECONDITION", "INVALID_STATE"]);
    const resumeRunning = await refused(cp.resume(id("q1")));
    expect([resumeRunning.status, resumeRunning.reason]).toEqual(["FAILED_PRECONDITION", "INVALID_STATE"]);

    const attached = await cp.attachVolume(id("q1"), { volumeId: "data", sizeGib: 1, readOnly: false });
    expect(attached.device).toMatch(/^vd[a-z]$/);
    consoleLog.poll();
    expect(blockDevices(consoleLog.lines)).toContain(attached.device);
    expect(existsSync(path.join(vmDir, "volumes", "data.qcow2"))).toBe(true);
    const dup = await refused(cp.attachVolume(id("q1"), { volumeId: "data", sizeGib: 1, readOnly: false }));
    expect(dup.reason).toBe("VOLUME_ATTACHED");

    await cp.detachVolume(id("q1"), "data", 15_000);
    for (let i = 0; i < 50 && blockDevices(consoleLog.lines).includes(attached.device); i++) {
      await new Promise((r) => setTimeout(r, 200));
      consoleLog.poll();
    }
    expect(blockDevices(consoleLog.lines)).not.toContain(attached.device);
    expect(events.some((e) => e.type === VmEventType.VM_EVENT_TYPE_DEVICE_REMOVED)).toBe(true);

    // A detach the guest does not acknowledge in time stays attached; its late DEVICE_DELETED
    // finishes it (block node dropped, slot freed) and the control plane reports it.
    await cp.attachVolume(id("q1"), { volumeId: "late", sizeGib: 1, readOnly: false });
    const slow = await refused(cp.detachVolume(id("q1"), "late", 1));
    expect([slow.status, slow.reason]).toEqual(["DEADLINE_EXCEEDED", "DETACH_TIMEOUT"]);
    for (let i = 0; i < 100 && cp.get(id("q1")).volumes.some((v) => v.volumeId === "late"); i++) await new Promise((r) => setTimeout(r, 100));
    expect(cp.get(id("q1")).volumes.map((v) => v.volumeId)).not.toContain("late");
    expect(events.some((e) => e.type === VmEventType.VM_EVENT_TYPE_DEVICE_REMOVED && e.initiator === "guest" && e.detail.includes("late"))).toBe(true);
    const nodes = (await (await driver.monitor(handle)).execute<{ "node-name": string }[]>("query-named-block-nodes")).map((n) => n["node-name"]);
    expect(nodes).not.toContain("vol-late");

    // QMP STOP / RESUME from outside the control plane (another QMP client): the state follows.
    await (await driver.monitor(handle)).execute("stop");
    for (let i = 0; i < 50 && cp.get(id("q1")).state !== VmState.VM_STATE_PAUSED; i++) await new Promise((r) => setTimeout(r, 50));
    expect(cp.get(id("q1")).state).toBe(VmState.VM_STATE_PAUSED);
    await (await driver.monitor(handle)).execute("cont");
    for (let i = 0; i < 50 && cp.get(id("q1")).state !== VmState.VM_STATE_RUNNING; i++) await new Promise((r) => setTimeout(r, 50));
    expect(cp.get(id("q1")).state).toBe(VmState.VM_STATE_RUNNING);
    const byHypervisor = () => events.filter((e) => e.initiator === "hypervisor").map((e) => VmEventType[e.type]);
    for (let i = 0; i < 50 && !byHypervisor().includes("VM_EVENT_TYPE_RESUMED"); i++) await new Promise((r) => setTimeout(r, 20));
    expect(byHypervisor()).toEqual(expect.arrayContaining(["VM_EVENT_TYPE_SUSPENDED", "VM_EVENT_TYPE_RESUMED"]));
    // The control plane's own pause is not echoed as a hypervisor pause.
    const before = events.filter((e) => e.initiator === "hypervisor").length;
    await cp.pause(id("q1"));
    await cp.resume(id("q1"));
    await new Promise((r) => setTimeout(r, 200));
    expect(events.filter((e) => e.initiator === "hypervisor").length).toBe(before);

    // Graceful: the guest's power-button handler runs, well inside the timeout.
    const { instance: stopped, forced } = await cp.stopReport(id("q1"), 20_000, false, "tester");
    expect(stopped.state).toBe(VmState.VM_STATE_STOPPED);
    expect(forced).toBe(false);
    consoleLog.poll();
    expect(consoleLog.lines).toContain("TRUSTPLANE-GUEST-POWEROFF");
    expect(processAlive(running.pid)).toBe(false);
    expect(existsSync(path.join(vmDir, "qmp.sock"))).toBe(false);

    const term = await cp.terminate(id("q1"), "tester");
    expect(term.state).toBe(VmState.VM_STATE_TERMINATED);
    expect(existsSync(vmDir)).toBe(false);
    await new Promise((r) => setTimeout(r, 50));
    ac.abort();
    const seen = events.filter((e) => e.vmId === id("q1")).map((e) => `${VmState[e.state]}:${e.initiator}`);
    expect(seen).toEqual(expect.arrayContaining(["VM_STATE_STARTING:tester", "VM_STATE_RUNNING:tester", "VM_STATE_STOPPING:tester", "VM_STATE_STOPPED:tester", "VM_STATE_TERMINATED:tester"]));
  });

  it("reconciles a VM whose QEMU was SIGKILLed to STOPPED, and terminate leaves no process, socket or file", { timeout: 120_000 }, async () => {
    const driver = new QemuDriver({ guestDir });
    const first = new ControlPlane("h1", [driver], dir, logger);
    const running = await first.create({ ...spec(id("q2")), network: { mode: "none", portForwards: [] } }, true, "tester");
    expect(running.state).toBe(VmState.VM_STATE_RUNNING);

    // An agent restart while QEMU still runs: RUNNING, re-attached over QMP (pause works).
    driver.close();
    const secondDriver = new QemuDriver({ guestDir });
    const second = new ControlPlane("h1", [secondDriver], dir, logger);
    await second.reconcile();
    expect(second.get(id("q2")).state).toBe(VmState.VM_STATE_RUNNING);
    expect((await second.pause(id("q2"))).state).toBe(VmState.VM_STATE_PAUSED);
    expect((await second.resume(id("q2"))).state).toBe(VmState.VM_STATE_RUNNING);

    secondDriver.close();
    process.kill(running.pid, "SIGKILL");
    for (let i = 0; i < 100 && processAlive(running.pid); i++) await new Promise((r) => setTimeout(r, 20));
    const third = new ControlPlane("h1", [new QemuDriver({ guestDir })], dir, logger);
    await third.reconcile();
    expect([VmState.VM_STATE_STOPPED, VmState.VM_STATE_FAILED]).toContain(third.get(id("q2")).state);
    const stopDead = await refused(third.stop(id("q2"), 1000, false, "tester"));
    expect([stopDead.status, stopDead.reason]).toEqual(["FAILED_PRECONDITION", "INVALID_STATE"]);

    await third.terminate(id("q2"), "tester");
    expect(existsSync(path.join(dir, id("q2")))).toBe(false);
    expect(readdirSync(dir)).not.toContain(id("q2"));
    const leftovers = readdirSync("/proc").filter((p) => /^\d+$/.test(p) && processAlive(Number(p), `trustplane-${id("q2")}`));
    expect(leftovers).toEqual([]);
  });
});

describe.skipIf(!!skipReason)("qemu through VmService on trustplane dev", () => {
  it("hot-plugs and unplugs a volume into the record, forwards a chosen port, stops gracefully and terminates", { timeout: 180_000 }, async () => {
    const saved = { drivers: process.env.TRUSTPLANE_VM_DRIVERS, guest: process.env.TRUSTPLANE_GUEST_DIR };
    process.env.TRUSTPLANE_VM_DRIVERS = "sandbox,qemu";
    process.env.TRUSTPLANE_GUEST_DIR = guestDir;
    const env = await startDevEnv();
    process.env.TRUSTPLANE_VM_DRIVERS = saved.drivers;
    process.env.TRUSTPLANE_GUEST_DIR = saved.guest;
    if (saved.drivers === undefined) delete process.env.TRUSTPLANE_VM_DRIVERS;
    if (saved.guest === undefined) delete process.env.TRUSTPLANE_GUEST_DIR;
    const vms = createClient(VmServiceService, env.dev.server.address, { key: env.admin });
    let vmId = "";
    try {
      const { vm } = await vms.createVm({ requestId: "qemu-e2e", name: "tiny", image: "tiny-linux", resources: { vcpus: 1, memoryMib: 192, diskGib: 0 }, network: { mode: "user", portForwards: [{ protocol: "tcp", hostPort: 0, guestPort: 8080 }] } });
      vmId = vm!.vmId;
      let current = vm!;
      for (let i = 0; i < 1200 && current.state !== VmState.VM_STATE_RUNNING && current.state !== VmState.VM_STATE_FAILED; i++) {
        await new Promise((r) => setTimeout(r, 100));
        current = (await vms.getVm({ vmId })).vm!;
      }
      expect(VmState[current.state]).toBe("VM_STATE_RUNNING");
      expect(["kvm", "tcg"]).toContain(current.accelerator);
      // The host picked the forward's port at boot; the record holds it.
      expect(current.network!.portForwards[0]!.hostPort).toBeGreaterThan(0);

      const attached = await vms.attachVolume({ requestId: "qemu-e2e-attach", vmId, volume: { volumeId: "data", sizeGib: 1, readOnly: false } });
      expect(attached.device).toMatch(/^vd[a-z]$/);
      expect(attached.vm!.volumes.map((v) => v.volumeId)).toEqual(["data"]);
      const detached = await vms.detachVolume({ requestId: "qemu-e2e-detach", vmId, volumeId: "data", timeoutSeconds: 15 });
      expect(detached.vm!.volumes).toEqual([]);

      const stopped = await vms.stopVm({ requestId: "qemu-e2e-stop", vmId, timeoutSeconds: 20 });
      expect([VmState[stopped.vm!.state], stopped.forced]).toEqual(["VM_STATE_STOPPED", false]);
      expect((await vms.terminateVm({ requestId: "qemu-e2e-term", vmId })).vm!.state).toBe(VmState.VM_STATE_TERMINATED);
      vmId = "";
    } finally {
      if (vmId) await vms.terminateVm({ requestId: "qemu-e2e-term-2", vmId }).catch(() => undefined);
      vms.close();
      await env.stop();
    }
  });
});
