// VM events: appended to the durable log, pushed to local watchers at once, and polled from
// the log so a watcher on one replica sees events another replica wrote. A watch resumes
// after any sequence number, so a client that reconnects misses nothing.
import { EventEmitter } from "node:events";
import type { VmEvent } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
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

  /** Events after `afterSeq` (0: only new ones from now), until `signal` aborts. */
  async *watch(filter: { vmId?: string; owner?: string; afterSeq: number }, signal: AbortSignal): AsyncGenerator<VmEvent> {
    let last = filter.afterSeq;
    if (last === 0) last = await this.repo.lastEventSeq();
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
}
