// The scheduler's weighers (issue 4 "Scheduler", Nova's weighing stage): each gives a raw value
// per candidate; the scheduler normalises it to [0,1] over the candidate set (min → 0, max → 1,
// all equal → 0) and multiplies by the weigher's multiplier. Highest total wins. A negative
// multiplier prefers the smaller raw value (less load, fewer instances, lower latency).
import type { HostState } from "../manager/host-inventory.js";
import type { SchedulingRequest } from "./host-filters.js";

export interface HostWeigher {
  readonly name: string;
  /** Sign says which way is better; magnitude how much this weigher counts against the others. */
  readonly defaultMultiplier: number;
  raw(host: HostState, req: SchedulingRequest): number;
}

/** Free schedulable memory after claims: spreads VMs (positive) or stacks them (negative). */
export const RamWeigher: HostWeigher = { name: "RamWeigher", defaultMultiplier: 1.0, raw: (h) => h.total.memoryMib * h.ratios.ram - h.used.memoryMib };

/** The host's 1-minute load per core, as its agent reported it. */
export const LoadWeigher: HostWeigher = { name: "LoadWeigher", defaultMultiplier: -1.0, raw: (h) => h.load };

/** Instances the agent reported running. */
export const InstanceCountWeigher: HostWeigher = { name: "InstanceCountWeigher", defaultMultiplier: -0.5, raw: (h) => h.instanceCount };

/** Agent ↔ server round trip: a far host starts and answers slower. */
export const LatencyWeigher: HostWeigher = { name: "LatencyWeigher", defaultMultiplier: -0.5, raw: (h) => h.latencyMs };

export interface WeigherSetting {
  weigher: HostWeigher;
  multiplier: number;
}

export const DEFAULT_WEIGHERS: readonly WeigherSetting[] = [RamWeigher, LoadWeigher, InstanceCountWeigher, LatencyWeigher].map((w) => ({
  weigher: w,
  multiplier: w.defaultMultiplier,
}));

/** Nova's normalisation: (x − min) / (max − min); every value 0 when all are equal. */
export function normalise(values: Float64Array, out = new Float64Array(values.length)): Float64Array {
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const range = max - min;
  if (!(range > 0)) return out.fill(0);
  for (let i = 0; i < values.length; i++) out[i] = (values[i]! - min) / range;
  return out;
}
