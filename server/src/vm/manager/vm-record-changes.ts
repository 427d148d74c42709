// Every change to a VM record on the server (seed 004 lifecycle): a transition the state machine
// allows, or an amendment that keeps the state (volumes, network), each a revision
// compare-and-set published as one VmEvent. VmService and the reconciler both go through it.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { VmState, type Vm, type VmEventType } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { VmEventHub } from "./vm-event-hub.js";
import type { VmRepository } from "./vm-repository.js";
import { assertTransition, stateName } from "./vm-state-machine.js";

export interface VmEventSpec {
  type: VmEventType;
  detail: string;
  initiator: string;
}

export type VmPatch = Partial<Vm> | ((current: Vm) => Partial<Vm>);

export class VmRecordChanges {
  constructor(
    private readonly repo: VmRepository,
    private readonly events: VmEventHub,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Moves `vm` to `to` if the stored VM is still in the state the caller saw; ABORTED /
   * CONCURRENT_CHANGE when it moved on meanwhile. Other fields changed meanwhile (a volume
   * attached during a stop) are kept: the patch applies to the stored record.
   */
  async move(vm: Vm, to: VmState, type: VmEventType, detail: string, initiator: string, patch: VmPatch = {}, opts: { exact?: boolean } = {}): Promise<Vm> {
    assertTransition(vm.vmId, vm.state, to, detail);
    let seen: VmState | undefined;
    const next = await this.repo.update(vm.vmId, (cur) => {
      seen = cur.state;
      if (cur.state !== vm.state) return undefined;
      // exact: the decision rests on the whole record as read (an observation of the host), so
      // any write since (even one that came back to the same state) voids it.
      if (opts.exact && cur.updatedAtMs !== vm.updatedAtMs) return undefined;
      return { ...cur, ...(typeof patch === "function" ? patch(cur) : patch), state: to, updatedAtMs: this.now() };
    });
    if (!next) {
      throw new TrustplaneError("ABORTED", "CONCURRENT_CHANGE", `VM ${vm.vmId} changed meanwhile (now ${stateName(seen ?? VmState.VM_STATE_UNSPECIFIED)}); retry`, "vm_id");
    }
    await this.publish(next, { type, detail, initiator });
    return next;
  }

  /**
   * Changes fields other than the state. `change` sees the stored record and returns the fields
   * to write, or undefined when there is nothing to do (then nothing is written or published).
   */
  async amend(vmId: string, change: (current: Vm) => Partial<Vm> | undefined, event: VmEventSpec | ((next: Vm) => VmEventSpec)): Promise<Vm | undefined> {
    const next = await this.repo.update(vmId, (cur) => {
      const patch = change(cur);
      return patch && { ...cur, ...patch, state: cur.state, updatedAtMs: this.now() };
    });
    if (next) await this.publish(next, typeof event === "function" ? event(next) : event);
    return next;
  }

  private async publish(vm: Vm, e: VmEventSpec): Promise<void> {
    await this.events.publish(vm.owner, { vmId: vm.vmId, type: e.type, detail: e.detail, initiator: e.initiator, state: vm.state, timeMs: vm.updatedAtMs });
  }
}
