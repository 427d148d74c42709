// The privileged operations an agent can execute (seed 002), each on real things: the host's
// /proc, the VM control plane and its drivers (QMP for QEMU guests), the agent's own runtime
// configuration. Which class each needs and which ones stream lives in the SDK's operations.ts.
import { readFileSync } from "node:fs";
import os from "node:os";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { VmState } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { PrivilegedRequest } from "../../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import type { OperationName } from "../../../../sdk/src/privileged/operations.js";
import type { ControlPlane } from "../../vm/agent/control-plane.js";
import { dumpGuestMemory, readGuestMemory } from "./guest-memory.js";
import { queryHypervisor } from "./hypervisor-status.js";
import type { OperationOutput } from "./operation-output.js";
import type { RuntimeConfigStore } from "./runtime-config-store.js";

export type { OperationName };

/** Who asked, and the per-key limits the certificate sets. */
export interface OperationContext {
  /** The certified principal that signed the request (the control plane's initiator). */
  principal: string;
  maxMemoryRead?: number;
}

export interface OperationRegistry {
  run(name: OperationName, req: PrivilegedRequest, ctx: OperationContext): Promise<OperationOutput>;
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

export interface OperationRegistryDeps {
  controlPlane?: ControlPlane;
  config: RuntimeConfigStore;
  /** The agent's own per-read memory limit (runtime config), read at each operation. */
  agentMaxMemoryRead?: () => number | undefined;
}

export function createOperationRegistry(deps: OperationRegistryDeps): OperationRegistry {
  const cp = () => {
    if (!deps.controlPlane) throw new TrustplaneError("FAILED_PRECONDITION", "NO_CONTROL_PLANE", "this agent runs no VM control plane");
    return deps.controlPlane;
  };
  const stateName = (s: VmState) => VmState[s]?.replace("VM_STATE_", "") ?? String(s);
  return {
    async run(name, req, ctx) {
      const initiator = `privileged:${ctx.principal}`;
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
        case "query_hypervisor":
          return { hypervisorStatus: await queryHypervisor(cp(), req.queryHypervisor!.vmId) };
        case "stop_guest": {
          const a = req.stopGuest!;
          const inst = await cp().stop(a.vmId, (a.timeoutSeconds || 30) * 1000, a.force, initiator);
          return { guestState: { vmId: inst.vmId, state: stateName(inst.state) } };
        }
        case "start_guest": {
          const inst = await cp().start(req.startGuest!.vmId, initiator);
          return { guestState: { vmId: inst.vmId, state: stateName(inst.state) } };
        }
        case "terminate_guest": {
          const inst = await cp().terminate(req.terminateGuest!.vmId, initiator);
          return { guestState: { vmId: inst.vmId, state: stateName(inst.state) } };
        }
        case "apply_config_patch": {
          const p = req.applyConfigPatch!;
          return { configPatch: p.revertOf ? await deps.config.revert(p.revertOf, req.requestId) : await deps.config.apply(p.key, p.value, req.requestId) };
        }
        case "read_guest_memory":
          return readGuestMemory(cp(), req.readGuestMemory!, { certificate: ctx.maxMemoryRead, agent: deps.agentMaxMemoryRead?.() });
        case "dump_guest_memory":
          return dumpGuestMemory(cp(), req.dumpGuestMemory!, { certificate: ctx.maxMemoryRead, agent: deps.agentMaxMemoryRead?.() });
      }
    },
  };
}
