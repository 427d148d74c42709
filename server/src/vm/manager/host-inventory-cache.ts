// A cached view over an authoritative host inventory (issue 4 "Scheduler", as Nova's host
// manager keeps host states between database reads): list() is served from memory, refreshed
// at most every maxAgeMs; claims still go to the authoritative inventory, so a stale view can
// only cost a lost claim (and an alternate), never an over-commit.
import type { HostHeartbeat, HostInventory, HostRegistration, HostState, ResourceAmounts } from "./host-inventory.js";

export class CachedHostInventory implements HostInventory {
  private hosts: readonly HostState[] | undefined;
  private loadedAt = 0;
  private loading: Promise<readonly HostState[]> | undefined;
  /** Where claims made through this view live, so a release refreshes just that host. */
  private readonly claimHosts = new Map<string, string>();

  constructor(
    private readonly inner: HostInventory,
    private readonly maxAgeMs = 1000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Replaces one host in the cached view (copy-on-write: lists handed out never change). */
  private patch(h: HostState | undefined, hostId: string): void {
    if (!this.hosts) return;
    const at = this.hosts.findIndex((x) => x.hostId === hostId);
    if (at < 0 && !h) return;
    const next = this.hosts.slice();
    if (at < 0) next.push(h!);
    else if (h) next[at] = h;
    else next.splice(at, 1);
    this.hosts = next;
  }

  private async refreshHost(hostId: string): Promise<void> {
    this.patch(await this.inner.get(hostId), hostId);
  }

  async list(): Promise<readonly HostState[]> {
    if (this.hosts && this.now() - this.loadedAt < this.maxAgeMs) return this.hosts;
    // Single flight: concurrent schedulers share one reload.
    this.loading ??= (async () => {
      try {
        const started = this.now();
        const hosts = await this.inner.list();
        this.hosts = hosts;
        this.loadedAt = started;
        return hosts;
      } finally {
        this.loading = undefined;
      }
    })();
    return this.loading;
  }

  async claim(hostId: string, amounts: ResourceAmounts, claimId: string): Promise<boolean> {
    const ok = await this.inner.claim(hostId, amounts, claimId);
    if (ok) this.claimHosts.set(claimId, hostId);
    // Won: our view gains the claim. Lost: our view was stale for this host; re-read just it.
    await this.refreshHost(hostId);
    return ok;
  }

  async release(claimId: string): Promise<boolean> {
    const ok = await this.inner.release(claimId);
    const hostId = this.claimHosts.get(claimId);
    this.claimHosts.delete(claimId);
    if (ok && hostId !== undefined) await this.refreshHost(hostId);
    // A claim made elsewhere (another replica): the host looks fuller than it is until a reload.
    else if (ok) this.loadedAt = 0;
    return ok;
  }

  async register(reg: HostRegistration, nowMs: number): Promise<HostState> {
    const h = await this.inner.register(reg, nowMs);
    this.patch(h, h.hostId);
    return h;
  }

  async heartbeat(hostId: string, hb: HostHeartbeat, nowMs: number): Promise<boolean> {
    const ok = await this.inner.heartbeat(hostId, hb, nowMs);
    if (ok) await this.refreshHost(hostId);
    return ok;
  }

  async markDownMissedHeartbeats(nowMs: number, graceMs: number): Promise<string[]> {
    const down = await this.inner.markDownMissedHeartbeats(nowMs, graceMs);
    for (const id of down) await this.refreshHost(id);
    return down;
  }

  get(hostId: string): Promise<HostState | undefined> {
    return this.inner.get(hostId);
  }
}
