// The in-memory host inventory: the same contract as the SQL one, for unit tests, the
// scheduler benchmark and single-process dev. Claims are atomic because each check-and-add
// runs synchronously on the event loop with no await in between.
import type { HostHeartbeat, HostInventory, HostRegistration, HostState, ResourceAmounts } from "./host-inventory.js";
import { checkAmounts, resolveRatios } from "./host-inventory.js";

type MutableHost = { -readonly [K in keyof HostState]: HostState[K] };

export class MemoryHostInventory implements HostInventory {
  private readonly hosts = new Map<string, MutableHost>();
  private readonly claims = new Map<string, { hostId: string; amounts: ResourceAmounts }>();
  /** Hosts in registration order; list() hands this array out and it is never mutated after that. */
  private order: MutableHost[] = [];
  private readonly position = new Map<string, number>();
  /** True once list() handed `order` out: the next change copies it first (copy-on-write). */
  private shared = false;

  /** Stores a new version of a host; host objects are replaced, never edited, so readers keep theirs. */
  private put(h: MutableHost): void {
    this.hosts.set(h.hostId, h);
    if (this.shared) {
      this.order = this.order.slice();
      this.shared = false;
    }
    const at = this.position.get(h.hostId);
    if (at === undefined) {
      this.position.set(h.hostId, this.order.length);
      this.order.push(h);
    } else {
      this.order[at] = h;
    }
  }

  async register(reg: HostRegistration, nowMs: number): Promise<HostState> {
    checkAmounts("total", reg.total);
    const prev = this.hosts.get(reg.hostId);
    const h: MutableHost = {
      hostId: reg.hostId,
      region: reg.region,
      total: { ...reg.total },
      used: prev ? prev.used : { vcpus: 0, memoryMib: 0, diskGib: 0 },
      ratios: resolveRatios(reg.ratios),
      hypervisors: reg.hypervisors.map((o) => ({ ...o, features: [...o.features] })),
      load: reg.load ?? 0,
      instanceCount: reg.instanceCount ?? 0,
      latencyMs: reg.latencyMs ?? 0,
      up: true,
      lastHeartbeatMs: nowMs,
    };
    this.put(h);
    return { ...h };
  }

  async heartbeat(hostId: string, hb: HostHeartbeat, nowMs: number): Promise<boolean> {
    const h = this.hosts.get(hostId);
    if (!h) return false;
    // A copy, not an in-place edit: snapshots handed out earlier must not change under a reader.
    this.put({
      ...h,
      load: hb.load,
      instanceCount: hb.instanceCount,
      latencyMs: hb.latencyMs,
      hypervisors: hb.hypervisors ? hb.hypervisors.map((o) => ({ ...o, features: [...o.features] })) : h.hypervisors,
      up: true,
      lastHeartbeatMs: Math.max(h.lastHeartbeatMs, nowMs),
    });
    return true;
  }

  async markDownMissedHeartbeats(nowMs: number, graceMs: number): Promise<string[]> {
    const down: string[] = [];
    for (const h of this.hosts.values()) {
      if (h.up && h.lastHeartbeatMs < nowMs - graceMs) {
        this.put({ ...h, up: false });
        down.push(h.hostId);
      }
    }
    return down;
  }

  async get(hostId: string): Promise<HostState | undefined> {
    const h = this.hosts.get(hostId);
    return h && { ...h };
  }

  async list(): Promise<readonly HostState[]> {
    this.shared = true;
    return this.order;
  }

  async claim(hostId: string, amounts: ResourceAmounts, claimId: string): Promise<boolean> {
    checkAmounts("resources", amounts);
    const held = this.claims.get(claimId);
    if (held) return held.hostId === hostId;
    const h = this.hosts.get(hostId);
    if (!h || !h.up) return false;
    const u = h.used;
    const fits =
      u.vcpus + amounts.vcpus <= h.total.vcpus * h.ratios.cpu &&
      u.memoryMib + amounts.memoryMib <= h.total.memoryMib * h.ratios.ram &&
      u.diskGib + amounts.diskGib <= h.total.diskGib * h.ratios.disk;
    if (!fits) return false;
    this.put({ ...h, used: { vcpus: u.vcpus + amounts.vcpus, memoryMib: u.memoryMib + amounts.memoryMib, diskGib: u.diskGib + amounts.diskGib } });
    this.claims.set(claimId, { hostId, amounts: { ...amounts } });
    return true;
  }

  async release(claimId: string): Promise<boolean> {
    const held = this.claims.get(claimId);
    if (!held) return false;
    this.claims.delete(claimId);
    const h = this.hosts.get(held.hostId);
    if (h) {
      const u = h.used;
      const a = held.amounts;
      this.put({ ...h, used: { vcpus: u.vcpus - a.vcpus, memoryMib: u.memoryMib - a.memoryMib, diskGib: u.diskGib - a.diskGib } });
    }
    return true;
  }
}
