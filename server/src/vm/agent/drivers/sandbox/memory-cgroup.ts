// A memory cgroup per sandbox VM (seed 004's sandbox driver, used for guests whose memory an
// address-space rlimit cannot cap: V8 reserves ~10 GiB of address space per WebAssembly
// memory). Resident memory above the limit is reclaimed or OOM-killed inside the cgroup only,
// and where the pids controller exists the guest's task count is capped too (no fork bomb
// reaches the host). cgroup v1 (`memory` and `pids` hierarchies) and v2 (the unified tree).
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile, rmdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { TrustplaneError } from "../../../../../../sdk/src/errors.js";

const V1_ROOT = "/sys/fs/cgroup/memory";
const V1_PIDS_ROOT = "/sys/fs/cgroup/pids";
/** Tasks (processes and threads) a guest may have: Node and its worker use a few dozen. */
export const GUEST_PIDS_MAX = 256;
const V2_ROOT = "/sys/fs/cgroup";
/** The parent under which each VM's cgroup lives. */
const PARENT = "trustplane-vms";

export interface MemoryCgroup {
  version: 1 | 2;
  dir: string;
  /** cgroup v1: the VM's group in the pids hierarchy, when there is one. */
  pidsDir?: string;
}

function hierarchy(): { version: 1 | 2; root: string } | undefined {
  if (existsSync(path.join(V1_ROOT, "memory.limit_in_bytes")) || existsSync(path.join(V1_ROOT, "cgroup.procs"))) return { version: 1, root: V1_ROOT };
  try {
    if (readFileSync(path.join(V2_ROOT, "cgroup.controllers"), "utf8").split(/\s+/).includes("memory")) return { version: 2, root: V2_ROOT };
  } catch {
    // no unified hierarchy at the usual place
  }
  return undefined;
}

/** Creates the VM's cgroup with `limitBytes` of memory (and no swap). */
export async function createMemoryCgroup(vmId: string, limitBytes: number): Promise<MemoryCgroup> {
  const h = hierarchy();
  const unavailable = (why: string) =>
    new TrustplaneError("FAILED_PRECONDITION", "DRIVER_UNAVAILABLE", `this guest's memory is capped with a memory cgroup, but ${why}; run the agent as root on a host with the cgroup memory controller`);
  if (!h) throw unavailable("no memory cgroup hierarchy is mounted");
  const parent = path.join(h.root, PARENT);
  const dir = path.join(parent, vmId);
  try {
    await mkdir(parent, { recursive: true });
    if (h.version === 2) await writeFile(path.join(h.root, "cgroup.subtree_control"), "+memory").catch(() => undefined);
    if (h.version === 2) await writeFile(path.join(parent, "cgroup.subtree_control"), "+memory");
    await mkdir(dir, { recursive: true });
    if (h.version === 1) {
      await writeFile(path.join(dir, "memory.limit_in_bytes"), String(limitBytes));
      // Where swap accounting exists, the same limit covers memory + swap (no escape to swap).
      if (existsSync(path.join(dir, "memory.memsw.limit_in_bytes"))) await writeFile(path.join(dir, "memory.memsw.limit_in_bytes"), String(limitBytes));
    } else {
      await writeFile(path.join(dir, "memory.max"), String(limitBytes));
      if (existsSync(path.join(dir, "memory.swap.max"))) await writeFile(path.join(dir, "memory.swap.max"), "0");
      if (existsSync(path.join(dir, "pids.max"))) await writeFile(path.join(dir, "pids.max"), String(GUEST_PIDS_MAX));
    }
  } catch (e) {
    await rmdir(dir).catch(() => undefined);
    throw unavailable(`${dir} could not be set up (${(e as Error).message})`);
  }
  const cg: MemoryCgroup = { version: h.version, dir };
  if (h.version === 1 && existsSync(path.join(V1_PIDS_ROOT, "cgroup.procs"))) {
    const pidsDir = path.join(V1_PIDS_ROOT, PARENT, vmId);
    try {
      await mkdir(pidsDir, { recursive: true });
      await writeFile(path.join(pidsDir, "pids.max"), String(GUEST_PIDS_MAX));
      cg.pidsDir = pidsDir;
    } catch {
      // No writable pids hierarchy: memory stays capped; the wall clock bounds the rest.
      await rmdir(pidsDir).catch(() => undefined);
    }
  }
  return cg;
}

/** argv that joins the cgroup before exec'ing `argv`, so nothing it forks escapes the limit. */
export function inMemoryCgroup(cg: MemoryCgroup, argv: string[]): string[] {
  if (cg.pidsDir) return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && echo $$ > "$1/cgroup.procs" && shift && exec "$@"', cg.dir, cg.pidsDir, ...argv];
  return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cg.dir, ...argv];
}

/** Peak usage the cgroup saw, in bytes (0 when unknown). */
export async function memoryCgroupPeak(cg: MemoryCgroup): Promise<number> {
  const file = cg.version === 1 ? "memory.max_usage_in_bytes" : "memory.peak";
  return Number((await readFile(path.join(cg.dir, file), "utf8").catch(() => "0")).trim()) || 0;
}

/** Removes the cgroup(s) once its processes are gone (they may take a moment to leave). */
export async function removeMemoryCgroup(cg: MemoryCgroup): Promise<void> {
  for (const dir of [cg.dir, ...(cg.pidsDir ? [cg.pidsDir] : [])]) await removeGroup(dir);
}

async function removeGroup(dir: string): Promise<void> {
  for (let i = 0; i < 50; i++) {
    try {
      await rmdir(dir);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return;
      if (code !== "EBUSY") throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  throw new TrustplaneError("INTERNAL", "STOP_FAILED", `cgroup ${dir} still has processes`);
}
