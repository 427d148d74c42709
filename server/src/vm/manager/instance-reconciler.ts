// The server following its hosts (seed 004: "events update state"): unsolicited instance events
// and instance lists from heartbeats, and missed heartbeats, become VM record changes. The host
// is asked (GetInstance) before anything changes, written only over the record as read.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { VmEventType, VmState, type Instance, type Vm, type VmEvent } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { Logger } from "../../runtime/logger.js";
import type { AuditLog } from "../../runtime/storage/audit-log.js";
import type { Placement } from "./placement.js";
import type { VmRecordChanges } from "./vm-record-changes.js";
import type { VmRepository } from "./vm-repository.js";
import { stateName } from "./vm-state-machine.js";
import type { HostControlClient } from "./vm-service.js";

/** Stable failure reason of a VM whose host missed its heartbeats. */
export const HOST_DOWN = "HOST_DOWN";
/** Stable failure reason of a VM its host no longer has (its state was lost). */
export const INSTANCE_LOST = "INSTANCE_LOST";

const MAX_EVENTS_PER_BEAT = 1000;
const MAX_DETAIL = 300;

/** What prompted a look at the host: a driver event, a heartbeat, a reconnect. */
export interface Observation {
  type?: VmEventType;
  detail: string;
  /** "guest", "hypervisor" or "host:<id>". */
  initiator: string;
}

export interface InstanceReconcilerDeps {
  repo: VmRepository;
  /** Every change the reconciler makes is audited, as a command's would be. */
  audit: Pick<AuditLog, "append">;
  changes: VmRecordChanges;
  placement: Placement;
  hostControl(hostId: string): Promise<HostControlClient>;
  logger: Logger;
}

const S = VmState;
/** States the server settles on its own; the transitional ones belong to a command in flight. */
const SETTLED: readonly VmState[] = [S.VM_STATE_RUNNING, S.VM_STATE_PAUSED];
/** States a command in flight holds: an event for the VM is looked at again after it. */
const BUSY: readonly VmState[] = [S.VM_STATE_PENDING, S.VM_STATE_SCHEDULED, S.VM_STATE_STARTING, S.VM_STATE_STOPPING];
const RETRIES = 40;
const RETRY_MS = 250;
/** What the host may report that the server adopts. */
const REPORTED: readonly VmState[] = [S.VM_STATE_RUNNING, S.VM_STATE_PAUSED, S.VM_STATE_STOPPED, S.VM_STATE_FAILED];

/** Agent events the server did not cause itself: those are what it must follow. */
export function isUnsolicited(initiator: string): boolean {
  return initiator === "guest" || initiator === "hypervisor" || initiator.startsWith("host:");
}

function eventType(from: VmState, to: VmState): VmEventType {
  if (to === S.VM_STATE_STOPPED) return VmEventType.VM_EVENT_TYPE_STOPPED;
  if (to === S.VM_STATE_PAUSED) return VmEventType.VM_EVENT_TYPE_SUSPENDED;
  if (to === S.VM_STATE_FAILED) return VmEventType.VM_EVENT_TYPE_FAILED;
  return from === S.VM_STATE_PAUSED ? VmEventType.VM_EVENT_TYPE_RESUMED : VmEventType.VM_EVENT_TYPE_STARTED;
}

export class InstanceReconciler {
  constructor(private readonly deps: InstanceReconcilerDeps) {}

  /** Whether the server's record and the host's report disagree in a way worth a look. */
  static disagrees(vm: Vm, inst: Instance | undefined): boolean {
    const followed = SETTLED.includes(vm.state) || (vm.state === S.VM_STATE_FAILED && vm.failureReason === HOST_DOWN);
    if (!followed) return false;
    if (!inst) return true;
    return REPORTED.includes(inst.state) && inst.state !== vm.state;
  }

  /**
   * Asks `hostId` about `vmId` and brings the record in line with it; never throws. An event
   * that lands while a command still holds the VM (STARTING: the guest exited before the server
   * recorded it RUNNING) is looked at again once the command is done.
   */
  async observe(hostId: string, vmId: string, why: Observation, attempt = 0): Promise<void> {
    try {
      if ((await this.reconcile(hostId, vmId, why)) === "busy" && why.type !== undefined && attempt < RETRIES) {
        setTimeout(() => void this.observe(hostId, vmId, why, attempt + 1), RETRY_MS).unref();
      }
    } catch (e) {
      // Lost a race with a command (CONCURRENT_CHANGE) or the host is unreachable: the command
      // or the next heartbeat settles it.
      this.deps.logger.debug({ hostId, vmId, err: (e as Error).message }, "instance observation not applied");
    }
  }

