// Choosing the hypervisor (issue 4, seed 004's "service determines the virtualization layer"):
// when the customer names none, pick from the image's OS, the required features, what up hosts
// offer and a per-hypervisor cost, and say why; when the customer names one that is worse for
// the features, suggest the one that fits, and refuse if the named driver cannot do them.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { Feature, HypervisorType } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { HostState } from "./host-inventory.js";

export const hypervisorName = (h: HypervisorType): string => HypervisorType[h]?.replace("HYPERVISOR_TYPE_", "").toLowerCase() ?? String(h);
export const featureName = (f: Feature): string => Feature[f]?.replace("FEATURE_", "").toLowerCase() ?? String(f);

/** What a driver can do by its nature; used when no up host reports the driver (to still explain). */
export interface HypervisorProfile {
  hypervisor: HypervisorType;
  features: readonly Feature[];
  cost: number;
}

export const DEFAULT_HYPERVISOR_PROFILES: readonly HypervisorProfile[] = [
  {
    hypervisor: HypervisorType.HYPERVISOR_TYPE_QEMU,
    features: [Feature.FEATURE_BLOCK_HOTPLUG, Feature.FEATURE_MEMORY_INSPECTION, Feature.FEATURE_PAUSE, Feature.FEATURE_NETWORK_RECONFIGURE],
    cost: 4,
  },
  // Matches the sandbox driver's own table (server/src/vm/agent/drivers/sandbox): fast start, cost 1.
  { hypervisor: HypervisorType.HYPERVISOR_TYPE_SANDBOX, features: [Feature.FEATURE_FAST_START], cost: 1 },
];

/**
 * Hypervisors that can run an OS when the image catalog does not say: a full OS needs a machine
 * (qemu); a process VM runs in the sandbox, or inside a machine when it needs machine features.
 */
export function hypervisorsForOs(os: string): HypervisorType[] {
  return os === "process" ? [HypervisorType.HYPERVISOR_TYPE_SANDBOX, HypervisorType.HYPERVISOR_TYPE_QEMU] : [HypervisorType.HYPERVISOR_TYPE_QEMU];
}

export interface HypervisorChoiceRequest {
  os: string;
  /** From the image catalog when the image is known; otherwise derived from the OS. */
  compatible?: readonly HypervisorType[];
  /** UNSPECIFIED: the service chooses. */
  requested: HypervisorType;
  features: readonly Feature[];
  /** The inventory snapshot: only up hosts count as availability. */
  hosts: readonly HostState[];
  /** Per-hypervisor cost overrides (lower is cheaper); default: the profile's cost. */
  costs?: ReadonlyMap<HypervisorType, number>;
  profiles?: readonly HypervisorProfile[];
}

export interface HypervisorChoice {
  hypervisor: HypervisorType;
  /** Human-readable; recorded in the VM (Vm.hypervisor_reason). */
  reason: string;
  /** Set when the customer's explicit choice is worse than another for the request. */
  suggestion?: { hypervisor: HypervisorType; text: string };
}

interface Assessment {
  hypervisor: HypervisorType;
  cost: number;
  /** Required features the driver cannot provide anywhere (by profile and by every host's report). */
  missing: Feature[];
  /** Up hosts offering this driver with every required feature. */
  hostsWithAll: number;
}

function assess(req: HypervisorChoiceRequest, hv: HypervisorType): Assessment {
  const profile = (req.profiles ?? DEFAULT_HYPERVISOR_PROFILES).find((p) => p.hypervisor === hv);
  const known = new Set<Feature>(profile?.features ?? []);
  let hostsWithAll = 0;
  for (const h of req.hosts) {
    if (!h.up) continue;
    for (const d of h.hypervisors) {
      if (d.hypervisor !== hv) continue;
      for (const f of d.features) known.add(f);
      if (req.features.every((f) => d.features.includes(f))) {
        hostsWithAll++;
        break;
      }
    }
  }
  const cost = req.costs?.get(hv) ?? profile?.cost ?? Number.POSITIVE_INFINITY;
  return { hypervisor: hv, cost, missing: req.features.filter((f) => !known.has(f)), hostsWithAll };
}

const list = (fs: readonly Feature[]) => fs.map(featureName).join(", ");

