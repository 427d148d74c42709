// The VM lifecycle as one state machine (seed 004): PENDING → SCHEDULED → STARTING → RUNNING
// ⇄ STOPPED / PAUSED → TERMINATING → TERMINATED, FAILED with a reason. Every state change in
// the VM manager goes through `assertTransition`, so an illegal one is refused in one place.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { VmState } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";

const S = VmState;

const ALLOWED: ReadonlyMap<VmState, ReadonlySet<VmState>> = new Map([
  [S.VM_STATE_PENDING, new Set([S.VM_STATE_SCHEDULED, S.VM_STATE_FAILED, S.VM_STATE_TERMINATING])],
  [S.VM_STATE_SCHEDULED, new Set([S.VM_STATE_STARTING, S.VM_STATE_STOPPED, S.VM_STATE_FAILED, S.VM_STATE_TERMINATING])],
  [S.VM_STATE_STARTING, new Set([S.VM_STATE_RUNNING, S.VM_STATE_STOPPED, S.VM_STATE_FAILED, S.VM_STATE_SCHEDULED, S.VM_STATE_TERMINATING])],
  [S.VM_STATE_RUNNING, new Set([S.VM_STATE_STOPPING, S.VM_STATE_STOPPED, S.VM_STATE_PAUSED, S.VM_STATE_FAILED, S.VM_STATE_TERMINATING])],
  [S.VM_STATE_STOPPING, new Set([S.VM_STATE_STOPPED, S.VM_STATE_FAILED, S.VM_STATE_TERMINATING])],
  [S.VM_STATE_STOPPED, new Set([S.VM_STATE_STARTING, S.VM_STATE_FAILED, S.VM_STATE_TERMINATING])],
  [S.VM_STATE_PAUSED, new Set([S.VM_STATE_RUNNING, S.VM_STATE_STOPPING, S.VM_STATE_STOPPED, S.VM_STATE_FAILED, S.VM_STATE_TERMINATING])],
  [S.VM_STATE_TERMINATING, new Set([S.VM_STATE_TERMINATED, S.VM_STATE_FAILED])],
  // A VM FAILED because its host went down is still whatever its host reports once it is back.
  [S.VM_STATE_FAILED, new Set([S.VM_STATE_TERMINATING, S.VM_STATE_STARTING, S.VM_STATE_RUNNING, S.VM_STATE_PAUSED, S.VM_STATE_STOPPED])],
  [S.VM_STATE_TERMINATED, new Set<VmState>()],
]);

export function stateName(s: VmState): string {
  return VmState[s]?.replace("VM_STATE_", "") ?? String(s);
}

export function canTransition(from: VmState, to: VmState): boolean {
  return ALLOWED.get(from)?.has(to) ?? false;
}

/** Refuses an illegal transition with FAILED_PRECONDITION naming both states and what is allowed. */
export function assertTransition(vmId: string, from: VmState, to: VmState, action: string): void {
  if (canTransition(from, to)) return;
  const allowedFrom = [...ALLOWED.entries()].filter(([, tos]) => tos.has(to)).map(([f]) => stateName(f));
  throw new TrustplaneError(
    "FAILED_PRECONDITION",
    "INVALID_STATE",
    `cannot ${action} VM ${vmId} while it is ${stateName(from)}${allowedFrom.length ? `; ${action} needs one of ${allowedFrom.join(", ")}` : ""}`,
    "vm_id",
  );
}
