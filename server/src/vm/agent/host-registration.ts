// The agent's side of the host inventory: register capacity, region and capability matrix, then
// heartbeat load, instances and the events the server did not cause (a beat goes at once for
// those and for a changed matrix); VMs the server calls orphaned are terminated.
import os from "node:os";
import { statfsSync } from "node:fs";
import { createClient, type SignedClient } from "../../../../sdk/src/client/create-client.js";
import { HostServiceService, VmState, type VmEvent } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { AgentAreaContext, Running } from "../../processes/area.js";
import type { ControlPlane } from "./control-plane.js";

/** Events kept for the server while it cannot be reached; beyond that the instance list still tells it. */
const MAX_PENDING_EVENTS = 1000;

function totalResources(dir: string) {
  let diskGib = 0;
  try {
    const s = statfsSync(dir);
    diskGib = Math.floor((s.blocks * s.bsize) / 1024 ** 3);
  } catch {
    // Unknown disk: schedule on CPU and memory only.
  }
  return { vcpus: os.cpus().length, memoryMib: Math.floor(os.totalmem() / 1024 ** 2), diskGib };
}

/** Events the server must hear about because it did not cause them. */
const unsolicited = (e: VmEvent) => e.initiator === "guest" || e.initiator === "hypervisor" || e.initiator.startsWith("host:");

export interface HostRegistrationHandle extends Running {
  /** One last heartbeat marked final (the server follows it before answering); no beat after it. */
  finalBeat(): Promise<void>;
}

export async function startHostRegistration(ctx: AgentAreaContext, cp: ControlPlane, region = ""): Promise<HostRegistrationHandle> {
  const client: SignedClient<typeof HostServiceService> = createClient(HostServiceService, ctx.serverAddress, {
    key: ctx.signingKey,
    certificate: ctx.hostCertificate,
    credentials: ctx.serverCredentials,
  });
  const load = () => os.loadavg()[0]! / Math.max(1, os.cpus().length);
  const running = () => cp.list().filter((i) => i.state === VmState.VM_STATE_RUNNING || i.state === VmState.VM_STATE_PAUSED).length;
  let latencyMs = 0;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const pending: VmEvent[] = [];
  const watching = new AbortController();

  const register = async () => {
    const t0 = performance.now();
    const res = await client.registerHost({
      requestId: `register-${ctx.hostId}-${Date.now()}`,
      capacity: { hostId: ctx.hostId, region, total: totalResources(ctx.stateDir), load: load(), instanceCount: running(), latencyMs, drivers: cp.capabilities().drivers },
    });
    latencyMs = performance.now() - t0;
    return Math.max(1, res.heartbeatIntervalSeconds || 10);
  };

  const beat = async (final = false) => {
    const t0 = performance.now();
    const events = pending.slice();
    const res = await client.heartbeat({ hostId: ctx.hostId, load: load(), instanceCount: running(), latencyMs, instances: cp.list(), drivers: cp.capabilities().drivers, events, final });
    latencyMs = performance.now() - t0;
    // Only what the server answered for is dropped; later events wait for the next beat.
    pending.splice(0, events.length);
    for (const vmId of res.orphanedVmIds) {
      ctx.logger.warn({ vmId }, "the server no longer knows this VM; terminating it");
      await cp.terminate(vmId, "server:orphaned").catch((e: Error) => ctx.logger.error({ vmId, err: e.message }, "could not terminate an orphaned VM"));
    }
  };

  let intervalS = 10;
  try {
    intervalS = await register();
    ctx.logger.info({ intervalS, region }, "host registered with the scheduler");
  } catch (e) {
    ctx.logger.error({ err: (e as Error).message }, "host registration failed; retrying with the heartbeats");
  }
  let registered = latencyMs > 0;
  let inFlight: Promise<void> | undefined;
  let again = false;
  const tick = async () => {
    try {
      if (!registered) {
        intervalS = await register();
        registered = true;
      } else {
        await beat();
      }
    } catch (e) {
      ctx.logger.warn({ err: (e as Error).message }, "heartbeat failed");
      if ((e as { reason?: string }).reason === "HOST_NOT_REGISTERED") registered = false;
    }
  };
  /** Beats now (or once more right after the beat in flight), then resumes the regular interval. */
  const beatNow = () => {
    if (stopped) return;
    if (inFlight) {
      again = true;
      return;
    }
    if (timer) clearTimeout(timer);
    inFlight = tick().finally(() => {
      inFlight = undefined;
      if (again) {
        again = false;
        beatNow();
      } else schedule();
    });
  };
  const schedule = () => {
    if (stopped) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(beatNow, intervalS * 1000);
    timer.unref();
  };
  // A first beat at once: what the restart reconciliation found reaches the server now.
  if (registered) beatNow();
  else schedule();

  void (async () => {
    for await (const e of cp.watch(undefined, watching.signal)) {
      if (!unsolicited(e)) continue;
      pending.push(e);
      if (pending.length > MAX_PENDING_EVENTS) pending.splice(0, pending.length - MAX_PENDING_EVENTS);
      beatNow();
    }
  })();
  const offCapabilities = cp.onCapabilitiesChanged(beatNow);
  return {
    async finalBeat() {
      // Beats stop here: what the last one reports is what the server settles on. Bounded, so
      // an unreachable server cannot hold the shutdown.
      stopped = true;
      if (timer) clearTimeout(timer);
      await inFlight?.catch(() => undefined);
      // The control plane's events reach `pending` through an async iterator: let it catch up.
      await new Promise((r) => setImmediate(r));
      if (!registered) return;
      const last = beat(true);
      const bound = new Promise<void>((r) => setTimeout(r, 15_000).unref());
      await Promise.race([last, bound]).catch((e: Error) => ctx.logger.warn({ err: e.message }, "last heartbeat failed"));
    },
    async stop() {
      stopped = true;
      watching.abort();
      offCapabilities();
      if (timer) clearTimeout(timer);
      await inFlight?.catch(() => undefined);
      client.close();
    },
  };
}
