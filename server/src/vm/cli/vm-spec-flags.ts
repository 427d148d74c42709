// The VM-shaped CLI flags of `trustplane vm create|network|list`: volumes (ID:SIZE[:ro]), port
// forwards ([tcp|udp:]HOST:GUEST, HOST 0 for a free port), hypervisors, features and states,
// each refused with CLI_USAGE saying what a good value looks like.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { Feature, HypervisorType, VmState, type NetworkSpec, type VolumeSpec } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";

const usage = (flag: string, message: string) => new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `${flag}: ${message}`, flag.replace(/^--/, ""));

/** `data:10` (10 GiB), `logs:1:ro`. */
export function volumeFlag(v: string): VolumeSpec {
  const m = /^([a-z0-9][a-z0-9-]{0,62}):(\d+)(:ro)?$/.exec(v);
  if (!m) throw usage("--volume", `expected ID:SIZE_GIB[:ro] (e.g. data:10), got ${JSON.stringify(v)}`);
  return { volumeId: m[1]!, sizeGib: Number(m[2]), readOnly: !!m[3] };
}

/** `8080:80`, `udp:0:53` (0: the host picks a free port). */
export function forwardFlag(v: string): NetworkSpec["portForwards"][number] {
  const m = /^(?:(tcp|udp):)?(\d{1,5}):(\d{1,5})$/.exec(v);
  if (!m || Number(m[2]) > 65535 || Number(m[3]) < 1 || Number(m[3]) > 65535) throw usage("--forward", `expected [tcp|udp:]HOST_PORT:GUEST_PORT (HOST_PORT 0 picks a free one), got ${JSON.stringify(v)}`);
  return { protocol: m[1] ?? "tcp", hostPort: Number(m[2]), guestPort: Number(m[3]) };
}

export function hypervisorFlag(v: string | undefined): HypervisorType {
  if (!v) return HypervisorType.HYPERVISOR_TYPE_UNSPECIFIED;
  const h = HypervisorType[`HYPERVISOR_TYPE_${v.toUpperCase()}` as keyof typeof HypervisorType];
  if (h === undefined || h === HypervisorType.UNRECOGNIZED || h === HypervisorType.HYPERVISOR_TYPE_UNSPECIFIED) throw usage("--hypervisor", "must be qemu or sandbox");
  return h as HypervisorType;
}

export function featureFlag(f: string): Feature {
  const v = Feature[`FEATURE_${f.toUpperCase().replace(/-/g, "_")}` as keyof typeof Feature];
  if (v === undefined || v === Feature.UNRECOGNIZED || v === Feature.FEATURE_UNSPECIFIED) throw usage("--feature", `unknown feature ${f}; use block-hotplug, fast-start, memory-inspection, pause or network-reconfigure`);
  return v as Feature;
}

export function stateFlag(v: string | undefined): VmState {
  if (!v) return VmState.VM_STATE_UNSPECIFIED;
  const s = VmState[`VM_STATE_${v.toUpperCase()}` as keyof typeof VmState];
  if (s === undefined || s === VmState.UNRECOGNIZED || s === VmState.VM_STATE_UNSPECIFIED) throw usage("--state", "use running, stopped, paused, failed, …");
  return s as VmState;
}

export function intFlag(flag: string, v: string | undefined, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw usage(flag, `expected a whole number ${min}..${max}, got ${JSON.stringify(v)}`);
  return n;
}
