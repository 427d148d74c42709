// The server following its hosts: a process VM that exits on its own is STOPPED on the server
// (initiator "guest") through the event its agent pushes in an immediate heartbeat, one that
// died while its agent was down is STOPPED by the first beat after the restart; the
// reconciler ignores a stale report the host contradicts, fails a VM its host lost
// (INSTANCE_LOST, claim released), and a host that misses its heartbeats has its VMs FAILED with
// HOST_DOWN (claims kept) until it reports them again. Such a VM terminates in the record while
// its host is down (tokens released), and the host is told to end the instance when it is back.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, type SignedClient } from "../../sdk/src/client/create-client.js";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { readFileSync } from "node:fs";
import path from "node:path";
import { HypervisorType, Instance, Vm, VmEvent, VmEventType, VmServiceService, VmState } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { startAgent, type AgentHandle } from "../../server/src/processes/agent-process.js";
import { DEV_HOST_ID } from "../../server/src/processes/dev-process.js";
import { processAlive } from "../../server/src/vm/agent/process-liveness.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { Storage } from "../../server/src/runtime/storage/storage.js";
import { bwrapAvailable } from "../../server/src/vm/agent/drivers/sandbox/sandbox-driver.js";
import { SqlHostInventory } from "../../server/src/vm/manager/host-inventory-sql.js";
import { HOST_DOWN, INSTANCE_LOST, InstanceReconciler } from "../../server/src/vm/manager/instance-reconciler.js";
import { VmEventHub } from "../../server/src/vm/manager/vm-event-hub.js";
import { VmRecordChanges } from "../../server/src/vm/manager/vm-record-changes.js";
import { VmRepository } from "../../server/src/vm/manager/vm-repository.js";
import { createHostServiceHandlers } from "../../server/src/vm/manager/host-service.js";
import { createVmHandlers, type HostControlClient } from "../../server/src/vm/manager/vm-service.js";
import type { CallContext } from "../../server/src/runtime/auth/service-binder.js";
import { CallStatement } from "../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { HeartbeatMonitor } from "../../server/src/vm/scheduler/heartbeat-monitor.js";
import { SchedulerPlacement } from "../../server/src/vm/scheduler/scheduler-placement.js";
import { backends } from "../support/backends.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";

describe.skipIf(!bwrapAvailable())("a guest that stops on its own, end to end", () => {
  let env: DevEnv;
  let vms: SignedClient<typeof VmServiceService>;
  beforeAll(async () => {
    env = await startDevEnv();
    vms = createClient(VmServiceService, env.dev.server.address, { key: env.admin });
  });
  afterAll(async () => {
    vms?.close();
    await env?.stop();
  });

  it("is STOPPED on the server with initiator guest, and WatchVmEvents says so", async () => {
    const events: VmEvent[] = [];
    const stream = vms.watchVmEvents({ vmId: "", afterSeq: 0 });
    const reading = (async () => {
      try {
        for await (const { event } of stream) events.push(event!);
      } catch {}
    })();
    // Runs a second, then exits by itself: nobody asked it to stop.
    const { vm } = await vms.createVm({ requestId: "self-exit", name: "self-exit", image: "process", resources: { vcpus: 1, memoryMib: 64, diskGib: 0 }, command: ["/bin/sh", "-c", "sleep 1; exit 0"] });
    const t0 = Date.now();
    const deadline = t0 + 15_000;
    let current = vm!;
    while (current.state !== VmState.VM_STATE_STOPPED && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      current = (await vms.getVm({ vmId: vm!.vmId })).vm!;
    }
    expect(VmState[current.state]).toBe("VM_STATE_STOPPED");
    // Well before the next regular heartbeat (10 s): the agent beat at once.
    expect(Date.now() - t0).toBeLessThan(8000);
    for (let i = 0; i < 40 && !events.some((e) => e.vmId === vm!.vmId && e.state === VmState.VM_STATE_STOPPED); i++) await new Promise((r) => setTimeout(r, 50));
    stream.cancel();
    await reading;
    const stopped = events.find((e) => e.vmId === vm!.vmId && e.state === VmState.VM_STATE_STOPPED)!;
    expect(stopped).toMatchObject({ type: VmEventType.VM_EVENT_TYPE_STOPPED, initiator: "guest" });
    expect(stopped.detail).toContain("exited");
    // A stopped VM starts again as usual.
    expect((await vms.startVm({ requestId: "self-exit-start", vmId: vm!.vmId })).vm!.state).toBe(VmState.VM_STATE_RUNNING);
    await vms.terminateVm({ requestId: "self-exit-term", vmId: vm!.vmId });
  });
});

