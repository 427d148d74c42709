// The VM area on the server: VmService over the VM records, the Nova-style scheduler over the
// host inventory (HostService: agents register and heartbeat; missed heartbeats mark a host
// down) and each host's control plane, reached with the server's certified service key, whose
// heartbeats (with the instance events they carry) the server follows, so its records reflect
// what really runs.
import { createClient } from "../../../../sdk/src/client/create-client.js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { HostControlServiceService, HostServiceService, VmServiceService, VmState, type Vm } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { TokenAgentServiceService, TokenServiceService } from "../../../../sdk/src/gen/trustplane/token/v1/token.js";
import type { ServerArea } from "../../processes/area.js";
import { VmAccountTokens } from "../../token/manager/vm-account-tokens.js";
import { HeartbeatMonitor } from "../scheduler/heartbeat-monitor.js";
import { SchedulerPlacement } from "../scheduler/scheduler-placement.js";
import { CachedHostInventory } from "./host-inventory-cache.js";
import { SqlHostInventory } from "./host-inventory-sql.js";
import { createHostServiceHandlers } from "./host-service.js";
import { VmEventHub } from "./vm-event-hub.js";
import { VmRepository } from "./vm-repository.js";
import { InstanceReconciler } from "./instance-reconciler.js";
import { VmRecordChanges } from "./vm-record-changes.js";
import { ServiceAccountRedelivery } from "./service-account-redelivery.js";
import { createVmHandlers, type HostControlClient, type UserProof } from "./vm-service.js";

export const vmServerArea: ServerArea = {
  name: "vm",
  async start(ctx) {
    const clients = new Map<string, { address: string; client: HostControlClient }>();
    const hostControl = async (hostId: string): Promise<HostControlClient> => {
      const host = await ctx.storage.hosts.get(hostId);
      if (!host) throw new TrustplaneError("FAILED_PRECONDITION", "HOST_UNKNOWN", `host ${hostId} has not joined`, "host_id");
      const cached = clients.get(hostId);
      if (cached && cached.address === host.address) return cached.client;
      cached?.client.close();
      const client = createClient(HostControlServiceService, host.address, { key: ctx.serviceKey, certificate: ctx.serviceCertificate, targetHost: hostId });
      clients.set(hostId, { address: host.address, client });
      return client;
    };
    const repo = new VmRepository(ctx.storage.db);
    await repo.backfill();
    // A 1 s cached view for scheduling reads; claims always go to SQL, so it cannot over-commit.
    const sqlInventory = new SqlHostInventory(ctx.storage.db);
    const inventory = new CachedHostInventory(sqlInventory, 1000);
    const placement = new SchedulerPlacement(inventory);
    const heartbeatIntervalSeconds = 10;
    const events = new VmEventHub(repo);
    const changes = new VmRecordChanges(repo, events);
    // The server follows its hosts: the unsolicited instance events and the instance lists that
    // heartbeats carry, and missed heartbeats, all reach the VM records through the reconciler.
    const reconciler = new InstanceReconciler({ repo, audit: ctx.storage.audit, changes, placement, hostControl, logger: ctx.logger });
    const monitor = new HeartbeatMonitor(inventory, ctx.logger, { intervalMs: heartbeatIntervalSeconds * 1000, onDown: (hostId) => reconciler.hostDown(hostId) });
    monitor.start();
    // Service accounts: the token authority issues long-term tokens only against the user's
    // own signed call (no trust in the VM manager), and the tokens go to that VM's
    // authorization process on its host, never into the guest (token area).
    const accountTokens = new VmAccountTokens({
      authority: () => createClient(TokenServiceService, ctx.address(), { key: ctx.serviceKey }),
      agent: async (hostId) => {
        const host = await ctx.storage.hosts.get(hostId);
        if (!host) throw new TrustplaneError("FAILED_PRECONDITION", "HOST_UNKNOWN", `host ${hostId} has not joined`, "host_id");
        return createClient(TokenAgentServiceService, host.address, { key: ctx.serviceKey, certificate: ctx.serviceCertificate, targetHost: hostId });
      },
      logger: ctx.logger,
    });
    const attachServiceAccounts = async (vm: Vm, proof: UserProof) => {
      await accountTokens.attach(vm, vm.serviceAccounts, proof, `create-${vm.vmId}`);
      // Terminated while the accounts were being attached: its release may have run first.
      const latest = await repo.get(vm.vmId);
      if (!latest || latest.state === VmState.VM_STATE_TERMINATING || latest.state === VmState.VM_STATE_TERMINATED) await accountTokens.release(vm, `late-${vm.vmId}`);
    };
    ctx.bind(
      VmServiceService,
      createVmHandlers({
        storage: ctx.storage,
        repo,
        placement,
        events,
        changes,
        hostControl,
        logger: ctx.logger,
        canActAs: (principal, email) => accountTokens.canActAs(principal, email),
        attachServiceAccounts,
        changeServiceAccounts: (vm, next, proof, requestId) => accountTokens.change(vm, vm.serviceAccounts, next, proof, requestId),
        releaseServiceAccounts: async (vm, requestId) => void (await accountTokens.release(vm, requestId)),
        hostUp: async (hostId) => (await sqlInventory.get(hostId))?.up ?? false,
      }),
    );
    // A host that registers again (its agent restarted) gets its VMs' accounts back: agents
    // keep long-term secrets in memory only, never on disk.
    const redelivery = new ServiceAccountRedelivery({ repo, audit: ctx.storage.audit, redeliverHost: (hostId, vmIds, requestId) => accountTokens.redeliverHost(hostId, vmIds, requestId), logger: ctx.logger });
    ctx.bind(
      HostServiceService,
      createHostServiceHandlers({
        storage: ctx.storage,
        inventory,
        repo,
        heartbeatIntervalSeconds,
        registered: (hostId, requestId) => redelivery.hostRegistered(hostId, requestId),
        reported: (hostId, instances, hostEvents) => reconciler.reconcileHost(hostId, instances, hostEvents).catch((e: Error) => ctx.logger.warn({ hostId, err: e.message }, "heartbeat reconciliation failed")),
      }),
    );
    return {
      async stop() {
        monitor.stop();
        for (const { client } of clients.values()) client.close();
      },
    };
  },
};
