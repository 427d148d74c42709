// The Nova-style host selection (issue 4 "Scheduler"): run every host through the filters,
// weigh the survivors with normalised, multiplied weighers and return the best host plus
// ordered alternates for a retry. Pure over a snapshot of the inventory; claiming is separate.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import type { HostState } from "../manager/host-inventory.js";
import { DEFAULT_FILTERS, type HostFilter, type SchedulingRequest } from "./host-filters.js";
import { DEFAULT_WEIGHERS, normalise, type WeigherSetting } from "./host-weighers.js";

export interface SchedulerConfig {
  filters?: readonly HostFilter[];
  weighers?: readonly WeigherSetting[];
  /** Alternates kept after the chosen host (Nova keeps max_attempts − 1). Default 3. */
  alternates?: number;
}

export interface WeighedHost {
  host: HostState;
  weight: number;
}

export interface HostSelection {
  /** Best first: the chosen host, then the alternates in order. */
  ranked: WeighedHost[];
  considered: number;
  passed: number;
  /** Hosts each filter removed (only filters that removed any). */
  removedBy: Record<string, number>;
}

export function describeElimination(considered: number, passed: number, removedBy: Record<string, number>): string {
  const parts = Object.entries(removedBy).map(([name, n]) => `${name} removed ${n}`);
  return `${passed} of ${considered} hosts fit${parts.length ? `: ${parts.join(", ")}` : ""}`;
}

export function noValidHost(considered: number, passed: number, removedBy: Record<string, number>): TrustplaneError {
  const why = considered === 0 ? "0 of 0 hosts fit: no host has registered" : describeElimination(considered, passed, removedBy);
  return new TrustplaneError("RESOURCE_EXHAUSTED", "NO_VALID_HOST", `${why}; ask for fewer resources, another region or hypervisor, or add capacity`);
}

// Scratch buffers reused across calls (selectHosts is synchronous, so no two calls share them at
// once): fresh 80 KB typed arrays per schedule over 10k hosts cost more in GC than the weighing.
let scratchTotal = new Float64Array(1024);
let scratchRaw = new Float64Array(1024);
let scratchNorm = new Float64Array(1024);

function scratch(n: number): void {
  if (scratchTotal.length >= n) return;
  const size = 1 << Math.ceil(Math.log2(n));
  scratchTotal = new Float64Array(size);
  scratchRaw = new Float64Array(size);
  scratchNorm = new Float64Array(size);
}

/**
 * Filters then weighs; throws RESOURCE_EXHAUSTED / NO_VALID_HOST naming the filters that
 * eliminated the hosts when none fits. Ties keep the inventory's order (stable).
 */
export function selectHosts(hosts: readonly HostState[], req: SchedulingRequest, config: SchedulerConfig = {}): HostSelection {
  const filters = config.filters ?? DEFAULT_FILTERS;
  const weighers = config.weighers ?? DEFAULT_WEIGHERS;
  const keep = 1 + Math.max(0, config.alternates ?? 3);

  // One pass per host through the filters in order; a host is charged to the first that drops it.
  const removed = new Array<number>(filters.length).fill(0);
  const candidates: HostState[] = [];
  for (const h of hosts) {
    let ok = true;
    for (let f = 0; f < filters.length; f++) {
      if (!filters[f]!.passes(h, req)) {
        removed[f]!++;
        ok = false;
        break;
      }
    }
    if (ok) candidates.push(h);
  }
  const removedBy: Record<string, number> = {};
  filters.forEach((f, i) => {
    if (removed[i]! > 0) removedBy[f.name] = (removedBy[f.name] ?? 0) + removed[i]!;
  });
  if (candidates.length === 0) throw noValidHost(hosts.length, 0, removedBy);

  const n = candidates.length;
  scratch(n);
  const total = scratchTotal.subarray(0, n).fill(0);
  const raw = scratchRaw.subarray(0, n);
  const norm = scratchNorm.subarray(0, n);
  for (const { weigher, multiplier } of weighers) {
    if (multiplier === 0) continue;
    for (let i = 0; i < n; i++) raw[i] = weigher.raw(candidates[i]!, req);
    normalise(raw, norm);
    for (let i = 0; i < n; i++) total[i] += multiplier * norm[i]!;
  }

  // Top-k by partial insertion: k is small (chosen + a few alternates), so O(n·k) beats sorting n.
  const top: number[] = [];
  for (let i = 0; i < n; i++) {
    const w = total[i]!;
    if (top.length === keep && w <= total[top[keep - 1]!]!) continue;
    let j = top.length < keep ? top.length : keep - 1;
    if (top.length < keep) top.push(i);
    while (j > 0 && total[top[j - 1]!]! < w) {
      top[j] = top[j - 1]!;
      j--;
    }
    top[j] = i;
  }
  return {
    ranked: top.map((i) => ({ host: candidates[i]!, weight: total[i]! })),
    considered: hosts.length,
    passed: n,
    removedBy,
  };
}