describe.skipIf(!bwrapAvailable())("a VM that died while its agent was down, end to end", () => {
  let env: DevEnv;
  let restarted: AgentHandle | undefined;
  beforeAll(async () => {
    env = await startDevEnv();
  });
  afterAll(async () => {
    await restarted?.shutdown();
    await env?.stop();
  });

  it("is STOPPED on the server right after the agent restarts and reconciles (initiator host)", async () => {
    const vms = createClient(VmServiceService, env.dev.server.address, { key: env.admin });
    try {
      const { vm } = await vms.createVm({ requestId: "orphan-of-restart", name: "survivor", image: "process", resources: { vcpus: 1, memoryMib: 64, diskGib: 0 } });
      for (let i = 0; i < 200 && (await vms.getVm({ vmId: vm!.vmId })).vm!.state !== VmState.VM_STATE_RUNNING; i++) await new Promise((r) => setTimeout(r, 50));
      const statePath = path.join(env.config.dataDir, "agent", DEV_HOST_ID, "vms", vm!.vmId, "instance.json");
      const { handle } = JSON.parse(readFileSync(statePath, "utf8")) as { handle: { pid: number } };
      // The agent goes away (its VMs outlive it); meanwhile the VM dies.
      const address = env.dev.agent.address;
      await env.dev.agent.shutdown();
      process.kill(-handle.pid, "SIGKILL");
      for (let i = 0; i < 100 && processAlive(handle.pid); i++) await new Promise((r) => setTimeout(r, 20));
      expect((await vms.getVm({ vmId: vm!.vmId })).vm!.state).toBe(VmState.VM_STATE_RUNNING);
      const t0 = Date.now();
      restarted = await startAgent({ ...env.config, hostId: DEV_HOST_ID, serverAddress: env.dev.server.address, agentListen: address }, createLogger({ level: "silent" }));
      let current = (await vms.getVm({ vmId: vm!.vmId })).vm!;
      for (let i = 0; i < 200 && current.state !== VmState.VM_STATE_STOPPED; i++) {
        await new Promise((r) => setTimeout(r, 50));
        current = (await vms.getVm({ vmId: vm!.vmId })).vm!;
      }
      expect(VmState[current.state]).toBe("VM_STATE_STOPPED");
      // The first beat after the restart carried it, not one ten seconds later.
      expect(Date.now() - t0).toBeLessThan(8000);
      const last = (await env.dev.server.storage.db.all<{ record: Buffer }>("SELECT record FROM vm_events WHERE vm_id = ? ORDER BY seq DESC LIMIT 1", [vm!.vmId])).map((r) => VmEvent.decode(r.record))[0]!;
      expect(last).toMatchObject({ type: VmEventType.VM_EVENT_TYPE_STOPPED, initiator: `host:${DEV_HOST_ID}` });
      await vms.terminateVm({ requestId: "orphan-of-restart-term", vmId: vm!.vmId });
    } finally {
      vms.close();
    }
  });
});

