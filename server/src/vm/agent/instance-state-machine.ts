// The agent-side instance lifecycle (seed 004) in one table: which states each uniform command
// may start from. PENDING (defined) -> STARTING -> RUNNING <-> STOPPED / PAUSED ->
// TERMINATING -> TERMINATED, FAILED with a reason. Anything else is FAILED_PRECONDITION.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { VmState } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";

const S = VmState;

/** Command -> the states it may be issued in. */
export const ALLOWED_FROM = {
  start: [S.VM_STATE_PENDING, S.VM_STATE_STOPPED, S.VM_STATE_FAILED],
  stop: [S.VM_STATE_RUNNING, S.VM_STATE_PAUSED],
  pause: [S.VM_STATE_RUNNING],
  resume: [S.VM_STATE_PAUSED],
  attachVolume: [S.VM_STATE_RUNNING],
  detachVolume: [S.VM_STATE_RUNNING],
  configureNetwork: [S.VM_STATE_RUNNING, S.VM_STATE_STOPPED, S.VM_STATE_PENDING],
  terminate: [S.VM_STATE_PENDING, S.VM_STATE_STARTING, S.VM_STATE_RUNNING, S.VM_STATE_STOPPING, S.VM_STATE_STOPPED, S.VM_STATE_PAUSED, S.VM_STATE_FAILED],
} as const satisfies Record<string, readonly VmState[]>;

export type InstanceCommand = keyof typeof ALLOWED_FROM;

export const stateName = (s: VmState): string => VmState[s]?.replace("VM_STATE_", "") ?? String(s);

/** Throws FAILED_PRECONDITION / INVALID_STATE unless `command` may run in `state`. */
export function assertTransition(vmId: string, command: InstanceCommand, state: VmState): void {
  const allowed: readonly VmState[] = ALLOWED_FROM[command];
  if (!allowed.includes(state)) {
    throw new TrustplaneError("FAILED_PRECONDITION", "INVALID_STATE", `cannot ${command} ${vmId} while it is ${stateName(state)} (needs ${allowed.map(stateName).join(" or ")})`, "vm_id");
  }
}

/** States in which the instance's process should exist. */
export const PROCESS_STATES: readonly VmState[] = [S.VM_STATE_STARTING, S.VM_STATE_RUNNING, S.VM_STATE_PAUSED, S.VM_STATE_STOPPING];
