// The `sandbox` driver: a process VM under bubblewrap — its own pid, net, mount, ipc and uts
// namespaces (--unshare-all), a read-only system, its own writable root, a hostname, and
// rlimits through prlimit (address space, open files, file size). Stop is SIGTERM to the
// whole session, then SIGKILL after the timeout. No block devices, so no hotplug ops.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { TrustplaneError } from "../../../../../../sdk/src/errors.js";
import { Feature, HypervisorType, type InstanceSpec } from "../../../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { Driver, DriverEvents, DriverInstance } from "../../driver.js";
import { processAlive, waitForExit } from "../../process-liveness.js";

export const SANDBOX_READY_LINE = "TRUSTPLANE-SANDBOX-READY";
const DEFAULT_INIT = ["/bin/sh", "-c", `echo ${SANDBOX_READY_LINE}; trap 'exit 0' TERM; while :; do sleep 1; done`];

/** System directories bound read-only into every sandbox (those that exist here). */
const SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc/alternatives", "/etc/ssl"];

export function bwrapAvailable(): boolean {
  return existsSync("/usr/bin/bwrap") || existsSync("/bin/bwrap");
}

export function sandboxArgs(spec: InstanceSpec, root: string): string[] {
  const memBytes = Math.max(16, spec.resources?.memoryMib ?? 256) * 1024 * 1024;
  const binds = SYSTEM_DIRS.filter((d) => existsSync(d)).flatMap((d) => ["--ro-bind", d, d]);
  const command = spec.command.length ? spec.command : DEFAULT_INIT;
  return [
    `--as=${memBytes}`,
    "--nofile=1024",
    `--fsize=${1024 * 1024 * 1024}`,
    "--",
    "bwrap",
    "--unshare-all",
    "--die-with-parent",
    "--new-session",
    ...binds,
    "--proc", "/proc",
    "--dev", "/dev",
    "--tmpfs", "/tmp",
    "--bind", root, "/vm",
    "--chdir", "/vm",
    "--hostname", spec.name || spec.vmId,
    "--setenv", "TRUSTPLANE_VM_ID", spec.vmId,
    "--setenv", "HOME", "/vm",
    "--",
    ...command,
  ];
}

export class SandboxDriver implements Driver {
  readonly name = "sandbox";
  readonly hypervisor = HypervisorType.HYPERVISOR_TYPE_SANDBOX;
  readonly features = [Feature.FEATURE_FAST_START] as const;
  readonly cost = 1;

  constructor(private readonly readyTimeoutMs = 10_000) {}

  accelerator(): string {
    return "none";
  }

  async start(spec: InstanceSpec, dir: string, events: DriverEvents): Promise<DriverInstance> {
    if (!bwrapAvailable()) throw new TrustplaneError("FAILED_PRECONDITION", "DRIVER_UNAVAILABLE", "the sandbox driver needs bubblewrap (apt-get install bubblewrap)");
    const root = path.join(dir, "root");
    await mkdir(root, { recursive: true, mode: 0o700 });
    const child = spawn("prlimit", sandboxArgs(spec, root), { stdio: ["ignore", "pipe", "pipe"], detached: true });
    const waitsForLine = spec.command.length === 0;
    await new Promise<void>((resolve, reject) => {
      let out = "";
      let err = "";
      const timer = setTimeout(() => {
        try {
          process.kill(-child.pid!, "SIGKILL");
        } catch {}
        reject(new TrustplaneError("DEADLINE_EXCEEDED", "BOOT_TIMEOUT", `sandbox ${spec.vmId} printed no ready line within ${this.readyTimeoutMs} ms: ${err.slice(-300)}`));
      }, this.readyTimeoutMs);
      child.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        if (out.includes(SANDBOX_READY_LINE)) {
          clearTimeout(timer);
          resolve();
        }
        if (out.length > 65536) out = out.slice(-4096);
      });
      child.stderr!.on("data", (d: Buffer) => (err = (err + d.toString()).slice(-4096)));
      child.once("error", (e) => {
        clearTimeout(timer);
        reject(new TrustplaneError("FAILED_PRECONDITION", "DRIVER_UNAVAILABLE", `cannot start the sandbox: ${e.message}`));
      });
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(new TrustplaneError("INTERNAL", "GUEST_EXITED", `sandbox ${spec.vmId} exited during boot (${signal ?? code}): ${err.slice(-300)}`));
      });
      if (!waitsForLine) {
        // A custom command has no ready line: running for 100 ms without failing counts.
        setTimeout(() => {
          if (child.exitCode === null && child.signalCode === null) {
            clearTimeout(timer);
            resolve();
          }
        }, 100);
      }
    });
    child.removeAllListeners("exit");
    child.once("exit", (code, signal) => events.exited(spec.vmId, `process exited (${signal ?? `code ${code}`})`));
    child.stdout!.resume();
    child.unref();
    return { vmId: spec.vmId, pid: child.pid!, cmdlineMarker: spec.vmId, dir, accelerator: "none" };
  }

  async stop(instance: DriverInstance, timeoutMs: number, force: boolean): Promise<void> {
    if (!processAlive(instance.pid, instance.cmdlineMarker)) return;
    const group = -instance.pid;
    if (!force) {
      try {
        process.kill(group, "SIGTERM");
      } catch {}
      if (await waitForExit(instance.pid, timeoutMs)) return;
    }
    try {
      process.kill(group, "SIGKILL");
    } catch {}
    if (!(await waitForExit(instance.pid, 5000))) {
      throw new TrustplaneError("INTERNAL", "STOP_FAILED", `sandbox ${instance.vmId} (pid ${instance.pid}) survived SIGKILL`);
    }
  }
}
