// VmService end to end on `trustplane dev` with a hotplug-capable test driver registered in the
// agent's control plane: volumes attached and detached land in the VM record with their events,
// the server's own "already attached" / "not attached" checks, a detach that times out and is
// finished later by the guest, ConfigureNetwork with host_port 0, pause/resume (asked for, and
// done by the hypervisor on its own), volumes at create refused at the edge where no hypervisor
// can hot-plug, and ListVms filters applied inside the paged query.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey } from "../../sdk/src/auth/index.js";
import { createClient, type SignedClient } from "../../sdk/src/client/create-client.js";
import { AuthServiceService, PolicyEffect } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { HypervisorType, VmEventType, VmServiceService, VmState, type Vm, type VmEvent } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { DEV_HOST_ID } from "../../server/src/processes/dev-process.js";
import { bwrapAvailable } from "../../server/src/vm/agent/drivers/sandbox/sandbox-driver.js";
import { controlPlaneFor } from "../../server/src/vm/agent/vm-agent-area.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";
import { HotplugTestDriver } from "./hotplug-test-driver.js";
import { refused } from "../support/refused.js";

const QEMU = HypervisorType.HYPERVISOR_TYPE_QEMU;
const SANDBOX = HypervisorType.HYPERVISOR_TYPE_SANDBOX;
let env: DevEnv;
let vms: SignedClient<typeof VmServiceService>;
let driver: HotplugTestDriver;
const events: VmEvent[] = [];
let watch: { cancel(): void } | undefined;
let n = 0;
const rid = (what: string) => `${what}-${++n}-${Date.now()}`;

