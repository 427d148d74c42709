// CPU, memory and pid limits for one process VM (seed 004: "CPU/memory limits where the kernel
// allows") as its own cgroup, v2 or v1, whichever is writable; vCPUs become a CPU-time quota.
// RLIMIT_CPU is not used: it counts CPU seconds per process and would kill a long VM, not pace it.
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import path from "node:path";

export interface CgroupLimits {
  vcpus: number;
  memoryMib: number;
  /** Processes and threads the VM may have at once (a fork bomb stops there). */
  pids: number;
}

/** One VM's cgroup: a directory per hierarchy (one on v2, one per controller on v1). */
export interface SandboxCgroup {
  version: 1 | 2;
  dirs: string[];
}

const ROOT = "/sys/fs/cgroup";
const PERIOD_US = 100_000;

function tryWrite(file: string, value: string): boolean {
  try {
    writeFileSync(file, value);
    return true;
  } catch {
    return false;
  }
}

/** Creates and configures the VM's cgroup; undefined when no writable hierarchy offers the controllers. */
export function createSandboxCgroup(vmId: string, limits: CgroupLimits, root = ROOT): SandboxCgroup | undefined {
  const vcpus = Math.max(1, Math.floor(limits.vcpus));
  const memBytes = String(Math.max(16, limits.memoryMib) * 1024 * 1024);
  if (existsSync(path.join(root, "cgroup.controllers"))) {
    const parent = path.join(root, "trustplane");
    try {
      mkdirSync(parent, { recursive: true });
      // Controllers must be enabled down the tree before a child can use them.
      writeFileSync(path.join(root, "cgroup.subtree_control"), "+cpu +memory +pids");
      writeFileSync(path.join(parent, "cgroup.subtree_control"), "+cpu +memory +pids");
      const dir = path.join(parent, vmId);
      mkdirSync(dir, { recursive: true });
      const ok = tryWrite(path.join(dir, "cpu.max"), `${vcpus * PERIOD_US} ${PERIOD_US}`) && tryWrite(path.join(dir, "memory.max"), memBytes) && tryWrite(path.join(dir, "pids.max"), String(limits.pids));
      // Where swap is accounted, the memory cap may not be escaped into swap.
      if (ok && existsSync(path.join(dir, "memory.swap.max"))) tryWrite(path.join(dir, "memory.swap.max"), "0");
      if (ok) return { version: 2, dirs: [dir] };
      removeSandboxCgroup({ version: 2, dirs: [dir] });
    } catch {
      // Not writable (unprivileged agent, delegated subtree missing): fall through.
    }
    return undefined;
  }
  const settings: [string, string, string][] = [
    ["cpu", "cpu.cfs_period_us", String(PERIOD_US)],
    ["cpu", "cpu.cfs_quota_us", String(vcpus * PERIOD_US)],
    ["memory", "memory.limit_in_bytes", memBytes],
    ["pids", "pids.max", String(limits.pids)],
  ];
  const dirs: string[] = [];
  try {
    for (const [controller, file, value] of settings) {
      const dir = path.join(root, controller, "trustplane", vmId);
      if (!dirs.includes(dir)) {
        mkdirSync(dir, { recursive: true });
        dirs.push(dir);
      }
      writeFileSync(path.join(dir, file), value);
    }
    // Where swap is accounted, the same cap covers memory + swap.
    const memDir = path.join(root, "memory", "trustplane", vmId);
    if (existsSync(path.join(memDir, "memory.memsw.limit_in_bytes"))) tryWrite(path.join(memDir, "memory.memsw.limit_in_bytes"), memBytes);
    return { version: 1, dirs };
  } catch {
    removeSandboxCgroup({ version: 1, dirs });
    return undefined;
  }
}

/**
 * A shell prefix that moves itself into the cgroup and then execs the VM, so every process the
 * VM ever forks is born inside it (placing the pid after spawn would race with bwrap's forks).
 */
export function joinCommand(cg: SandboxCgroup, command: string[]): string[] {
  const joins = cg.dirs.map((d) => `echo $$ > '${path.join(d, "cgroup.procs")}'`).join(" && ");
  return ["/bin/sh", "-c", `${joins} && exec "$@"`, "sh", ...command];
}

/** Pids still in the VM's cgroup (anything that outlived the VM's init). */
export function cgroupPids(cg: SandboxCgroup): number[] {
  const pids = new Set<number>();
  for (const d of cg.dirs) {
    try {
      for (const l of readFileSync(path.join(d, "cgroup.procs"), "utf8").split("\n")) if (l.trim()) pids.add(Number(l));
    } catch {}
  }
  return [...pids];
}

/** Removes the VM's cgroup directories (they must be empty of processes by then). */
export function removeSandboxCgroup(cg: SandboxCgroup): void {
  for (const d of cg.dirs) {
    try {
      rmdirSync(d);
    } catch {}
  }
}

/** Whether sandbox VMs on this host get a cgroup (a probe group is made and removed). */
export function sandboxCgroupsAvailable(root = ROOT): boolean {
  const cg = createSandboxCgroup(`probe-${process.pid}`, { vcpus: 1, memoryMib: 64, pids: 16 }, root);
  if (cg) removeSandboxCgroup(cg);
  return !!cg;
}
