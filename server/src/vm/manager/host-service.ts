// HostService on the server: agents register their host's capacity and capability matrix and
// heartbeat (load, instances, measured latency). A host may only speak for itself; a host that
// misses heartbeats is marked down by the heartbeat monitor and excluded from scheduling. What a
// heartbeat reports about its instances, and the instance events it carries, reach the VM records
// (`reported`), as Nova's compute hosts push instance changes and sync power states periodically.
import { TrustplaneError, invalidArgument } from "../../../../sdk/src/errors.js";
import { VmState, type HostServiceService, type Instance, type VmEvent } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { CallContext, Handlers } from "../../runtime/auth/service-binder.js";
import type { Storage } from "../../runtime/storage/storage.js";
import type { HostInventory } from "./host-inventory.js";
import { capacityOf, heartbeatFromRequest, registrationFromCapacity } from "./host-inventory-messages.js";
import type { VmRepository } from "./vm-repository.js";

export interface HostServiceDeps {
  storage: Storage;
  inventory: HostInventory;
  repo: VmRepository;
  heartbeatIntervalSeconds: number;
  now?: () => number;
  /**
   * The host (re)registered — an agent start, or a reconnect after the server forgot it: what
   * its VMs held in memory is re-delivered (runs after the answer is sent, once per registration).
   */
  registered?(hostId: string, requestId: string): Promise<void>;
  /** A heartbeat's instance list and events, for the VM records to follow (runs after the answer is sent). */
  reported?(hostId: string, instances: Instance[], events: VmEvent[]): Promise<void>;
}

/** Hosts speak for themselves only; admins (and the server itself) for any host. */
function assertSelf(ctx: CallContext, hostId: string): void {
  if (ctx.caller.roles.includes("admin")) return;
  if (ctx.caller.principal !== `host:${hostId}`) {
    throw new TrustplaneError("PERMISSION_DENIED", "HOST_MISMATCH", `${ctx.caller.principal} may not report for host ${hostId}`, "host_id");
  }
}

export function createHostServiceHandlers(deps: HostServiceDeps): Partial<Handlers<typeof HostServiceService>> {
  const now = deps.now ?? Date.now;
  return {
    async registerHost(req, ctx) {
      const cap = req.capacity;
      if (!cap?.hostId) throw invalidArgument("capacity.host_id", "required");
      assertSelf(ctx, cap.hostId);
      if (!(await deps.storage.hosts.get(cap.hostId))) {
        throw new TrustplaneError("FAILED_PRECONDITION", "HOST_NOT_JOINED", `host ${cap.hostId} has not joined; join it with a join token first`, "capacity.host_id");
      }
      const state = await deps.inventory.register(registrationFromCapacity(cap), now());
      await deps.storage.audit.append({ principal: ctx.caller.principal, action: "host.register", target: cap.hostId, outcome: "ok", requestId: ctx.requestId, detail: { drivers: cap.drivers.length } });
      // Not awaited: the re-delivery calls the host back, which is waiting for this answer.
      void deps.registered?.(cap.hostId, ctx.requestId);
      return { capacity: capacityOf(state), heartbeatIntervalSeconds: deps.heartbeatIntervalSeconds };
    },

    async heartbeat(req, ctx) {
      assertSelf(ctx, req.hostId);
      if (!(await deps.inventory.heartbeat(req.hostId, heartbeatFromRequest(req), now()))) {
        throw new TrustplaneError("FAILED_PRECONDITION", "HOST_NOT_REGISTERED", `host ${req.hostId} has not registered its capacity; call RegisterHost first`, "host_id");
      }
      await deps.storage.hosts.touch(req.hostId, now());
      // VMs the host runs that the server has terminated or never knew: the agent ends them.
      const orphanedVmIds: string[] = [];
      for (const inst of req.instances) {
        const vm = await deps.repo.get(inst.vmId);
        if (!vm || vm.hostId !== req.hostId || vm.state === VmState.VM_STATE_TERMINATED) orphanedVmIds.push(inst.vmId);
      }
      // Not awaited: the comparison asks the host back (GetInstance), which must not hold up its
      // beat — except the host's last one, whose report must be followed while it still answers.
      const following = deps.reported?.(
        req.hostId,
        req.instances.filter((i) => !orphanedVmIds.includes(i.vmId)),
        req.events.filter((e) => !orphanedVmIds.includes(e.vmId)),
      );
      if (req.final) await following;
      return { serverTimeMs: now(), orphanedVmIds };
    },

    async listHostCapacity(req) {
      const hosts = [...(await deps.inventory.list())].sort((a, b) => (a.hostId < b.hostId ? -1 : 1));
      const size = Math.min(req.pageSize || 100, 1000);
      const start = req.pageToken ? hosts.findIndex((h) => h.hostId > req.pageToken) : 0;
      const page = start < 0 ? [] : hosts.slice(start, start + size);
      return { hosts: page.map(capacityOf), nextPageToken: start >= 0 && start + size < hosts.length ? page[page.length - 1]!.hostId : "" };
    },
  };
}