describe.skipIf(!bwrapAvailable())("an agent shut down with --stop-vms, end to end", () => {
  let env: DevEnv;
  beforeAll(async () => {
    env = await startDevEnv({ stopVmsOnShutdown: true });
  });
  afterAll(async () => {
    await env?.stop();
  });

  it("stops its VMs (no process left) and the server records them STOPPED before the agent is gone", async () => {
    const vms = createClient(VmServiceService, env.dev.server.address, { key: env.admin });
    try {
      const ids: string[] = [];
      for (const name of ["keep-a", "keep-b"]) {
        const { vm } = await vms.createVm({ requestId: `stop-vms-${name}`, name, image: "process", resources: { vcpus: 1, memoryMib: 64, diskGib: 0 } });
        ids.push(vm!.vmId);
      }
      for (const vmId of ids) for (let i = 0; i < 200 && (await vms.getVm({ vmId })).vm!.state !== VmState.VM_STATE_RUNNING; i++) await new Promise((r) => setTimeout(r, 50));
      const pids = ids.map((vmId) => (JSON.parse(readFileSync(path.join(env.config.dataDir, "agent", DEV_HOST_ID, "vms", vmId, "instance.json"), "utf8")) as { handle: { pid: number } }).handle.pid);
      expect(pids.every((p) => processAlive(p))).toBe(true);
      await env.dev.agent.shutdown();
      expect(pids.filter((p) => processAlive(p))).toEqual([]);
      for (const vmId of ids) {
        const last = (await env.dev.server.storage.db.all<{ record: Buffer }>("SELECT record FROM vm_events WHERE vm_id = ? ORDER BY seq DESC LIMIT 1", [vmId])).map((r) => VmEvent.decode(r.record))[0]!;
        expect(last).toMatchObject({ type: VmEventType.VM_EVENT_TYPE_STOPPED, state: VmState.VM_STATE_STOPPED, initiator: `host:${DEV_HOST_ID}` });
        expect((await vms.getVm({ vmId })).vm!.state).toBe(VmState.VM_STATE_STOPPED);
      }
    } finally {
      vms.close();
    }
  });
});

