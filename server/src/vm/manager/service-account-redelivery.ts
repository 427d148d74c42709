// The VM manager when a host registers again (seed 000 over seed 004's restart
// reconciliation): agents keep long-term secrets in memory only, so the VMs the server
// believes on that host get their service accounts back from the token authority, once per
// registration (never per heartbeat), each VM's outcome audited.
import { VmState, type Vm } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { Logger } from "../../runtime/logger.js";
import type { AuditLog } from "../../runtime/storage/audit-log.js";
import type { RedeliveryOutcome } from "../../token/manager/vm-account-tokens.js";
import type { VmRepository } from "./vm-repository.js";
import { HOST_DOWN } from "./instance-reconciler.js";

export interface ServiceAccountRedeliveryDeps {
  repo: Pick<VmRepository, "list">;
  audit: Pick<AuditLog, "append">;
  /** The token area's VM manager side (VmAccountTokens.redeliverHost). */
  redeliverHost(hostId: string, vmIds: readonly string[], requestId: string): Promise<RedeliveryOutcome[]>;
  logger: Logger;
}

/**
 * States in which a VM still has its authorization process on its host: running, paused,
 * stopped (it keeps its endpoint for the next start), and FAILED HOST_DOWN (the server lost
 * the host's heartbeats, not the VM; the host's next beat reports it running again).
 */
const KEEPS_ENDPOINT: readonly VmState[] = [VmState.VM_STATE_RUNNING, VmState.VM_STATE_PAUSED, VmState.VM_STATE_STOPPED, VmState.VM_STATE_FAILED];

export class ServiceAccountRedelivery {
  constructor(private readonly deps: ServiceAccountRedeliveryDeps) {}

  /** `hostId` registered under `requestId` (RegisterHost): re-deliver; never throws. */
  async hostRegistered(hostId: string, requestId: string): Promise<void> {
    try {
      const vms: Vm[] = [];
      for (const state of KEEPS_ENDPOINT) {
        let pageToken: string | undefined;
        do {
          const page = await this.deps.repo.list({ hostId, state, pageSize: 500, pageToken });
          for (const vm of page.items) {
            if (vm.serviceAccounts.length === 0) continue;
            if (vm.state === VmState.VM_STATE_FAILED && vm.failureReason !== HOST_DOWN) continue;
            vms.push(vm);
          }
          pageToken = page.nextPageToken;
        } while (pageToken);
      }
      if (vms.length === 0) return;
      for (const o of await this.deps.redeliverHost(hostId, vms.map((v) => v.vmId), requestId)) {
        await this.deps.audit.append({
          principal: `host:${hostId}`,
          action: "vm.service_accounts.redeliver",
          target: o.vmId,
          outcome: o.error ? o.error.reason : "ok",
          requestId,
          detail: { hostId, redelivered: o.redelivered, shared: o.shared, ...(o.error ? { error: o.error.message } : {}) },
        });
      }
    } catch (e) {
      // The agent or the authority unreachable: the host's next registration tries again.
      this.deps.logger.warn({ hostId, err: (e as Error).message }, "service accounts not re-delivered after the host registered");
    }
  }
}
