// The sandbox driver's guest support (used by job VMs): through the control plane a guest of a
// provided image sees only the system, the image's read-only files and its own host channel —
// never the agent's state or any other VM's directory — its memory is capped by its own cgroup
// (a guest that allocates past it is killed), and terminate leaves no cgroup, socket or file.
import { existsSync, readdirSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { HypervisorType, InstanceSpec, VmState } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { ControlPlane } from "../../server/src/vm/agent/control-plane.js";
import type { GuestSupport, GuestSupportProvider } from "../../server/src/vm/agent/driver.js";
import { SandboxDriver, bwrapAvailable } from "../../server/src/vm/agent/drivers/sandbox/sandbox-driver.js";

const base = mkdtempSync(path.join(os.tmpdir(), "tp-guest-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));
const logger = createLogger({ level: "silent" });
const run = Math.random().toString(36).slice(2, 8);

/** Files the guest must not see: a secret in the agent's state and another VM's directory. */
const secretDir = path.join(base, "agent-state");
mkdirSync(secretDir, { recursive: true });
writeFileSync(path.join(secretDir, "host-signing.jwk.json"), "SECRET");
const imageDir = path.join(base, "image");
mkdirSync(imageDir, { recursive: true });
writeFileSync(path.join(imageDir, "program.sh"), "echo program-ran\n");

function provider(script: string, memoryCgroup: boolean): GuestSupportProvider & { released: (vmId: string) => Promise<void>; releasedIds: string[] } {
  const releasedIds: string[] = [];
  return {
    releasedIds,
    async prepare(_spec, dir): Promise<GuestSupport> {
      const channelDir = path.join(dir, "channel");
      mkdirSync(channelDir, { recursive: true, mode: 0o700 });
      const server = createServer((s) => s.end("hello-from-host\n"));
      await new Promise<void>((r) => server.listen(path.join(channelDir, "c.sock"), r));
      server.unref();
      return { channelDir, readOnlyPaths: [imageDir], command: ["/bin/sh", "-c", script], memoryCgroup };
    },
    async released(vmId) {
      releasedIds.push(vmId);
    },
  };
}

const spec = (vmId: string, memoryMib = 64) =>
  InstanceSpec.fromPartial({ vmId, name: vmId, hypervisor: HypervisorType.HYPERVISOR_TYPE_SANDBOX, image: "job-runner", resources: { vcpus: 1, memoryMib }, network: { mode: "none", portForwards: [] } });

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.skipIf(!bwrapAvailable() || process.getuid?.() !== 0)("sandbox guest support", () => {
  it("the guest sees its image files and its channel, not the agent's state or the repository", async () => {
    const vmsDir = path.join(secretDir, "vms");
    const repo = path.resolve(".");
    const script = [
      `sh ${imageDir}/program.sh > /vm/out`,
      `test -S /run/trustplane/c.sock && echo channel-present >> /vm/out`,
      `(touch /run/trustplane/x 2>/dev/null && echo channel-writable || echo channel-read-only) >> /vm/out`,
      `(cat ${secretDir}/host-signing.jwk.json 2>/dev/null || echo no-agent-state) >> /vm/out`,
      `(ls ${repo}/package.json 2>/dev/null || echo no-repository) >> /vm/out`,
      `(ls ${vmsDir} 2>/dev/null || echo no-vm-dirs) >> /vm/out`,
      `echo done >> /vm/out; sleep 30`,
    ].join("; ");
    const p = provider(script, true);
    const cp = new ControlPlane("h1", [new SandboxDriver()], vmsDir, logger);
    cp.provideGuest("job-runner", p);
    await cp.reconcile();
    const vmId = `guest-view-${run}`;
    await cp.create(spec(vmId), true, "test");
    const out = path.join(vmsDir, vmId, "root", "out");
    await waitFor(() => existsSync(out) && readFileSync(out, "utf8").includes("done"));
    expect(readFileSync(out, "utf8").trim().split("\n")).toEqual(["program-ran", "channel-present", "channel-read-only", "no-agent-state", "no-repository", "no-vm-dirs", "done"]);
    expect(cgroupsOf(vmId).length).toBeGreaterThan(0);
    await cp.terminate(vmId, "test");
    expect(p.releasedIds).toEqual([vmId]);
    expect(existsSync(path.join(vmsDir, vmId))).toBe(false);
    expect(cgroupsOf(vmId)).toEqual([]);
  }, 30_000);

  it("a guest with noDiskWrites cannot write to its root, and its console reaches no file", async () => {
    const vmsDir = path.join(base, "vms-nowrite");
    const p = provider("(printf data > /vm/leak); echo console-line; sleep 30", false);
    const noWrites: GuestSupportProvider = { prepare: async (s, d) => ({ ...(await p.prepare(s, d)), noDiskWrites: true }), released: p.released };
    const cp = new ControlPlane("h1", [new SandboxDriver()], vmsDir, logger);
    cp.provideGuest("job-runner", noWrites);
    await cp.reconcile();
    const vmId = `guest-nowrite-${run}`;
    await cp.create(spec(vmId, 128), true, "test");
    await new Promise((r) => setTimeout(r, 500));
    expect(existsSync(path.join(vmsDir, vmId, "root", "leak"))).toBe(false);
    const consoleFile = path.join(vmsDir, vmId, "console.log");
    expect(existsSync(consoleFile) ? readFileSync(consoleFile, "utf8") : "").not.toContain("console-line");
    await cp.terminate(vmId, "test");
  }, 30_000);

  it("a guest's task count is capped: a fork bomb stays inside its cgroup", async () => {
    // Starts 700 sleepers; the VM's pids cgroup lets at most 512 tasks exist (counted with
    // shell builtins only: at the cap, nothing more can be forked).
    const script = `n=0; for i in $(seq 1 700); do (sleep 20 &) 2>/dev/null && n=$((n+1)); done; c=0; for p in /proc/[0-9]*; do c=$((c+1)); done; echo $c > /vm/count; sleep 30`;
    const vmsDir = path.join(base, "vms-pids");
    const cp = new ControlPlane("h1", [new SandboxDriver()], vmsDir, logger);
    cp.provideGuest("job-runner", provider(script, true));
    await cp.reconcile();
    const vmId = `guest-pids-${run}`;
    await cp.create(spec(vmId, 128), true, "test");
    const count = path.join(vmsDir, vmId, "root", "count");
    await waitFor(() => existsSync(count) && readFileSync(count, "utf8").trim() !== "", 20_000);
    const tasks = Number(readFileSync(count, "utf8").trim());
    expect(tasks).toBeGreaterThan(10);
    expect(tasks).toBeLessThanOrEqual(512);
    await cp.terminate(vmId, "test");
    expect(cgroupsOf(vmId)).toEqual([]);
  }, 40_000);

  it("a guest that allocates past its memory cgroup is killed; the host is untouched", async () => {
    // 300 MiB of resident memory in a 64 MiB VM: the cgroup OOM-kills the guest, not the host.
    const script = `node -e "const a=[]; for(let i=0;i<30;i++){a.push(Buffer.alloc(10<<20,1));} require('fs').writeFileSync('/vm/survived','yes')"; echo exit=$? > /vm/exit; sleep 30`;
    const vmsDir = path.join(base, "vms-oom");
    const cp = new ControlPlane("h1", [new SandboxDriver()], vmsDir, logger);
    cp.provideGuest("job-runner", provider(script, true));
    await cp.reconcile();
    const vmId = `guest-oom-${run}`;
    await cp.create(spec(vmId, 64), true, "test");
    const exit = path.join(vmsDir, vmId, "root", "exit");
    await waitFor(() => existsSync(exit));
    expect(readFileSync(exit, "utf8").trim()).toBe("exit=137");
    expect(existsSync(path.join(vmsDir, vmId, "root", "survived"))).toBe(false);
    expect(cp.get(vmId).state).toBe(VmState.VM_STATE_RUNNING);
    await cp.terminate(vmId, "test");
  }, 30_000);
});

/** The VM's cgroup directories (one per controller on v1, one on v2), named <vmId>.<boot>. */
function cgroupsOf(vmId: string): string[] {
  const parents = ["/sys/fs/cgroup/trustplane", ...["memory", "pids", "cpu"].map((c) => `/sys/fs/cgroup/${c}/trustplane`)];
  return parents.flatMap((d) => (existsSync(d) ? readdirSync(d).filter((n) => n.startsWith(`${vmId}.`)).map((n) => path.join(d, n)) : []));
}