describe.each(backends())("the reconciler and missed heartbeats on $name", (backend) => {
  afterAll(() => backend.cleanup());
  const logger = createLogger({ level: "silent" });

  async function setup() {
    const storage = await Storage.open(await backend.fresh());
    const repo = new VmRepository(storage.db);
    const hub = new VmEventHub(repo);
    const changes = new VmRecordChanges(repo, hub);
    const inventory = new SqlHostInventory(storage.db);
    const placement = new SchedulerPlacement(inventory);
    // What the fake host answers to GetInstance (absent: NOT_FOUND).
    const onHost = new Map<string, Instance>();
    // While `reachable` is false the fake host answers nothing (UNAVAILABLE), as a down host.
    const host = { reachable: true };
    const unreachable = () => {
      if (!host.reachable) throw new TrustplaneError("UNAVAILABLE", "HOST_UNREACHABLE", "no route to host h1");
    };
    const hostControl = async () =>
      ({
        getInstance: async ({ vmId }: { vmId: string }) => {
          unreachable();
          const instance = onHost.get(vmId);
          if (!instance) throw new TrustplaneError("NOT_FOUND", "INSTANCE_NOT_FOUND", `no ${vmId}`);
          return { instance };
        },
        terminateInstance: async ({ vmId }: { vmId: string }) => {
          unreachable();
          if (!onHost.delete(vmId)) throw new TrustplaneError("NOT_FOUND", "INSTANCE_NOT_FOUND", `no ${vmId}`);
          return {};
        },
      }) as unknown as HostControlClient;
    const reconciler = new InstanceReconciler({ repo, audit: storage.audit, changes, placement, hostControl, logger });
    await inventory.register({ hostId: "h1", region: "", total: { vcpus: 4, memoryMib: 4096, diskGib: 10 }, hypervisors: [{ hypervisor: HypervisorType.HYPERVISOR_TYPE_SANDBOX, features: [], accelerator: "none", cost: 1 }] }, 0);
    const addVm = async (vmId: string, state = VmState.VM_STATE_RUNNING) => {
      await repo.create(Vm.fromPartial({ vmId, owner: "alice", name: vmId, image: "process", hypervisor: HypervisorType.HYPERVISOR_TYPE_SANDBOX, state, hostId: "h1", resources: { vcpus: 1, memoryMib: 256 }, createdAtMs: 1, updatedAtMs: 1 }));
      expect(await inventory.claim("h1", { vcpus: 1, memoryMib: 256, diskGib: 0 }, vmId)).toBe(true);
      onHost.set(vmId, Instance.fromPartial({ vmId, state }));
    };
    const eventsOf = async (vmId: string) => repo.eventsAfter(0, { vmId });
    const audited = async (action: string) => (await storage.db.all<{ target: string; principal: string }>("SELECT target, principal FROM audit_log WHERE action = ? ORDER BY seq", [action])).map((r) => `${r.principal} ${r.target}`);
    return { storage, repo, hub, changes, placement, hostControl, host, inventory, reconciler, onHost, addVm, eventsOf, audited };
  }

  it("ignores a heartbeat's stale report the host contradicts, and fails a VM the host lost (claim released)", async () => {
    const { storage, repo, inventory, reconciler, onHost, addVm, eventsOf } = await setup();
    try {
      await addVm("vm-a");
      await addVm("vm-b");
      // The beat says STOPPED, but GetInstance (now) says RUNNING: a start raced the beat.
      await reconciler.reconcileHost("h1", [Instance.fromPartial({ vmId: "vm-a", state: VmState.VM_STATE_STOPPED }), Instance.fromPartial({ vmId: "vm-b", state: VmState.VM_STATE_RUNNING })]);
      expect((await repo.get("vm-a"))!.state).toBe(VmState.VM_STATE_RUNNING);
      // vm-b is gone from the host altogether (its state directory was wiped).
      onHost.delete("vm-b");
      await reconciler.reconcileHost("h1", [Instance.fromPartial({ vmId: "vm-a", state: VmState.VM_STATE_RUNNING })]);
      expect(await repo.get("vm-b")).toMatchObject({ state: VmState.VM_STATE_FAILED, failureReason: INSTANCE_LOST });
      expect((await inventory.get("h1"))!.used.vcpus).toBe(1);
      // The host reports vm-a powered off by its guest: the record follows, with that initiator.
      onHost.set("vm-a", Instance.fromPartial({ vmId: "vm-a", state: VmState.VM_STATE_STOPPED }));
      await reconciler.reconcileHost("h1", [onHost.get("vm-a")!], [{ seq: 1, vmId: "vm-a", type: VmEventType.VM_EVENT_TYPE_STOPPED, detail: "process exited (code 0)", initiator: "guest", state: VmState.VM_STATE_STOPPED, timeMs: 2 }]);
      expect((await repo.get("vm-a"))!.state).toBe(VmState.VM_STATE_STOPPED);
      expect((await eventsOf("vm-a")).at(-1)).toMatchObject({ type: VmEventType.VM_EVENT_TYPE_STOPPED, initiator: "guest", detail: "process exited (code 0)" });
      // A guest that exits while the server still holds its start (STARTING) is looked at again
      // once the start is recorded: the record ends STOPPED, by the guest.
      await addVm("vm-e", VmState.VM_STATE_STARTING);
      onHost.set("vm-e", Instance.fromPartial({ vmId: "vm-e", state: VmState.VM_STATE_STOPPED }));
      await reconciler.reconcileHost("h1", [], [{ seq: 4, vmId: "vm-e", type: VmEventType.VM_EVENT_TYPE_STOPPED, detail: "process exited (code 0)", initiator: "guest", state: VmState.VM_STATE_STOPPED, timeMs: 2 }]);
      expect((await repo.get("vm-e"))!.state).toBe(VmState.VM_STATE_STARTING);
      await repo.update("vm-e", (cur) => ({ ...cur, state: VmState.VM_STATE_RUNNING, updatedAtMs: 2 }));
      for (let i = 0; i < 100 && (await repo.get("vm-e"))!.state !== VmState.VM_STATE_STOPPED; i++) await new Promise((r) => setTimeout(r, 50));
      expect((await eventsOf("vm-e")).at(-1)).toMatchObject({ type: VmEventType.VM_EVENT_TYPE_STOPPED, initiator: "guest", state: VmState.VM_STATE_STOPPED });

      // What a host says is bounded before it reaches a VM's event log.
      await addVm("vm-d");
      onHost.set("vm-d", Instance.fromPartial({ vmId: "vm-d", state: VmState.VM_STATE_STOPPED }));
      await reconciler.reconcileHost("h1", [onHost.get("vm-d")!], [{ seq: 3, vmId: "vm-d", type: VmEventType.VM_EVENT_TYPE_STOPPED, detail: "x".repeat(10_000), initiator: "guest", state: VmState.VM_STATE_STOPPED, timeMs: 2 }]);
      expect((await eventsOf("vm-d")).at(-1)!.detail).toHaveLength(300);
      // Events of the server's own commands are not followed: a pause it is making (the host is
      // already PAUSED, the record not yet) must be left to the command, or it would fail ABORTED.
      await addVm("vm-c");
      onHost.set("vm-c", Instance.fromPartial({ vmId: "vm-c", state: VmState.VM_STATE_PAUSED }));
      await reconciler.reconcileHost("h1", [Instance.fromPartial({ vmId: "vm-c", state: VmState.VM_STATE_RUNNING })], [{ seq: 2, vmId: "vm-c", type: VmEventType.VM_EVENT_TYPE_SUSPENDED, detail: "paused", initiator: "control-plane", state: VmState.VM_STATE_PAUSED, timeMs: 3 }]);
      expect((await repo.get("vm-c"))!.state).toBe(VmState.VM_STATE_RUNNING);
      // A host speaks only for its own VMs: h2 reporting h1's vm-c paused (the guest's doing) changes nothing.
      await reconciler.reconcileHost("h2", [Instance.fromPartial({ vmId: "vm-c", state: VmState.VM_STATE_PAUSED })], [{ seq: 9, vmId: "vm-c", type: VmEventType.VM_EVENT_TYPE_SUSPENDED, detail: "forged", initiator: "guest", state: VmState.VM_STATE_PAUSED, timeMs: 9 }]);
      expect((await repo.get("vm-c"))!.state).toBe(VmState.VM_STATE_RUNNING);
    } finally {
      await storage.close();
    }
  });

  it("fails a down host's running VMs with HOST_DOWN, keeps their claims, and follows the host once it reports again", async () => {
    const { storage, repo, inventory, reconciler, onHost, addVm, eventsOf, audited } = await setup();
    try {
      await addVm("vm-up");
      await addVm("vm-paused", VmState.VM_STATE_PAUSED);
      await addVm("vm-off", VmState.VM_STATE_STOPPED);
      let now = 0;
      const monitor = new HeartbeatMonitor(inventory, logger, { intervalMs: 10_000, now: () => now, onDown: (hostId) => reconciler.hostDown(hostId) });
      now = 5_000;
      expect(await monitor.sweep()).toEqual([]);
      expect((await repo.get("vm-up"))!.state).toBe(VmState.VM_STATE_RUNNING);
      now = 31_000; // three missed beats
      expect(await monitor.sweep()).toEqual(["h1"]);
      for (const vmId of ["vm-up", "vm-paused"]) {
        expect(await repo.get(vmId)).toMatchObject({ state: VmState.VM_STATE_FAILED, failureReason: HOST_DOWN });
        expect((await eventsOf(vmId)).at(-1)).toMatchObject({ type: VmEventType.VM_EVENT_TYPE_FAILED, initiator: "scheduler" });
      }
      // A stopped VM is not running anywhere: nothing to fail.
      expect((await repo.get("vm-off"))!.state).toBe(VmState.VM_STATE_STOPPED);
      // The claims stay: the VMs may still be running on the unreachable host.
      expect((await inventory.get("h1"))!.used.vcpus).toBe(3);

      // The host is back and reports vm-up still running: the record follows it.
      await inventory.heartbeat("h1", { load: 0, instanceCount: 1, latencyMs: 1 }, 32_000);
      await reconciler.reconcileHost("h1", [Instance.fromPartial({ vmId: "vm-up", state: VmState.VM_STATE_RUNNING }), Instance.fromPartial({ vmId: "vm-paused", state: VmState.VM_STATE_PAUSED })]);
      expect(await repo.get("vm-up")).toMatchObject({ state: VmState.VM_STATE_RUNNING, failureReason: "" });
      expect((await eventsOf("vm-up")).at(-1)).toMatchObject({ type: VmEventType.VM_EVENT_TYPE_STARTED, initiator: "host:h1" });
      expect((await repo.get("vm-paused"))!.state).toBe(VmState.VM_STATE_PAUSED);
      expect((await audited("vm.host_down")).sort()).toEqual(["scheduler vm-paused", "scheduler vm-up"]);
      expect(await audited("vm.host_report")).toEqual(expect.arrayContaining(["host:h1 vm-up", "host:h1 vm-paused"]));

      // Down again, and back without vm-up (the host was rebuilt): lost, its claim released.
      now = 70_000;
      expect(await monitor.sweep()).toEqual(["h1"]);
      onHost.delete("vm-up");
      await inventory.heartbeat("h1", { load: 0, instanceCount: 1, latencyMs: 1 }, 71_000);
      await reconciler.reconcileHost("h1", [Instance.fromPartial({ vmId: "vm-paused", state: VmState.VM_STATE_PAUSED })]);
      expect(await repo.get("vm-up")).toMatchObject({ state: VmState.VM_STATE_FAILED, failureReason: INSTANCE_LOST });
      expect((await inventory.get("h1"))!.used.vcpus).toBe(2);
    } finally {
      await storage.close();
    }
  });

  it("terminates a HOST_DOWN VM in the record while its host is down, and the host ends the instance once it is back", async () => {
    const { storage, repo, hub, changes, placement, hostControl, host, inventory, reconciler, onHost, addVm, eventsOf } = await setup();
    try {
      const released: string[] = [];
      const vmService = createVmHandlers({
        storage,
        repo,
        placement,
        events: hub,
        changes,
        hostControl,
        logger,
        releaseServiceAccounts: async (vm) => void released.push(vm.vmId),
        hostUp: async (hostId) => (await inventory.get(hostId))?.up ?? false,
      });
      const ctx = (requestId: string) => ({ caller: { principal: "alice", keyId: "k", roles: [], statement: CallStatement.fromPartial({}) }, requestId, method: "TerminateVm", logger, signal: new AbortController().signal }) as unknown as CallContext;
      await addVm("vm-gone");
      await addVm("vm-other");
      let now = 0;
      const monitor = new HeartbeatMonitor(inventory, logger, { intervalMs: 10_000, now: () => now, onDown: (hostId) => reconciler.hostDown(hostId) });
      host.reachable = false;
      now = 31_000;
      expect(await monitor.sweep()).toEqual(["h1"]);
      expect(await repo.get("vm-gone")).toMatchObject({ state: VmState.VM_STATE_FAILED, failureReason: HOST_DOWN });

      // The host cannot be asked, yet the terminate completes: record, claim and tokens.
      const { vm } = await vmService.terminateVm!({ requestId: "t-gone", vmId: "vm-gone" }, ctx("t-gone"));
      expect(vm!.state).toBe(VmState.VM_STATE_TERMINATED);
      expect((await eventsOf("vm-gone")).at(-1)!.detail).toMatch(/host h1 is down/);
      expect(released).toEqual(["vm-gone"]);
      expect((await inventory.get("h1"))!.used.vcpus).toBe(1);
      expect(onHost.has("vm-gone")).toBe(true);

      // Back, still running both: its first beat is told to end the terminated one (the agent
      // terminates orphans), and the other is followed.
      host.reachable = true;
      let followed: Promise<void> | undefined;
      const hosts = createHostServiceHandlers({ storage, inventory, repo, heartbeatIntervalSeconds: 10, now: () => 32_000, reported: (hostId, instances, events) => (followed = reconciler.reconcileHost(hostId, instances, events)) });
      const beat = await hosts.heartbeat!({ hostId: "h1", load: 0, instanceCount: 2, latencyMs: 1, instances: [onHost.get("vm-gone")!, onHost.get("vm-other")!], drivers: [], events: [], used: undefined, final: false }, { ...ctx("beat"), caller: { principal: "host:h1", keyId: "h", roles: [], statement: CallStatement.fromPartial({}) } } as CallContext);
      expect(beat.orphanedVmIds).toEqual(["vm-gone"]);
      await followed;
      expect((await repo.get("vm-gone"))!.state).toBe(VmState.VM_STATE_TERMINATED);
      expect((await repo.get("vm-other"))!.state).toBe(VmState.VM_STATE_RUNNING);

      // A VM on an up host that does not answer is not terminated behind its back.
      host.reachable = false;
      await expect(vmService.terminateVm!({ requestId: "t-other", vmId: "vm-other" }, ctx("t-other"))).rejects.toMatchObject({ status: "UNAVAILABLE" });
      expect((await repo.get("vm-other"))!.state).toBe(VmState.VM_STATE_FAILED);
      expect(released).toEqual(["vm-gone"]);
    } finally {
      await storage.close();
    }
  });
});
