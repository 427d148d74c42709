// The privileged operations an agent can execute, each with its operation class (what a CA
// certificate must allow: lifecycle, inspect, memory, patch) and its implementation on real
// things: the host's /proc, the VM control plane, the agent's own runtime configuration.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import path from "node:path";
import os from "node:os";
import { TrustplaneError, invalidArgument } from "../../../../sdk/src/errors.js";
import { HypervisorType, VmState } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { PrivilegedRequest, PrivilegedResult } from "../../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import type { ControlPlane } from "../../vm/agent/control-plane.js";
import { QemuDriver } from "../../vm/agent/drivers/qemu/qemu-driver.js";

/** Largest memory range returned in one unary result. */
const MAX_MEMORY_READ = 16 * 1024 * 1024;
import type { RuntimeConfigStore } from "./runtime-config-store.js";

export type OperationName =
  | "read_guest_memory"
  | "dump_guest_memory"
  | "query_hypervisor"
  | "collect_host_diagnostics"
  | "stop_guest"
  | "start_guest"
  | "terminate_guest"
  | "apply_config_patch";

export type OperationClass = "lifecycle" | "inspect" | "memory" | "patch";

const CLASSES: Record<OperationName, OperationClass> = {
  read_guest_memory: "memory",
  dump_guest_memory: "memory",
  query_hypervisor: "inspect",
  collect_host_diagnostics: "inspect",
  stop_guest: "lifecycle",
  start_guest: "lifecycle",
  terminate_guest: "lifecycle",
  apply_config_patch: "patch",
};

/** Which operation a request names, and the class a certificate must allow for it. */
export function operationOf(req: PrivilegedRequest): { name: OperationName; operationClass: OperationClass } | undefined {
  const name: OperationName | undefined = req.readGuestMemory
    ? "read_guest_memory"
    : req.dumpGuestMemory
      ? "dump_guest_memory"
      : req.queryHypervisor
        ? "query_hypervisor"
        : req.collectHostDiagnostics
          ? "collect_host_diagnostics"
          : req.stopGuest
            ? "stop_guest"
            : req.startGuest
              ? "start_guest"
              : req.terminateGuest
                ? "terminate_guest"
                : req.applyConfigPatch
                  ? "apply_config_patch"
                  : undefined;
  return name && { name, operationClass: CLASSES[name] };
}

export type OperationOutput = Partial<Omit<PrivilegedResult, "requestId" | "hostId" | "requestDigest" | "executedAtMs">>;

export interface OperationRegistry {
  run(name: OperationName, req: PrivilegedRequest): Promise<OperationOutput>;
}

function meminfo(): { total: number; available: number } {
  const text = readFileSync("/proc/meminfo", "utf8");
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0) * 1024;
  return { total: kb("MemTotal"), available: kb("MemAvailable") };
}

function processInfo(pid: number): { command: string; rssBytes: number; cpuSeconds: number } {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = 100;
    return {
      command: readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\u0000").filter(Boolean).slice(0, 6).join(" "),
      rssBytes: Number(fields[21]) * 4096,
      cpuSeconds: (Number(fields[11]) + Number(fields[12])) / ticks,
    };
  } catch {
    return { command: "", rssBytes: 0, cpuSeconds: 0 };
  }
}

