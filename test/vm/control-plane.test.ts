// The agent's control plane directly: reconciliation with the real processes after an agent
// restart (metadata endpoints included), and the capability matrix following the drivers'
// own function tables.
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type AddressInfo, type Server } from "node:net";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import { HypervisorType, InstanceSpec, VmState, type VmEvent } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { ControlPlane } from "../../server/src/vm/agent/control-plane.js";
import type { Driver } from "../../server/src/vm/agent/driver.js";
import { SandboxDriver, bwrapAvailable } from "../../server/src/vm/agent/drivers/sandbox/sandbox-driver.js";
import { processAlive } from "../../server/src/vm/agent/process-liveness.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "tp-cp-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const logger = createLogger({ level: "silent" });
const spec = (vmId: string) => InstanceSpec.fromPartial({ vmId, name: vmId, hypervisor: HypervisorType.HYPERVISOR_TYPE_SANDBOX, image: "process", resources: { vcpus: 1, memoryMib: 128 } });

describe.skipIf(!bwrapAvailable())("control plane", () => {
  it("reports a VM whose process died while the agent was down as STOPPED, never RUNNING", async () => {
    const first = new ControlPlane("h1", [new SandboxDriver()], dir, logger);
    const running = await first.create(spec("vm-reconcile"), true, "test");
    expect(running.state).toBe(VmState.VM_STATE_RUNNING);
    process.kill(-running.pid, "SIGKILL");
    for (let i = 0; i < 100 && processAlive(running.pid, "vm-reconcile"); i++) await new Promise((r) => setTimeout(r, 20));
    // A new agent process: only the persisted state and the real processes to go by.
    const second = new ControlPlane("h1", [new SandboxDriver()], dir, logger);
    await second.reconcile();
    expect(second.get("vm-reconcile").state).toBe(VmState.VM_STATE_STOPPED);
    const restarted = await second.start("vm-reconcile", "test");
    expect(restarted.state).toBe(VmState.VM_STATE_RUNNING);
    await second.terminate("vm-reconcile", "test");
    expect(processAlive(restarted.pid, "vm-reconcile")).toBe(false);
  });

  it("keeps a VM that is still running RUNNING across an agent restart, and notices when it dies later", { timeout: 15_000 }, async () => {
    const first = new ControlPlane("h1", [new SandboxDriver()], dir, logger);
    const running = await first.create(spec("vm-survivor"), true, "test");
    const second = new ControlPlane("h1", [new SandboxDriver()], dir, logger);
    await second.reconcile();
    expect(second.get("vm-survivor").state).toBe(VmState.VM_STATE_RUNNING);
    // The restarted agent is not the VM's parent: it still notices the process going away.
    process.kill(-running.pid, "SIGKILL");
    for (let i = 0; i < 100 && second.get("vm-survivor").state === VmState.VM_STATE_RUNNING; i++) await new Promise((r) => setTimeout(r, 50));
    expect(second.get("vm-survivor").state).toBe(VmState.VM_STATE_STOPPED);
    await second.terminate("vm-survivor", "test");
    expect(processAlive(running.pid, "vm-survivor")).toBe(false);
  });

  // Stands in for the token agent: one loopback listener per VM, on the asked address if any.
  function endpoints() {
    const open = new Map<string, Server>();
    const asked: { vmId: string; at?: { host: string; port: number } }[] = [];
    return {
      asked,
      async metadataEndpoint(s: InstanceSpec, at?: { host: string; port: number }) {
        asked.push({ vmId: s.vmId, at });
        const server = createServer();
        await new Promise<void>((resolve, reject) => {
          server.once("error", reject);
          server.listen(at?.port ?? 0, at?.host ?? "127.0.0.1", () => resolve());
        });
        open.set(s.vmId, server);
        const a = server.address() as AddressInfo;
        return { host: a.address, port: a.port };
      },
      close: () => Promise.all([...open.values()].map((x) => new Promise((r) => x.close(r)))),
    };
  }

  it.skipIf(!new SandboxDriver().routesMetadata())("brings a re-attached VM's metadata endpoint back on the address its guest is routed to", async () => {
    const before = endpoints();
    const first = new ControlPlane("h1", [new SandboxDriver()], dir, logger, before);
    const running = await first.create(spec("vm-meta-back"), true, "test");
    expect(running.metadataEndpoint).toMatch(/^127\.0\.0\.1:\d+$/);
    await before.close(); // the agent goes away, its endpoints with it
    const after = endpoints();
    const second = new ControlPlane("h1", [new SandboxDriver()], dir, logger, after);
    await second.reconcile();
    const [host, port] = running.metadataEndpoint.split(":");
    expect(after.asked).toEqual([{ vmId: "vm-meta-back", at: { host, port: Number(port) } }]);
    expect(second.get("vm-meta-back")).toMatchObject({ state: VmState.VM_STATE_RUNNING, metadataEndpoint: running.metadataEndpoint });
    await second.terminate("vm-meta-back", "test");
    await after.close();
  });

  it.skipIf(!new SandboxDriver().routesMetadata())("reports a running VM whose metadata port was taken while the agent was down", async () => {
    const before = endpoints();
    const first = new ControlPlane("h1", [new SandboxDriver()], dir, logger, before);
    const running = await first.create(spec("vm-meta-taken"), true, "test");
    await before.close();
    // Someone else binds the port meanwhile.
    const [host, port] = running.metadataEndpoint.split(":");
    const squatter = createServer();
    await new Promise<void>((r) => squatter.listen(Number(port), host, () => r()));
    const lines: string[] = [];
    const sink = new PassThrough();
    sink.on("data", (d: Buffer) => lines.push(d.toString()));
    const after = endpoints();
    const second = new ControlPlane("h1", [new SandboxDriver()], dir, createLogger({ level: "warn", destination: sink }), after);
    const events: VmEvent[] = [];
    const watching = new AbortController();
    const reading = (async () => {
      for await (const e of second.watch("vm-meta-taken", watching.signal)) events.push(e);
    })();
    await new Promise((r) => setTimeout(r, 10));
    await second.reconcile();
    // Still running (its guest is fine), but the endpoint is not advertised and the loss is told.
    expect(second.get("vm-meta-taken")).toMatchObject({ state: VmState.VM_STATE_RUNNING, metadataEndpoint: "" });
    for (let i = 0; i < 50 && events.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(events[0]).toMatchObject({ initiator: "host:h1", state: VmState.VM_STATE_RUNNING });
    expect(events[0]!.detail).toContain("METADATA_PORT_UNAVAILABLE");
    expect(lines.join("")).toContain("metadata endpoint of a running VM could not be restored");
    watching.abort();
    await reading;
    await new Promise((r) => squatter.close(r));
    await second.terminate("vm-meta-taken", "test");
    await after.close();
  });

  it("derives the capability matrix from the driver table", () => {
    const sandbox = new SandboxDriver();
    const withPause: Driver = Object.assign(Object.create(Object.getPrototypeOf(sandbox)), sandbox, { pause: async () => undefined });
    const ops = (d: Driver) => new ControlPlane("h", [d], dir, logger).capabilities().drivers[0]!.operations;
    expect(ops(sandbox)).not.toContain("pause");
    expect(ops(withPause)).toContain("pause");
  });

  it("starts a VM whose guest just exited only after the old boot's cleanup is done", async () => {
    // The old boot's teardown (relays, namespace, socket, cgroup: same names as the next
    // boot's) must not run over a start that came right after the exit.
    const sandbox = new SandboxDriver();
    const order: string[] = [];
    const slowCleanup: Driver = Object.assign(Object.create(Object.getPrototypeOf(sandbox)), sandbox, {
      stop: async (...args: Parameters<Driver["stop"]>) => {
        order.push("cleanup begins");
        await new Promise((r) => setTimeout(r, 400));
        const res = await sandbox.stop(...args);
        order.push("cleanup done");
        return res;
      },
      start: async (...args: Parameters<Driver["start"]>) => {
        order.push("start");
        return sandbox.start(...args);
      },
    });
    const cp = new ControlPlane("h1", [slowCleanup], dir, logger);
    await cp.create(InstanceSpec.fromPartial({ ...spec("vm-quick-exit"), command: ["/bin/sh", "-c", "sleep 0.3; exit 0"] }), true, "test");
    for (let i = 0; i < 200 && cp.get("vm-quick-exit").state !== VmState.VM_STATE_STOPPED; i++) await new Promise((r) => setTimeout(r, 10));
    expect(cp.get("vm-quick-exit").state).toBe(VmState.VM_STATE_STOPPED);
    await cp.start("vm-quick-exit", "test");
    expect(order).toEqual(["start", "cleanup begins", "cleanup done", "start"]);
    await cp.terminate("vm-quick-exit", "test");
  });

  it("enforces the memory limit inside the sandbox (and the same program succeeds with room)", async () => {
    const { existsSync } = await import("node:fs");
    const cp = new ControlPlane("h1", [new SandboxDriver()], dir, logger);
    // Holds 64 MB in a shell variable, then leaves a mark in its root; the mark only appears
    // if the allocation succeeded.
    const program = ["/bin/sh", "-c", "v=$(head -c 64000000 /dev/zero | tr '\\0' a) && echo survived > /vm/out; sleep 30"];
    async function run(vmId: string, memoryMib: number): Promise<boolean> {
      let inst;
      try {
        inst = await cp.create(InstanceSpec.fromPartial({ ...spec(vmId), resources: { vcpus: 1, memoryMib }, command: program }), true, "test");
      } catch (e) {
        // Killed at the cap within its first 100 ms: the start itself reports the exit.
        if ((e as { reason?: string }).reason !== "GUEST_EXITED") throw e;
        await cp.terminate(vmId, "test");
        return false;
      }
      const mark = path.join(dir, vmId, "root", "out");
      // Up to 30 s: the loop ends as soon as the mark appears or the process dies, and a loaded
      // machine can take seconds to push 64 MB through a pipe.
      for (let i = 0; i < 600 && !existsSync(mark) && processAlive(inst.pid, vmId); i++) await new Promise((r) => setTimeout(r, 50));
      const survived = existsSync(mark);
      await cp.terminate(vmId, "test");
      return survived;
    }
    expect(await run("vm-roomy", 512), "the program fails even with 512 MiB").toBe(true);
    expect(await run("vm-hog", 32), "64 MB fit in a 32 MiB sandbox").toBe(false);
  });
});
