// `trustplane vm …` and `trustplane hypervisors` as a user runs them against `trustplane dev`:
// create, the list table with paging, get, stop (saying it was graceful), start, watch (current
// state first, then the changes, one line each when not on a terminal), terminate, the
// capability matrix, and usage / server errors with their reason and exit code.
import { execFile, spawn } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bwrapAvailable } from "../../server/src/vm/agent/drivers/sandbox/sandbox-driver.js";
import { VmWatchView } from "../../server/src/vm/cli/vm-watch-view.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { VmEventType, VmServiceService, VmState } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";

const run = promisify(execFile);
const CLI = path.resolve("server/bin/trustplane.mjs");
let env: DevEnv;

const args = (...a: string[]) => [CLI, ...a, "--server", env.dev.server.address, "--data-dir", env.config.dataDir];

async function cli(...a: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, args(...a));
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

/** Polls with the SDK (each CLI run is a fresh node process, seconds under load). */
async function untilState(vmId: string, state: VmState): Promise<void> {
  const vms = createClient(VmServiceService, env.dev.server.address, { key: env.admin });
  try {
    for (let i = 0; i < 200; i++) {
      if ((await vms.getVm({ vmId })).vm!.state === state) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    vms.close();
  }
  throw new Error(`${vmId} never ${VmState[state]}`);
}

describe.skipIf(!bwrapAvailable())("trustplane vm CLI", () => {
  beforeAll(async () => {
    env = await startDevEnv();
  }, 60_000);
  afterAll(async () => {
    await env?.stop();
  });

  it("creates, lists (all pages or one), stops, starts, watches and terminates a VM", { timeout: 90_000 }, async () => {
    const created = await cli("vm", "create", "web", "--image", "process", "--memory", "128", "--json");
    expect(created.code).toBe(0);
    const vmId = (JSON.parse(created.stdout) as { vmId: string }).vmId;
    const second = JSON.parse((await cli("vm", "create", "api", "--image", "process", "--memory", "128", "--json")).stdout) as { vmId: string };
    await untilState(vmId, VmState.VM_STATE_RUNNING);
    await untilState(second.vmId, VmState.VM_STATE_RUNNING);
    expect((await cli("vm", "get", vmId)).stdout).toMatch(new RegExp(`^${vmId}  web  RUNNING\n  image process on sandbox \\[none\\], host dev-host-1`));

    const list = await cli("vm", "list");
    expect(list.stdout).toMatch(/ID\s+NAME\s+STATE\s+HYPERVISOR\s+HOST\s+REGION/);
    expect(list.stdout).toMatch(new RegExp(`${vmId}\\s+web\\s+RUNNING\\s+sandbox\\s+dev-host-1`));
    expect(list.stdout).toContain(second.vmId);
    const page = await cli("vm", "list", "--page-size", "1");
    expect(page.stdout.split("\n").filter((l) => l.startsWith("vm-"))).toHaveLength(1);
    const token = /more: --page-token (\S+)/.exec(page.stdout)?.[1];
    expect(token).toBeDefined();
    const rest = await cli("vm", "list", "--page-size", "1", "--page-token", token!);
    expect(rest.stdout).toContain([vmId, second.vmId].sort()[1]!);
    expect((await cli("vm", "list", "--hypervisor", "qemu")).stdout).not.toContain(vmId);

    // watch: the current state first, then every change, as plain lines on a pipe.
    const watch = spawn(process.execPath, args("vm", "watch", vmId), { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    watch.stdout.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => watch.once("exit", (code) => r(code)));
    try {
      for (let i = 0; i < 100 && !out.includes("current state"); i++) await new Promise((r) => setTimeout(r, 50));
      expect(out.split("\n")[0]).toMatch(new RegExp(`${vmId}\\s+RUNNING\\s+DEFINED\\s+current state on dev-host-1`));

      const stop = await cli("vm", "stop", vmId, "--timeout", "5");
      expect(stop.stdout).toContain("stopped gracefully");
      expect(stop.stdout).toContain("STOPPED");
      expect((await cli("vm", "start", vmId)).stdout).toContain("RUNNING");
      expect((await cli("vm", "terminate", vmId)).stdout).toContain("TERMINATED");
      for (let i = 0; i < 100 && !out.includes("TERMINATED"); i++) await new Promise((r) => setTimeout(r, 50));
      const states = out
        .trim()
        .split("\n")
        .map((l) => l.split(/\s+/)[2]);
      expect(states).toEqual(["RUNNING", "STOPPING", "STOPPED", "STARTING", "RUNNING", "TERMINATING", "TERMINATED"]);
      expect(out).toContain("(by admin)");
    } finally {
      watch.kill("SIGINT");
      expect(await exited).toBe(0);
    }
    await cli("vm", "terminate", second.vmId);

    const hv = await cli("hypervisors");
    expect(hv.stdout).toMatch(/dev-host-1\s+sandbox\s+none\s+✓\s+✓\s+✓\s+✓\s+·/);
  });

  it("explains bad flags (exit 2, CLI_USAGE) and server refusals with their reason", async () => {
    const vol = await cli("vm", "create", "x", "--volume", "nope");
    expect(vol.code).toBe(2);
    expect(vol.stderr).toContain("--volume: expected ID:SIZE_GIB[:ro]");
    expect(vol.stderr).toContain("CLI_USAGE");
    const fwd = await cli("vm", "create", "x", "--forward", "8080");
    expect([fwd.code, fwd.stderr.includes("--forward: expected [tcp|udp:]HOST_PORT:GUEST_PORT")]).toEqual([2, true]);
    const region = await cli("vm", "create", "x", "--region", "mars-1");
    expect(region.code).toBe(1);
    expect(region.stderr).toContain("RegionFilter removed 1");
    expect(region.stderr).toContain("RESOURCE_EXHAUSTED NO_VALID_HOST");
    const sandboxForward = await cli("vm", "create", "x", "--forward", "0:8080");
    expect(sandboxForward.code).toBe(2);
    expect(sandboxForward.stderr).toContain("no guest network to forward ports into");
  });
});

describe("vm watch view", () => {
  const event = (vmId: string, state: VmState, detail: string) => ({ seq: 1, vmId, type: VmEventType.VM_EVENT_TYPE_STARTED, detail, initiator: "admin", state, timeMs: 0 });

  it("redraws one row per VM in place on a terminal, and drops a VM once it is terminated", () => {
    const writes: string[] = [];
    const view = new VmWatchView({ isTTY: true, write: (s: string) => writes.push(s) });
    expect(view.live).toBe(true);
    view.show(event("vm-a", VmState.VM_STATE_RUNNING, "running"));
    view.show(event("vm-b", VmState.VM_STATE_STARTING, "booting"));
    view.show(event("vm-b", VmState.VM_STATE_RUNNING, "running"));
    const last = writes.at(-1)!;
    expect(last.startsWith("\x1b[H\x1b[J")).toBe(true);
    expect(last.match(/^vm-b/gm)).toHaveLength(1);
    expect(last).toMatch(/vm-b\s+RUNNING/);
    expect(last).toContain("2 VMs · 3 events");
    view.show(event("vm-a", VmState.VM_STATE_TERMINATED, "terminated"));
    expect(writes.at(-1)).not.toMatch(/^vm-a/m);
  });

  it("appends one line per event elsewhere", () => {
    const writes: string[] = [];
    const view = new VmWatchView({ isTTY: false, write: (s: string) => writes.push(s) });
    view.show(event("vm-a", VmState.VM_STATE_RUNNING, "running"));
    expect(writes).toEqual([`1970-01-01T00:00:00.000Z  vm-a  RUNNING     STARTED        running  (by admin)\n`]);
  });
});
