// Scheduling then claiming (issue 4 "Scheduler", Nova's claim step): select over a snapshot,
// claim the best host atomically, fall to the alternates when a claim loses a race, and take
// a fresh snapshot when every candidate was lost to concurrent creates. The claim, not the
// snapshot, is what guarantees a host is never over-committed.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import type { HostInventory } from "../manager/host-inventory.js";
import { selectHosts, type SchedulerConfig } from "./filter-scheduler.js";
import type { SchedulingRequest } from "./host-filters.js";

export interface ClaimingSchedulerOptions extends SchedulerConfig {
  /** Fresh snapshots after every candidate lost its race. Each lost race means another
   *  request won a claim, so the loop always progresses; this only bounds a pathological storm. */
  maxRounds?: number;
}

export interface ScheduledPlacement {
  hostId: string;
  /** The chosen host's region (the VM's region when the request named none). */
  region: string;
  /** Hosts still worth trying, best first, if the start on hostId fails. */
  alternates: string[];
  /** Claims attempted, including the winning one (1 = no race lost). */
  attempts: number;
  /** Why this host: the weight and how many hosts passed the filters. */
  detail: string;
}

export class ClaimingScheduler {
  constructor(
    private readonly inventory: HostInventory,
    private readonly options: ClaimingSchedulerOptions = {},
  ) {}

  /** Picks a host and claims the request's resources under claimId; NO_VALID_HOST when none fits. */
  async schedule(req: SchedulingRequest, claimId: string, exclude: ReadonlySet<string> = new Set()): Promise<ScheduledPlacement> {
    const maxRounds = this.options.maxRounds ?? 50;
    let attempts = 0;
    for (let round = 0; round < maxRounds; round++) {
      const all = await this.inventory.list();
      const hosts = exclude.size ? all.filter((h) => !exclude.has(h.hostId)) : all;
      const sel = selectHosts(hosts, req, this.options);
      for (let i = 0; i < sel.ranked.length; i++) {
        const { host, weight } = sel.ranked[i]!;
        attempts++;
        if (await this.inventory.claim(host.hostId, req.resources, claimId)) {
          return {
            hostId: host.hostId,
            region: host.region,
            alternates: sel.ranked.slice(i + 1).map((r) => r.host.hostId),
            attempts,
            detail: `weight ${weight.toFixed(3)}; ${sel.passed} of ${sel.considered} hosts passed the filters`,
          };
        }
      }
    }
    throw new TrustplaneError(
      "RESOURCE_EXHAUSTED",
      "NO_VALID_HOST",
      `every fitting host was claimed by concurrent requests (${attempts} claims lost over ${maxRounds} rounds); retry the request`,
    );
  }

  /**
   * After a start failed on a host: gives its claim back and claims on the first alternate that
   * still fits (re-selecting without the failed hosts if every alternate is gone).
   */
  async reschedule(req: SchedulingRequest, claimId: string, failedHostIds: readonly string[], alternates: readonly string[]): Promise<ScheduledPlacement> {
    await this.inventory.release(claimId);
    const exclude = new Set(failedHostIds);
    let attempts = 0;
    for (const [i, hostId] of alternates.entries()) {
      if (exclude.has(hostId)) continue;
      attempts++;
      if (await this.inventory.claim(hostId, req.resources, claimId)) {
        const region = (await this.inventory.get(hostId))?.region ?? "";
        return { hostId, region, alternates: alternates.slice(i + 1).filter((h) => !exclude.has(h)), attempts, detail: "alternate after a failed start" };
      }
    }
    const p = await this.schedule(req, claimId, exclude);
    return { ...p, attempts: p.attempts + attempts };
  }

  release(claimId: string): Promise<boolean> {
    return this.inventory.release(claimId);
  }
}