/** Best of the assessments that can do everything: available first, then cheapest, then most hosts. */
function best(as: Assessment[]): Assessment | undefined {
  return as
    .filter((a) => a.missing.length === 0)
    .sort((a, b) => Number(b.hostsWithAll > 0) - Number(a.hostsWithAll > 0) || a.cost - b.cost || b.hostsWithAll - a.hostsWithAll)[0];
}

export function chooseHypervisor(req: HypervisorChoiceRequest): HypervisorChoice {
  const compatible = req.compatible?.length ? [...req.compatible] : hypervisorsForOs(req.os);
  const runs = `os ${req.os} runs on ${compatible.map(hypervisorName).join("/")}`;
  const assessments = compatible.map((hv) => assess(req, hv));
  const top = best(assessments);
  const wants = req.features.length ? `; requires ${list(req.features)}` : "";

  if (req.requested !== HypervisorType.HYPERVISOR_TYPE_UNSPECIFIED) {
    const name = hypervisorName(req.requested);
    if (!compatible.includes(req.requested)) {
      const alt = top ?? assessments[0]!;
      throw new TrustplaneError(
        "INVALID_ARGUMENT",
        "UNSUITABLE_HYPERVISOR",
        `hypervisor ${name} cannot run ${runs.replace("runs on", "which runs on")}; use ${hypervisorName(alt.hypervisor)} or leave the hypervisor unspecified`,
        "hypervisor",
      );
    }
    const mine = assessments.find((a) => a.hypervisor === req.requested)!;
    if (mine.missing.length) {
      const fix = top ? `${hypervisorName(top.hypervisor)} would fit: set hypervisor to ${hypervisorName(top.hypervisor)} or leave it unspecified` : `no hypervisor for ${req.os} provides them`;
      throw new TrustplaneError("FAILED_PRECONDITION", "UNSUPPORTED_FEATURE", `hypervisor ${name} cannot provide ${list(mine.missing)}; ${fix}`, "required_features");
    }
    const choice: HypervisorChoice = { hypervisor: req.requested, reason: `${name} as requested${wants}` };
    if (top && top.hypervisor !== req.requested) {
      const better =
        mine.hostsWithAll === 0 && top.hostsWithAll > 0
          ? `no up host offers ${name} with the required features; ${hypervisorName(top.hypervisor)} is available on ${top.hostsWithAll}`
          : top.cost < mine.cost
            ? `${hypervisorName(top.hypervisor)} also provides ${req.features.length ? list(req.features) : "what is asked"} at cost ${top.cost} (vs ${mine.cost})`
            : undefined;
      if (better) choice.suggestion = { hypervisor: top.hypervisor, text: better };
    }
    return choice;
  }

  if (!top) {
    const why = assessments.map((a) => `${hypervisorName(a.hypervisor)} lacks ${list(a.missing)}`).join("; ");
    throw new TrustplaneError("FAILED_PRECONDITION", "UNSUPPORTED_FEATURE", `no hypervisor that can run os ${req.os} provides ${list(req.features)} (${why}); drop the feature or use another image`, "required_features");
  }
  if (top.hostsWithAll === 0) {
    throw new TrustplaneError(
      "RESOURCE_EXHAUSTED",
      "NO_VALID_HOST",
      `no up host offers ${hypervisorName(top.hypervisor)}${req.features.length ? ` with ${list(req.features)}` : ""} (needed for os ${req.os}); retry when such a host has registered`,
    );
  }
  const others = assessments.filter((a) => a !== top);
  const rejected = others.map((a) =>
    a.missing.length ? `${hypervisorName(a.hypervisor)} lacks ${list(a.missing)}` : a.hostsWithAll === 0 ? `${hypervisorName(a.hypervisor)} on no up host` : `${hypervisorName(a.hypervisor)} costs ${a.cost}`,
  );
  return {
    hypervisor: top.hypervisor,
    reason: `${hypervisorName(top.hypervisor)}: ${runs}${wants}; cost ${top.cost}; on ${top.hostsWithAll} up host${top.hostsWithAll === 1 ? "" : "s"}${rejected.length ? `; ${rejected.join("; ")}` : ""}`,
  };
}
