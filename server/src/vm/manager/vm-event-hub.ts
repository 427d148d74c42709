// VM events: appended to the durable log, pushed to local watchers at once, and polled from
// the log so a watcher on one replica sees events another replica wrote. A watch resumes
// after any sequence number, so a client that reconnects misses nothing; a watch from 0 first
// gets each VM's current state (from its record), then everything after.
import { EventEmitter } from "node:events";
import { VmEventType, VmState, type Vm, type VmEvent } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { VmRepository } from "./vm-repository.js";

export class VmEventHub {
  private readonly local = new EventEmitter();

  constructor(
    private readonly repo: VmRepository,
    private readonly pollMs = 1000,
  ) {
    this.local.setMaxListeners(0);
  }

  async publish(owner: string, e: Omit<VmEvent, "seq">): Promise<VmEvent> {
    const event = await this.repo.appendEvent(owner, e);
    this.local.emit("event", event);
    return event;
  }

  /**
   * Events after `afterSeq` until `signal` aborts. From 0: first one event per VM with its
   * current state (type DEFINED, detail "current state", seq = the log position it reflects, so
   * a client resuming after it misses nothing), then every event from there on.
   */
  async *watch(filter: { vmId?: string; owner?: string; afterSeq: number }, signal: AbortSignal): AsyncGenerator<VmEvent> {
    let last = filter.afterSeq;
    if (last === 0) {
      // The position first, the records second: an event in between is both in a record and
      // streamed after it, never in neither.
      last = await this.repo.lastEventSeq();
      for await (const vm of this.current(filter)) {
        if (signal.aborted) return;
        yield { seq: last, vmId: vm.vmId, type: VmEventType.VM_EVENT_TYPE_DEFINED, detail: currentDetail(vm), initiator: "", state: vm.state, timeMs: vm.updatedAtMs };
      }
    }
    let wake: (() => void) | undefined;
    const onEvent = () => wake?.();
    this.local.on("event", onEvent);
    const onAbort = () => wake?.();
    signal.addEventListener("abort", onAbort);
    try {
      while (!signal.aborted) {
        const batch = await this.repo.eventsAfter(last, filter);
        for (const e of batch) {
          last = e.seq;
          yield e;
        }
        if (batch.length) continue;
        await new Promise<void>((resolve) => {
          wake = resolve;
          const t = setTimeout(resolve, this.pollMs);
          t.unref();
        });
        wake = undefined;
      }
    } finally {
      this.local.off("event", onEvent);
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** The VMs a watch covers: the one named (whatever its state), or every live one the caller may see. */
  private async *current(filter: { vmId?: string; owner?: string }): AsyncGenerator<Vm> {
    if (filter.vmId) {
      const vm = await this.repo.get(filter.vmId);
      if (vm && (filter.owner === undefined || vm.owner === filter.owner)) yield vm;
      return;
    }
    let pageToken: string | undefined;
    do {
      const page = await this.repo.list({ owner: filter.owner, pageSize: 500, pageToken });
      for (const vm of page.items) if (vm.state !== VmState.VM_STATE_TERMINATED) yield vm;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }
}

function currentDetail(vm: Vm): string {
  return `current state${vm.hostId ? ` on ${vm.hostId}` : ""}${vm.failureReason ? ` (${vm.failureReason})` : ""}`;
}
