// The `sandbox` driver: a process VM under bubblewrap — its own pid, net, mount, ipc and uts
// namespaces (--unshare-all), a read-only system, its own writable root, a hostname, rlimits
// through prlimit (address space, open files, file size, core dumps) and, where a cgroup
// hierarchy is writable, a cgroup of its own pacing it to its vCPUs with memory and pid caps
// (sandbox-cgroup.ts). Stop is SIGTERM to the guest's processes, then SIGKILL after the
// timeout. No block devices, so no hotplug ops.
//
// Metadata endpoint: when the control plane gives one, the VM runs in its own network
// namespace (`ip netns add tp-<vm>`, only `lo`, carrying 169.254.169.254/32); a socat in that
// namespace listens on 169.254.169.254:80 and relays to a unix socket in the VM's state
// directory, where a second socat on the host relays to the VM's own authorization process.
// Unix sockets cross network namespaces by path, and that path is in a 0700 directory no
// other sandbox has mounted, so no other VM can reach this VM's endpoint.
//
// Host channel: for images another agent area supports (GuestSupport), the directory holding
// that area's unix socket is bound read-only at /run/trustplane, the image's files read-only
// at their own paths, memory is capped by the VM's own memory cgroup where asked, and with
// noDiskWrites the root is read-only and the console goes to /dev/null.
import { execFile, spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { TrustplaneError } from "../../../../../../sdk/src/errors.js";
import { Feature, HypervisorType, type InstanceSpec } from "../../../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { ConsoleWatcher } from "../../console-watcher.js";
import { GUEST_CHANNEL_DIR, type Driver, type DriverEvents, type DriverInstance, type GuestSupport, type StartContext, type StopResult } from "../../driver.js";
import { processAlive, waitForExit } from "../../process-liveness.js";
import { cgroupPids, createSandboxCgroup, joinCommand, removeSandboxCgroup, type SandboxCgroup } from "./sandbox-cgroup.js";

const run = promisify(execFile);
export const SANDBOX_READY_LINE = "TRUSTPLANE-SANDBOX-READY";
export const SANDBOX_STOPPING_LINE = "TRUSTPLANE-SANDBOX-STOPPING";
// `sleep & wait` so the TERM trap runs at once rather than after the current sleep.
const DEFAULT_INIT = ["/bin/sh", "-c", `echo ${SANDBOX_READY_LINE}; trap 'echo ${SANDBOX_STOPPING_LINE}; exit 0' TERM; while :; do sleep 1 & wait $!; done`];

/** System directories bound read-only into every sandbox (those that exist here). */
const SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc/alternatives", "/etc/ssl"];

export function bwrapAvailable(): boolean {
  return existsSync("/usr/bin/bwrap") || existsSync("/bin/bwrap");
}

/** Memory the VM may use, from its spec. */
export function sandboxMemoryBytes(spec: InstanceSpec): number {
  return Math.max(16, spec.resources?.memoryMib ?? 256) * 1024 * 1024;
}

/** prlimit + bwrap arguments; `shareNet` keeps the (per-VM) network namespace it is started in. */
export function sandboxArgs(spec: InstanceSpec, root: string, shareNet = false, guest: GuestSupport = {}, inCgroup = false): string[] {
  const memBytes = sandboxMemoryBytes(spec);
  const binds = SYSTEM_DIRS.filter((d) => existsSync(d)).flatMap((d) => ["--ro-bind", d, d]);
  const guestBinds = [...(guest.readOnlyPaths ?? []).flatMap((p) => ["--ro-bind", p, p]), ...(guest.channelDir ? ["--ro-bind", guest.channelDir, GUEST_CHANNEL_DIR] : [])];
  const command = spec.command.length ? spec.command : (guest.command ?? DEFAULT_INIT);
  return [
    // A memory cgroup caps resident memory instead (the guest's own address space stays free).
    ...(guest.memoryCgroup && inCgroup ? [] : [`--as=${memBytes}`]),
    "--nofile=1024",
    `--fsize=${1024 * 1024 * 1024}`,
    "--core=0",
    "--",
    "bwrap",
    "--unshare-all",
    ...(shareNet ? ["--share-net"] : []),
    "--die-with-parent",
    "--new-session",
    ...binds,
    "--proc", "/proc",
    "--dev", "/dev",
    "--tmpfs", "/tmp",
    ...guestBinds,
    guest.noDiskWrites ? "--ro-bind" : "--bind", root, "/vm",
    "--chdir", "/vm",
    "--hostname", spec.name || spec.vmId,
    "--setenv", "TRUSTPLANE_VM_ID", spec.vmId,
    "--setenv", "HOME", "/vm",
    ...(shareNet ? ["--setenv", "GCE_METADATA_HOST", "169.254.169.254"] : []),
    "--",
    ...command,
  ];
}

/** Every process below `pid` (children first-level onwards), from /proc. */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const stat = readFileSync(`/proc/${p}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(p));
      children.set(ppid, list);
    } catch {}
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}

const netnsName = (vmId: string) => `tp-${vmId}`;

interface SandboxExtra {
  netns?: string;
  relays?: { pid: number; marker: string }[];
  /** Absent where no cgroup hierarchy was writable: then only the rlimits apply. */
  cgroup?: SandboxCgroup;
}

/** Processes and threads one process VM may have at once. */
const PIDS_MAX = 512;

export class SandboxDriver implements Driver {
  readonly name = "sandbox";
  readonly hypervisor = HypervisorType.HYPERVISOR_TYPE_SANDBOX;
  readonly features = [Feature.FEATURE_FAST_START] as const;
  readonly cost = 1;
  readonly hostChannel = true;

  constructor(private readonly readyTimeoutMs = 10_000) {}

  accelerator(): string {
    return "none";
  }

  /** The per-VM network namespace the metadata relay lives in needs root (and iproute2, socat). */
  routesMetadata(): boolean {
    return process.getuid?.() === 0 && existsSync("/usr/bin/socat") && (existsSync("/usr/sbin/ip") || existsSync("/sbin/ip") || existsSync("/usr/bin/ip"));
  }

  /** The VM's own network namespace with 169.254.169.254:80 relayed to its endpoint. */
  private async metadataNamespace(spec: InstanceSpec, dir: string, endpoint: { host: string; port: number }): Promise<SandboxExtra> {
    if (!existsSync("/usr/bin/socat")) throw new TrustplaneError("FAILED_PRECONDITION", "DRIVER_UNAVAILABLE", "the sandbox driver relays the metadata endpoint with socat (apt-get install socat)");
    const ns = netnsName(spec.vmId);
    const sock = path.join(dir, "metadata.sock");
    rmSync(sock, { force: true });
    await run("ip", ["netns", "del", ns]).catch(() => undefined);
    try {
      await run("ip", ["netns", "add", ns]);
      await run("ip", ["-n", ns, "link", "set", "lo", "up"]);
      await run("ip", ["-n", ns, "addr", "add", "169.254.169.254/32", "dev", "lo"]);
    } catch (e) {
      await run("ip", ["netns", "del", ns]).catch(() => undefined);
      throw new TrustplaneError("FAILED_PRECONDITION", "DRIVER_UNAVAILABLE", `cannot create network namespace ${ns} (the agent needs root and iproute2): ${(e as Error).message}`);
    }
    const marker = `tp-meta-${spec.vmId}`;
    const spawnRelay = (args: string[]) => {
      const c = spawn(args[0]!, args.slice(1), { stdio: "ignore", detached: true, argv0: args[0] });
      c.unref();
      return { pid: c.pid!, marker };
    };
    // Host side: the unix socket -> the VM's endpoint on loopback. The marker rides in the
    // socket path, so pid reuse cannot make us kill a stranger.
    const host = spawnRelay(["socat", `UNIX-LISTEN:${sock},fork,mode=600`, `TCP:${endpoint.host}:${endpoint.port}`]);
    for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 5));
    const inner = spawnRelay(["ip", "netns", "exec", ns, "socat", "TCP-LISTEN:80,bind=169.254.169.254,fork,reuseaddr", `UNIX-CONNECT:${sock}`]);
    return { netns: ns, relays: [{ ...host, marker: sock }, { ...inner, marker: sock }] };
  }

  async start(spec: InstanceSpec, dir: string, events: DriverEvents, ctx: StartContext = {}): Promise<DriverInstance> {
    if (!bwrapAvailable()) throw new TrustplaneError("FAILED_PRECONDITION", "DRIVER_UNAVAILABLE", "the sandbox driver needs bubblewrap (apt-get install bubblewrap)");
    const root = path.join(dir, "root");
    await mkdir(root, { recursive: true, mode: 0o700 });
    const extra: SandboxExtra = ctx.metadataEndpoint && spec.network?.mode !== "none" ? await this.metadataNamespace(spec, dir, ctx.metadataEndpoint) : {};
    const consolePath = path.join(dir, "console.log");
    rmSync(consolePath, { force: true });
    // The console is a file, not a pipe: the guest keeps running if the agent restarts.
    // One cgroup per boot: a late cleanup of the previous boot cannot remove this one.
    const cgroup = createSandboxCgroup(`${spec.vmId}.${Date.now().toString(36)}`, { vcpus: spec.resources?.vcpus ?? 1, memoryMib: spec.resources?.memoryMib ?? 256, pids: PIDS_MAX });
    // Without a writable hierarchy only the rlimits apply (the agent says so once at start) —
    // except for a guest whose memory only a cgroup can cap (WebAssembly reserves address space).
    if (cgroup) extra.cgroup = cgroup;
    else if (ctx.guest?.memoryCgroup) {
      await this.stop({ vmId: spec.vmId, pid: 0, cmdlineMarker: spec.vmId, dir, accelerator: "none", extra: { ...extra } }, 0, true).catch(() => undefined);
      throw new TrustplaneError("FAILED_PRECONDITION", "DRIVER_UNAVAILABLE", `image ${spec.image} needs its memory capped by a cgroup, and no cgroup hierarchy is writable here; run the agent as root on a host with the cgroup memory controller`);
    }
    const out = openSync(ctx.guest?.noDiskWrites ? "/dev/null" : consolePath, "a", 0o600);
    const limited = ["prlimit", ...sandboxArgs(spec, root, !!extra.netns, ctx.guest, !!cgroup)];
    const inNetns = extra.netns ? ["ip", "netns", "exec", extra.netns, ...limited] : limited;
    // Joined before `ip netns exec`, which mounts a sysfs of its own without the cgroup tree.
    const full = cgroup ? joinCommand(cgroup, inNetns) : inNetns;
    const child = spawn(full[0]!, full.slice(1), { stdio: ["ignore", out, out], detached: true });
    closeSync(out);
    const instance: DriverInstance = { vmId: spec.vmId, pid: child.pid ?? 0, cmdlineMarker: spec.vmId, dir, accelerator: "none", extra: { ...extra } };
    let exited = false;
    child.once("exit", () => (exited = true));
    const spawnFailed = new Promise<never>((_, reject) => child.once("error", (e) => reject(new TrustplaneError("FAILED_PRECONDITION", "DRIVER_UNAVAILABLE", `cannot start the sandbox: ${e.message}`))));
    spawnFailed.catch(() => undefined);
    try {
      if (spec.command.length === 0 && !ctx.guest?.command) {
        await Promise.race([new ConsoleWatcher(consolePath).waitFor(new RegExp(SANDBOX_READY_LINE), this.readyTimeoutMs, { intervalMs: 5, alive: () => !exited, what: `sandbox ${spec.vmId}` }), spawnFailed]);
      } else {
        // A custom command has no ready line: running for 100 ms without failing counts.
        await Promise.race([new Promise((r) => setTimeout(r, 100)), spawnFailed]);
        if (exited) throw new TrustplaneError("INTERNAL", "GUEST_EXITED", `sandbox ${spec.vmId} exited during boot: ${readFileSync(consolePath, "utf8").slice(-300)}`);
      }
    } catch (e) {
      await this.stop(instance, 0, true).catch(() => undefined);
      throw e;
    }
    child.once("exit", (code, signal) => events.exited(spec.vmId, `process exited (${signal ?? `code ${code}`})`));
    child.unref();
    return instance;
  }

  async stop(instance: DriverInstance, timeoutMs: number, force: boolean): Promise<StopResult> {
    let forced = force;
    if (processAlive(instance.pid, instance.cmdlineMarker)) {
      if (!force) {
        // SIGTERM to the guest's own processes (bwrap's pid-1 ignores it; it exits with them).
        for (const p of descendants(instance.pid)) {
          try {
            process.kill(p, "SIGTERM");
          } catch {}
        }
        await waitForExit(instance.pid, timeoutMs);
      }
      if (processAlive(instance.pid, instance.cmdlineMarker)) {
        forced = true;
        for (const p of [instance.pid, ...descendants(instance.pid)]) {
          try {
            process.kill(p, "SIGKILL");
          } catch {}
        }
        if (!(await waitForExit(instance.pid, 5000))) {
          throw new TrustplaneError("INTERNAL", "STOP_FAILED", `sandbox ${instance.vmId} (pid ${instance.pid}) survived SIGKILL`);
        }
      }
    }
    // The metadata relays and the namespace go with the VM.
    const extra = (instance.extra ?? {}) as SandboxExtra;
    for (const r of extra.relays ?? []) {
      if (processAlive(r.pid, r.marker)) {
        for (const p of [...descendants(r.pid), r.pid]) {
          try {
            process.kill(p, "SIGKILL");
          } catch {}
        }
        await waitForExit(r.pid, 2000);
      }
    }
    if (extra.netns) await run("ip", ["netns", "del", extra.netns]).catch(() => undefined);
    rmSync(path.join(instance.dir, "metadata.sock"), { force: true });
    if (extra.cgroup) {
      // Whatever escaped the process tree (a daemonised child) is still in the cgroup.
      for (const p of cgroupPids(extra.cgroup)) {
        try {
          process.kill(p, "SIGKILL");
        } catch {}
      }
      for (let i = 0; i < 100 && cgroupPids(extra.cgroup).length; i++) await new Promise((r) => setTimeout(r, 10));
      removeSandboxCgroup(extra.cgroup);
    }
    return { forced };
  }
}