export function createOperationRegistry(deps: { controlPlane?: ControlPlane; config: RuntimeConfigStore; principalOf: (req: PrivilegedRequest) => string }): OperationRegistry {
  const cp = () => {
    if (!deps.controlPlane) throw new TrustplaneError("FAILED_PRECONDITION", "NO_CONTROL_PLANE", "this agent runs no VM control plane");
    return deps.controlPlane;
  };
  const stateName = (s: VmState) => VmState[s]?.replace("VM_STATE_", "") ?? String(s);
  return {
    async run(name, req) {
      switch (name) {
        case "collect_host_diagnostics": {
          const mem = meminfo();
          const guests = deps.controlPlane ? deps.controlPlane.list().filter((i) => i.pid > 0) : [];
          return {
            hostDiagnostics: {
              loadAverage: os.loadavg(),
              memoryTotalBytes: mem.total,
              memoryAvailableBytes: mem.available,
              uptimeSeconds: Math.floor(os.uptime()),
              kernel: `${os.type()} ${os.release()}`,
              processes: guests.map((g) => ({ pid: g.pid, vmId: g.vmId, ...processInfo(g.pid) })),
            },
          };
        }
        case "query_hypervisor": {
          const inst = cp().get(req.queryHypervisor!.vmId);
          return {
            hypervisorStatus: {
              vmId: inst.vmId,
              status: stateName(inst.state).toLowerCase(),
              running: inst.state === VmState.VM_STATE_RUNNING,
              hypervisorVersion: HypervisorType[inst.hypervisor]?.replace("HYPERVISOR_TYPE_", "").toLowerCase() ?? "",
              accelerator: inst.accelerator,
              devices: [],
              blockDevices: inst.volumes.map((v) => v.volumeId),
            },
          };
        }
        case "stop_guest": {
          const a = req.stopGuest!;
          const inst = await cp().stop(a.vmId, (a.timeoutSeconds || 30) * 1000, a.force, `privileged:${deps.principalOf(req)}`);
          return { guestState: { vmId: inst.vmId, state: stateName(inst.state) } };
        }
        case "start_guest": {
          const inst = await cp().start(req.startGuest!.vmId, `privileged:${deps.principalOf(req)}`);
          return { guestState: { vmId: inst.vmId, state: stateName(inst.state) } };
        }
        case "terminate_guest": {
          const inst = await cp().terminate(req.terminateGuest!.vmId, `privileged:${deps.principalOf(req)}`);
          return { guestState: { vmId: inst.vmId, state: stateName(inst.state) } };
        }
        case "apply_config_patch": {
          const p = req.applyConfigPatch!;
          return { configPatch: p.revertOf ? await deps.config.revert(p.revertOf, req.requestId) : await deps.config.apply(p.key, p.value, req.requestId) };
        }
        case "read_guest_memory": {
          const a = req.readGuestMemory!;
          if (!a.vmId) throw invalidArgument("vm_id", "required");
          if (a.length <= 0 || a.length > MAX_MEMORY_READ) throw invalidArgument("length", `must be 1..${MAX_MEMORY_READ} bytes (use dump_guest_memory for more)`);
          const guest = cp().runningGuest(a.vmId);
          if (!(guest.driver instanceof QemuDriver)) {
            throw new TrustplaneError("UNIMPLEMENTED", "DRIVER_UNSUPPORTED", `guest memory of ${a.vmId} cannot be read: the ${guest.driver.name} driver offers no memory inspection (QEMU guests do, through QMP)`);
          }
          // QMP writes the bytes to a file the agent owns (0700 instance dir), read once and removed.
          const file = path.join(guest.dir, `memread-${randomBytes(6).toString("hex")}.bin`);
          try {
            await guest.driver.pmemsave(guest.handle, Number(a.address), Number(a.length), file);
            const data = await readFile(file);
            return { data, memoryDump: { vmId: a.vmId, format: "raw", guestMemoryBytes: data.length } };
          } finally {
            await rm(file, { force: true });
          }
        }
        case "dump_guest_memory": {
          const vmId = req.dumpGuestMemory!.vmId;
          if (!vmId) throw invalidArgument("vm_id", "required");
          const guest = cp().runningGuest(vmId);
          throw new TrustplaneError(
            "UNIMPLEMENTED",
            guest.driver instanceof QemuDriver ? "DUMP_NOT_STREAMED_YET" : "DRIVER_UNSUPPORTED",
            guest.driver instanceof QemuDriver
              ? `whole-memory dumps of ${vmId} need the streamed result path (SubmitStream with the envelope format), which is not wired yet; read ranges with read_guest_memory`
              : `guest memory of ${vmId} cannot be dumped: the ${guest.driver.name} driver offers no memory inspection`,
          );
        }
      }
    },
  };
}
