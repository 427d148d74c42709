// The VM area on the server: VmService over the VM records, the placement and each host's
// control plane, reached with the server's CA-certified service key bound to that host.
import { createClient } from "../../../../sdk/src/client/create-client.js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { HostControlServiceService, VmServiceService } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { ServerArea } from "../../processes/area.js";
import { HostCapabilityPlacement } from "./host-capability-placement.js";
import { VmEventHub } from "./vm-event-hub.js";
import { VmRepository } from "./vm-repository.js";
import { createVmHandlers, type HostControlClient } from "./vm-service.js";

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
    const placement = new HostCapabilityPlacement(ctx.storage, hostControl, ctx.logger);
    ctx.bind(VmServiceService, createVmHandlers({ storage: ctx.storage, repo, placement, events: new VmEventHub(repo), hostControl, logger: ctx.logger }));
    return {
      async stop() {
        for (const { client } of clients.values()) client.close();
      },
    };
  },
};