async function eventually<T>(what: string, probe: () => Promise<T | undefined>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const until = (vmId: string, state: VmState) =>
  eventually(`${vmId} ${VmState[state]}`, async () => {
    const { vm } = await vms.getVm({ vmId });
    if (vm!.state === VmState.VM_STATE_FAILED && state !== VmState.VM_STATE_FAILED) throw new Error(`${vmId} FAILED: ${vm!.failureReason}`);
    return vm!.state === state ? vm! : undefined;
  });

async function running(name: string, image = "tiny-linux", extra: Partial<Parameters<typeof vms.createVm>[0]> = {}): Promise<Vm> {
  const { vm } = await vms.createVm({ requestId: rid(name), name, image, resources: { vcpus: 1, memoryMib: 128, diskGib: 0 }, ...extra });
  return until(vm!.vmId, VmState.VM_STATE_RUNNING);
}

const seen = (vmId: string, type: VmEventType, initiator?: string) => events.find((e) => e.vmId === vmId && e.type === type && (!initiator || e.initiator === initiator));

describe.skipIf(!bwrapAvailable())("VmService with a hotplug-capable driver", () => {
  beforeAll(async () => {
    env = await startDevEnv({ region: "eu-1" });
    vms = createClient(VmServiceService, env.dev.server.address, { key: env.admin });
    driver = new HotplugTestDriver(DEV_HOST_ID);
    controlPlaneFor(DEV_HOST_ID)!.registerDriver(driver);
    // The agent re-reports its capability matrix at once; the scheduler then offers qemu there.
    await eventually("the test driver in the capability matrix", async () => (await vms.getCapabilities({})).hosts.some((h) => h.drivers.some((d) => d.hypervisor === QEMU)));
    const stream = vms.watchVmEvents({ vmId: "", afterSeq: 0 });
    watch = stream;
    void (async () => {
      try {
        for await (const { event } of stream) events.push(event!);
      } catch {}
    })();
  });

  afterAll(async () => {
    watch?.cancel();
    vms?.close();
    await env?.stop();
  });

  it("records hot-plugged volumes with their events; the server refuses a second attach and a detach of what is not attached", async () => {
    const vm = await running("plug");
    expect(vm.hypervisor).toBe(QEMU);
    expect(vm.region).toBe("eu-1");
    const attached = await vms.attachVolume({ requestId: rid("attach"), vmId: vm.vmId, volume: { volumeId: "data", sizeGib: 1, readOnly: false } });
    expect(attached.device).toBe("vdb");
    expect(attached.vm!.volumes.map((v) => v.volumeId)).toEqual(["data"]);
    expect((await vms.getVm({ vmId: vm.vmId })).vm!.volumes.map((v) => v.volumeId)).toEqual(["data"]);
    await eventually("DEVICE_ADDED", async () => seen(vm.vmId, VmEventType.VM_EVENT_TYPE_DEVICE_ADDED, "admin"));

    // The server's own check (the agent's would name the field "volume"): nothing reaches the host.
    const again = await refused(vms.attachVolume({ requestId: rid("attach"), vmId: vm.vmId, volume: { volumeId: "data", sizeGib: 1, readOnly: false } }));
    expect([again.status, again.reason, again.field]).toEqual(["ALREADY_EXISTS", "VOLUME_ATTACHED", "volume.volume_id"]);

    const detached = await vms.detachVolume({ requestId: rid("detach"), vmId: vm.vmId, volumeId: "data", timeoutSeconds: 5 });
    expect(detached.vm!.volumes).toEqual([]);
    await eventually("DEVICE_REMOVED", async () => seen(vm.vmId, VmEventType.VM_EVENT_TYPE_DEVICE_REMOVED, "admin"));
    const gone = await refused(vms.detachVolume({ requestId: rid("detach"), vmId: vm.vmId, volumeId: "data", timeoutSeconds: 5 }));
    expect([gone.status, gone.reason]).toEqual(["NOT_FOUND", "VOLUME_NOT_ATTACHED"]);
    await vms.attachVolume({ requestId: rid("attach"), vmId: vm.vmId, volume: { volumeId: "kept", sizeGib: 1, readOnly: false } });
    await vms.terminateVm({ requestId: rid("term"), vmId: vm.vmId });
    // A terminated VM has nothing left to change, and the server says so itself.
    for (const p of [
      vms.attachVolume({ requestId: rid("attach"), vmId: vm.vmId, volume: { volumeId: "late", sizeGib: 1, readOnly: false } }),
      vms.detachVolume({ requestId: rid("detach"), vmId: vm.vmId, volumeId: "kept", timeoutSeconds: 5 }),
      vms.configureNetwork({ requestId: rid("net"), vmId: vm.vmId, network: { mode: "user", portForwards: [] } }),
      vms.pauseVm({ requestId: rid("pause"), vmId: vm.vmId }),
    ]) {
      const e = await refused(p);
      expect([e.status, e.reason]).toEqual(["FAILED_PRECONDITION", "INVALID_STATE"]);
    }
  });

  it("keeps a volume whose detach timed out (DETACH_TIMEOUT) until the guest releases it, then records that", async () => {
    const vm = await running("slow");
    await vms.attachVolume({ requestId: rid("attach"), vmId: vm.vmId, volume: { volumeId: "sticky", sizeGib: 1, readOnly: false } });
    driver.script.holdVolumes.add("sticky");
    const t0 = Date.now();
    const err = await refused(vms.detachVolume({ requestId: rid("detach"), vmId: vm.vmId, volumeId: "sticky", timeoutSeconds: 1 }));
    expect([err.status, err.reason]).toEqual(["DEADLINE_EXCEEDED", "DETACH_TIMEOUT"]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
    expect((await vms.getVm({ vmId: vm.vmId })).vm!.volumes.map((v) => v.volumeId)).toEqual(["sticky"]);

    driver.guestReleases(vm.vmId, "sticky");
    await eventually("the server to drop the released volume", async () => ((await vms.getVm({ vmId: vm.vmId })).vm!.volumes.length === 0 ? true : undefined));
    expect(seen(vm.vmId, VmEventType.VM_EVENT_TYPE_DEVICE_REMOVED, "guest")?.detail).toContain("sticky");
    await vms.terminateVm({ requestId: rid("term"), vmId: vm.vmId });
  });

  it("ConfigureNetwork accepts host_port 0, records the port the host chose and publishes the change", async () => {
    const vm = await running("net");
    const { vm: after } = await vms.configureNetwork({ requestId: rid("net"), vmId: vm.vmId, network: { mode: "user", portForwards: [{ protocol: "tcp", hostPort: 0, guestPort: 8080 }] } });
    const port = after!.network!.portForwards[0]!.hostPort;
    expect(port).toBeGreaterThan(0);
    expect((await vms.getVm({ vmId: vm.vmId })).vm!.network!.portForwards).toEqual([{ protocol: "tcp", hostPort: port, guestPort: 8080 }]);
    const e = await eventually("the network event", async () => events.find((x) => x.vmId === vm.vmId && x.detail.startsWith("network updated")));
    expect(e.detail).toContain(`127.0.0.1:${port}→8080`);

    const bad = await refused(vms.configureNetwork({ requestId: rid("net"), vmId: vm.vmId, network: { mode: "user", portForwards: [{ protocol: "tcp", hostPort: 0, guestPort: 0 }] } }));
    expect([bad.status, bad.field]).toEqual(["INVALID_ARGUMENT", "network.port_forwards[0].guest_port"]);
    await vms.terminateVm({ requestId: rid("term"), vmId: vm.vmId });
  });

  it("pauses and resumes through VmService, and follows a STOP/RESUME the hypervisor reports on its own", async () => {
    const vm = await running("pause");
    expect((await vms.pauseVm({ requestId: rid("pause"), vmId: vm.vmId })).vm!.state).toBe(VmState.VM_STATE_PAUSED);
    const twice = await refused(vms.pauseVm({ requestId: rid("pause"), vmId: vm.vmId }));
    expect([twice.status, twice.reason]).toEqual(["FAILED_PRECONDITION", "INVALID_STATE"]);
    expect((await vms.resumeVm({ requestId: rid("resume"), vmId: vm.vmId })).vm!.state).toBe(VmState.VM_STATE_RUNNING);
    const resumeRunning = await refused(vms.resumeVm({ requestId: rid("resume"), vmId: vm.vmId }));
    expect([resumeRunning.status, resumeRunning.reason]).toEqual(["FAILED_PRECONDITION", "INVALID_STATE"]);
    // The server's own pause is not echoed back as a "hypervisor" pause.
    expect(seen(vm.vmId, VmEventType.VM_EVENT_TYPE_SUSPENDED, "hypervisor")).toBeUndefined();

    driver.hypervisorStops(vm.vmId);
    await until(vm.vmId, VmState.VM_STATE_PAUSED);
    await eventually("SUSPENDED by the hypervisor", async () => seen(vm.vmId, VmEventType.VM_EVENT_TYPE_SUSPENDED, "hypervisor"));
    driver.hypervisorResumes(vm.vmId);
    await until(vm.vmId, VmState.VM_STATE_RUNNING);
    await eventually("RESUMED by the hypervisor", async () => seen(vm.vmId, VmEventType.VM_EVENT_TYPE_RESUMED, "hypervisor"));
    await vms.terminateVm({ requestId: rid("term"), vmId: vm.vmId });
  });

  it("hot-plugs the volumes named at create, and refuses them at the edge where no hypervisor can", async () => {
    const before = (await vms.listVms({ pageSize: 1000 })).vms.length;
    const err = await refused(vms.createVm({ requestId: rid("vols"), name: "vols", image: "process", resources: { vcpus: 1, memoryMib: 128, diskGib: 0 }, volumes: [{ volumeId: "data", sizeGib: 1, readOnly: false }] }));
    expect([err.status, err.reason]).toEqual(["FAILED_PRECONDITION", "UNSUPPORTED_FEATURE"]);
    expect(err.message).toContain("block_hotplug");
    expect((await vms.listVms({ pageSize: 1000 })).vms.length).toBe(before);

    const vm = await running("withvols", "tiny-linux", { volumes: [{ volumeId: "boot-data", sizeGib: 1, readOnly: false }] });
    expect(vm.volumes.map((v) => v.volumeId)).toEqual(["boot-data"]);
    expect(controlPlaneFor(DEV_HOST_ID)!.get(vm.vmId).volumes.map((v) => v.volumeId)).toEqual(["boot-data"]);
    await vms.terminateVm({ requestId: rid("term"), vmId: vm.vmId });
  });

  it("filters ListVms by hypervisor, region and owner inside the paged query (full pages)", async () => {
    const auth = createClient(AuthServiceService, env.dev.server.address, { key: env.admin });
    const bobKey = generateSigningKey("Ed25519");
    await auth.createPrincipal({ requestId: rid("bob"), name: "bob", kind: "user", policy: { rules: [{ methods: ["/trustplane.vm.v1.VmService/*"], effect: PolicyEffect.POLICY_EFFECT_ALLOW }] } });
    await auth.addKey({ requestId: rid("bob-key"), principal: "bob", jwk: JSON.stringify(bobKey.publicJwk) });
    auth.close();
    const bob = createClient(VmServiceService, env.dev.server.address, { key: bobKey });
    const made: string[] = [];
    try {
      // Interleaved, so a filter applied after paging would leave holes in every page.
      for (let i = 0; i < 3; i++) {
        made.push((await vms.createVm({ requestId: rid("ls"), name: `ls-s${i}`, image: "process", resources: { vcpus: 1, memoryMib: 64, diskGib: 0 } })).vm!.vmId);
        made.push((await vms.createVm({ requestId: rid("ls"), name: `ls-q${i}`, image: "tiny-linux", resources: { vcpus: 1, memoryMib: 64, diskGib: 0 } })).vm!.vmId);
      }
      const bobs = (await bob.createVm({ requestId: rid("ls"), name: "ls-bob", image: "process", resources: { vcpus: 1, memoryMib: 64, diskGib: 0 } })).vm!.vmId;
      made.push(bobs);

      const pages: Vm[][] = [];
      let pageToken = "";
      do {
        const page = await vms.listVms({ pageSize: 2, pageToken, hypervisor: QEMU });
        pages.push(page.vms);
        pageToken = page.nextPageToken;
      } while (pageToken);
      const all = pages.flat();
      expect(all.every((v) => v.hypervisor === QEMU)).toBe(true);
      expect(all.length).toBeGreaterThanOrEqual(3);
      // Every page but the last is full.
      for (const p of pages.slice(0, -1)) expect(p).toHaveLength(2);

      expect((await vms.listVms({ pageSize: 100, region: "eu-1", hypervisor: SANDBOX })).vms.length).toBeGreaterThanOrEqual(4);
      expect((await vms.listVms({ pageSize: 100, region: "us-9" })).vms).toEqual([]);
      expect((await vms.listVms({ pageSize: 100, owner: "bob" })).vms.map((v) => v.vmId)).toEqual([bobs]);
      // Bob sees his own whatever owner he names.
      expect((await bob.listVms({ pageSize: 100, owner: "admin" })).vms.map((v) => v.vmId)).toEqual([bobs]);
      // A watch from 0 starts with the current state of the VMs the caller may see, and only those.
      const bobSees: VmEvent[] = [];
      const watchStream = bob.watchVmEvents({ vmId: "", afterSeq: 0 });
      const reading = (async () => {
        try {
          for await (const { event } of watchStream) bobSees.push(event!);
        } catch {}
      })();
      await new Promise((r) => setTimeout(r, 500));
      watchStream.cancel();
      await reading;
      expect(bobSees.filter((e) => e.detail.startsWith("current state")).map((e) => e.vmId)).toEqual([bobs]);
      expect(bobSees[0]).toMatchObject({ vmId: bobs, type: VmEventType.VM_EVENT_TYPE_DEFINED });
      const adminSnapshot: VmEvent[] = [];
      const adminStream = vms.watchVmEvents({ vmId: "", afterSeq: 0 });
      for await (const { event } of adminStream) {
        adminSnapshot.push(event!);
        if (adminSnapshot.length === made.length) break;
      }
      adminStream.cancel();
      expect(adminSnapshot.every((e) => e.detail.startsWith("current state"))).toBe(true);
      expect(new Set(adminSnapshot.map((e) => e.vmId))).toEqual(new Set(made));
    } finally {
      for (const vmId of made) {
        await until(vmId, VmState.VM_STATE_RUNNING).catch(() => undefined);
        await vms.terminateVm({ requestId: rid("term"), vmId }).catch(() => undefined);
      }
      bob.close();
    }
  });
});