  private async reconcile(hostId: string, vmId: string, why: Observation): Promise<"busy" | void> {
    const vm = await this.deps.repo.get(vmId);
    if (!vm || vm.hostId !== hostId) return;
    const recovering = vm.state === S.VM_STATE_FAILED && vm.failureReason === HOST_DOWN;
    if (BUSY.includes(vm.state)) return "busy";
    if (!SETTLED.includes(vm.state) && !recovering) return;
    let inst: Instance | undefined;
    try {
      inst = (await (await this.deps.hostControl(hostId)).getInstance({ vmId })).instance;
    } catch (e) {
      if (!(e instanceof TrustplaneError && e.status === "NOT_FOUND")) throw e;
    }
    if (!inst) {
      const detail = recovering ? `host ${hostId} is back without this VM` : `host ${hostId} no longer has this VM`;
      if (recovering) {
        // Already FAILED: only the reason changes, and with nothing running the claim goes.
        const lost = await this.deps.changes.amend(vmId, (cur) => (cur.updatedAtMs === vm.updatedAtMs ? { failureReason: INSTANCE_LOST } : undefined), { type: VmEventType.VM_EVENT_TYPE_FAILED, detail, initiator: `host:${hostId}` });
        if (!lost) return;
      } else {
        await this.deps.changes.move(vm, S.VM_STATE_FAILED, VmEventType.VM_EVENT_TYPE_FAILED, detail, `host:${hostId}`, { failureReason: INSTANCE_LOST }, { exact: true });
      }
      await this.deps.placement.release(vmId);
      await this.audited(`host:${hostId}`, "vm.host_report", vmId, { state: "FAILED", failureReason: INSTANCE_LOST });
      return;
    }
    if (REPORTED.includes(inst.state) && inst.state !== vm.state) {
      const detail = why.detail || `host ${hostId} reports it ${stateName(inst.state)}`;
      const failureReason = inst.state === S.VM_STATE_FAILED ? inst.failureReason || "HOST_REPORTED_FAILURE" : "";
      const next = await this.deps.changes.move(vm, inst.state, eventType(vm.state, inst.state), detail, why.initiator, { failureReason, ...(inst.network ? { network: inst.network } : {}) }, { exact: true });
      this.deps.logger.info({ hostId, vmId, from: stateName(vm.state), to: stateName(next.state), initiator: why.initiator }, "VM state follows its host");
      await this.audited(`host:${hostId}`, "vm.host_report", vmId, { from: stateName(vm.state), to: stateName(next.state), initiator: why.initiator, detail });
      return;
    }
    // Same state: a device the guest released after a detach timed out is gone on the host too.
    const held = new Set(inst.volumes.map((v) => v.volumeId));
    const gone = vm.volumes.filter((v) => !held.has(v.volumeId)).map((v) => v.volumeId);
    if (gone.length && why.type === VmEventType.VM_EVENT_TYPE_DEVICE_REMOVED) {
      const changed = await this.deps.changes.amend(vmId, (cur) => (cur.updatedAtMs === vm.updatedAtMs ? { volumes: cur.volumes.filter((v) => held.has(v.volumeId)) } : undefined), {
        type: VmEventType.VM_EVENT_TYPE_DEVICE_REMOVED,
        detail: `volume ${gone.join(", ")} released by the guest`,
        initiator: why.initiator,
      });
      if (changed) await this.audited(`host:${hostId}`, "vm.host_report", vmId, { volumesReleased: gone });
    }
  }

  private async audited(principal: string, action: string, target: string, detail: Record<string, unknown>): Promise<void> {
    await this.deps.audit.append({ principal, action, target, outcome: "ok", requestId: "", detail });
  }

  /** The host missed its heartbeats: its running VMs are FAILED / HOST_DOWN (claims kept, see below). */
  async hostDown(hostId: string): Promise<string[]> {
    const failed: string[] = [];
    for (const state of SETTLED) {
      let pageToken: string | undefined;
      do {
        const page = await this.deps.repo.list({ hostId, state, pageSize: 500, pageToken });
        for (const vm of page.items) {
          try {
            // The claim stays: the VM may well still run on the unreachable host, and releasing
            // it would let the scheduler over-commit that host the moment it is back.
            await this.deps.changes.move(vm, S.VM_STATE_FAILED, VmEventType.VM_EVENT_TYPE_FAILED, `host ${hostId} missed its heartbeats`, "scheduler", { failureReason: HOST_DOWN });
            failed.push(vm.vmId);
            await this.audited("scheduler", "vm.host_down", vm.vmId, { hostId, from: stateName(vm.state) });
          } catch (e) {
            this.deps.logger.debug({ hostId, vmId: vm.vmId, err: (e as Error).message }, "host-down transition not applied");
          }
        }
        pageToken = page.nextPageToken;
      } while (pageToken);
    }
    if (failed.length) this.deps.logger.warn({ hostId, vms: failed }, "host down: its VMs are FAILED (HOST_DOWN)");
    return failed;
  }

  /**
   * Follows one heartbeat: each unsolicited event it carries (in order), then the instance list
   * compared with the records that name this host.
   */
  async reconcileHost(hostId: string, instances: readonly Instance[], events: readonly VmEvent[] = []): Promise<void> {
    const seen = new Set<string>();
    // A host's words end up in its VMs' event logs: bounded in number and length.
    for (const e of events.slice(-MAX_EVENTS_PER_BEAT)) {
      if (!isUnsolicited(e.initiator)) continue;
      seen.add(e.vmId);
      await this.observe(hostId, e.vmId, { type: e.type, detail: e.detail.slice(0, MAX_DETAIL), initiator: e.initiator });
    }
    const byId = new Map(instances.map((i) => [i.vmId, i]));
    const look: string[] = [];
    for (const inst of instances) {
      if (seen.has(inst.vmId)) continue;
      const vm = await this.deps.repo.get(inst.vmId);
      if (vm && vm.hostId === hostId && InstanceReconciler.disagrees(vm, inst)) look.push(vm.vmId);
    }
    // VMs the server believes run there (or ran there when it went down) that the host did not
    // mention at all: it lists every instance it has, so those are gone.
    for (const state of [...SETTLED, S.VM_STATE_FAILED]) {
      let pageToken: string | undefined;
      do {
        const page = await this.deps.repo.list({ hostId, state, pageSize: 500, pageToken });
        for (const vm of page.items) if (!byId.has(vm.vmId) && InstanceReconciler.disagrees(vm, undefined)) look.push(vm.vmId);
        pageToken = page.nextPageToken;
      } while (pageToken);
    }
    for (const vmId of look) await this.observe(hostId, vmId, { detail: "", initiator: `host:${hostId}` });
  }
}
