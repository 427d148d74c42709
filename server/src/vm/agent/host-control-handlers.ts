// HostControlService on the agent: the gRPC face of the control plane. Only wiring: every
// rule (state machine, unsupported operations, reconciliation) lives in ControlPlane.
import type { HostControlServiceService } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { invalidArgument } from "../../../../sdk/src/errors.js";
import type { Handlers } from "../../runtime/auth/service-binder.js";
import type { ControlPlane } from "./control-plane.js";

export interface HostControlHooks {
  /** Called after an instance is terminated (e.g. to stop its metadata endpoint). */
  terminated?(vmId: string): Promise<void>;
  serviceAccountsChanged?(vmId: string, accounts: { email: string; scopes: string[] }[]): Promise<void>;
}

const seconds = (field: string, v: number, dflt: number) => {
  if (v < 0 || v > 3600) throw invalidArgument(field, "must be 0..3600 seconds");
  return (v || dflt) * 1000;
};

export function createHostControlHandlers(cp: ControlPlane, hooks: HostControlHooks = {}): Partial<Handlers<typeof HostControlServiceService>> {
  return {
    async createInstance(req, ctx) {
      if (!req.spec) throw invalidArgument("spec", "required");
      return { instance: await cp.create(req.spec, req.start, ctx.caller.principal) };
    },
    async startInstance(req, ctx) {
      return { instance: await cp.start(req.vmId, ctx.caller.principal) };
    },
    async stopInstance(req, ctx) {
      return cp.stopReport(req.vmId, seconds("timeout_seconds", req.timeoutSeconds, 30), req.force, ctx.caller.principal);
    },
    async terminateInstance(req, ctx) {
      const instance = await cp.terminate(req.vmId, ctx.caller.principal);
      await hooks.terminated?.(req.vmId);
      return { instance };
    },
    async attachInstanceVolume(req) {
      if (!req.volume) throw invalidArgument("volume", "required");
      return cp.attachVolume(req.vmId, req.volume);
    },
    async detachInstanceVolume(req) {
      return { instance: await cp.detachVolume(req.vmId, req.volumeId, seconds("timeout_seconds", req.timeoutSeconds, 10)) };
    },
    async configureInstanceNetwork(req) {
      if (!req.network) throw invalidArgument("network", "required");
      return { instance: await cp.configureNetwork(req.vmId, req.network) };
    },
    async pauseInstance(req) {
      return { instance: await cp.pause(req.vmId) };
    },
    async resumeInstance(req) {
      return { instance: await cp.resume(req.vmId) };
    },
    async setInstanceServiceAccounts(req) {
      const instance = cp.get(req.vmId);
      await hooks.serviceAccountsChanged?.(req.vmId, req.serviceAccounts);
      return { instance };
    },
    async getInstance(req) {
      return { instance: cp.get(req.vmId) };
    },
    async listInstances() {
      return { instances: cp.list() };
    },
    async *watchInstanceEvents(req, ctx) {
      for await (const event of cp.watch(req.vmId || undefined, ctx.signal)) yield { event };
    },
    async getHostCapabilities() {
      return { capabilities: cp.capabilities() };
    },
  };
}
