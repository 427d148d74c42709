// Marks hosts down when they miss heartbeats (issue 4 "Hosts"): every interval, any host whose
// last heartbeat is older than `missed` intervals is marked down, so the ComputeFilter drops it,
// and `onDown` hears of it (the VM manager fails the host's VMs with HOST_DOWN).
import type { Logger } from "../../runtime/logger.js";
import type { HostInventory } from "../manager/host-inventory.js";

export interface HeartbeatMonitorOptions {
  intervalMs: number;
  /** Heartbeats a host may miss before it is marked down (the proto says three). */
  missed?: number;
  now?: () => number;
  /** Called once per host this monitor marked down (after the inventory says so). */
  onDown?(hostId: string): Promise<unknown>;
}

export class HeartbeatMonitor {
  private timer: NodeJS.Timeout | undefined;
  private readonly since: number;

  constructor(
    private readonly inventory: HostInventory,
    private readonly logger: Logger,
    private readonly options: HeartbeatMonitorOptions,
  ) {
    this.since = (options.now ?? Date.now)();
  }

  get graceMs(): number {
    return this.options.intervalMs * (this.options.missed ?? 3);
  }

  /** One sweep; returns the hosts it marked down. */
  async sweep(): Promise<string[]> {
    const now = (this.options.now ?? Date.now)();
    // A server that just started (or was down itself) first gives every host a full grace
    // period to reach it: stale rows from before its start would otherwise fail their VMs.
    if (now - this.since < this.graceMs) return [];
    const down = await this.inventory.markDownMissedHeartbeats(now, this.graceMs);
    for (const hostId of down) {
      this.logger.warn({ hostId, graceMs: this.graceMs }, "host missed its heartbeats; marked down and excluded from scheduling");
      await this.options.onDown?.(hostId).catch((e: Error) => this.logger.error({ hostId, err: e.message }, "host-down handling failed"));
    }
    return down;
  }

  start(): void {
    this.timer ??= setInterval(() => {
      this.sweep().catch((e: Error) => this.logger.error({ err: e.message }, "heartbeat sweep failed"));
    }, this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
