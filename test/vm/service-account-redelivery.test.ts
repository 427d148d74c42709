// The VM manager's re-delivery when a host registers again: which VMs it picks (those that
// keep their authorization process on the host), one audit record per VM with its outcome,
// and a failure that is logged, not thrown into the registration.
import { describe, expect, it } from "vitest";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { Vm, VmState } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import type { AuditEntry } from "../../server/src/runtime/storage/audit-log.js";
import { ServiceAccountRedelivery } from "../../server/src/vm/manager/service-account-redelivery.js";

const SA = [{ email: "builder@acme.trustplane", scopes: ["storage.read"] }];
const vms = [
  Vm.fromPartial({ vmId: "running", hostId: "h1", state: VmState.VM_STATE_RUNNING, serviceAccounts: SA }),
  Vm.fromPartial({ vmId: "paused", hostId: "h1", state: VmState.VM_STATE_PAUSED, serviceAccounts: SA }),
  Vm.fromPartial({ vmId: "stopped", hostId: "h1", state: VmState.VM_STATE_STOPPED, serviceAccounts: SA }),
  Vm.fromPartial({ vmId: "host-down", hostId: "h1", state: VmState.VM_STATE_FAILED, failureReason: "HOST_DOWN", serviceAccounts: SA }),
  Vm.fromPartial({ vmId: "boot-failed", hostId: "h1", state: VmState.VM_STATE_FAILED, failureReason: "BOOT_TIMEOUT", serviceAccounts: SA }),
  Vm.fromPartial({ vmId: "no-accounts", hostId: "h1", state: VmState.VM_STATE_RUNNING }),
  Vm.fromPartial({ vmId: "terminated", hostId: "h1", state: VmState.VM_STATE_TERMINATED, serviceAccounts: SA }),
  Vm.fromPartial({ vmId: "elsewhere", hostId: "h2", state: VmState.VM_STATE_RUNNING, serviceAccounts: SA }),
];
const repo = {
  async list(f: { hostId?: string; state?: VmState }) {
    return { items: vms.filter((v) => v.hostId === f.hostId && v.state === f.state) };
  },
};

describe("service accounts re-delivered when a host registers", () => {
  it("asks for the VMs that keep their authorization process there, and audits each outcome", async () => {
    const audited: AuditEntry[] = [];
    const asked: { hostId: string; vmIds: readonly string[]; requestId: string }[] = [];
    const r = new ServiceAccountRedelivery({
      repo,
      audit: { append: async (e: AuditEntry) => void audited.push(e) } as never,
      logger: createLogger({ level: "silent" }),
      async redeliverHost(hostId, vmIds, requestId) {
        asked.push({ hostId, vmIds, requestId });
        return [
          { vmId: "running", redelivered: ["tpla_a"], shared: [] },
          { vmId: "paused", redelivered: [], shared: ["tpla_a"], error: new TrustplaneError("NOT_FOUND", "VM_NOT_ATTACHED", "not attached") },
        ];
      },
    });
    await r.hostRegistered("h1", "register-h1-1");
    expect(asked).toEqual([{ hostId: "h1", vmIds: ["running", "paused", "stopped", "host-down"], requestId: "register-h1-1" }]);
    expect(audited.map((a) => [a.principal, a.action, a.target, a.outcome, a.requestId])).toEqual([
      ["host:h1", "vm.service_accounts.redeliver", "running", "ok", "register-h1-1"],
      ["host:h1", "vm.service_accounts.redeliver", "paused", "VM_NOT_ATTACHED", "register-h1-1"],
    ]);
  });

  it("asks nothing for a host without such VMs, and never throws into the registration", async () => {
    let calls = 0;
    const r = new ServiceAccountRedelivery({
      repo,
      audit: { append: async () => undefined } as never,
      logger: createLogger({ level: "silent" }),
      async redeliverHost() {
        calls++;
        throw new Error("agent unreachable");
      },
    });
    await r.hostRegistered("h3", "register-h3-1");
    expect(calls).toBe(0);
    await expect(r.hostRegistered("h1", "register-h1-2")).resolves.toBeUndefined();
    expect(calls).toBe(1);
  });
});
