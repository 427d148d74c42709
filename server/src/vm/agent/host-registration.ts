// The agent's side of the host inventory: register this host's capacity and capability matrix
// (read off the drivers) once, then heartbeat with load, running instances and the measured
// round trip; VMs the server reports as orphaned are terminated, so nothing runs unaccounted.
import os from "node:os";
import { statfsSync } from "node:fs";
import { createClient, type SignedClient } from "../../../../sdk/src/client/create-client.js";
import { HostServiceService, VmState } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { AgentAreaContext, Running } from "../../processes/area.js";
import type { ControlPlane } from "./control-plane.js";

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

export async function startHostRegistration(ctx: AgentAreaContext, cp: ControlPlane, region = ""): Promise<Running> {
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

  const register = async () => {
    const t0 = performance.now();
    const res = await client.registerHost({
      requestId: `register-${ctx.hostId}-${Date.now()}`,
      capacity: { hostId: ctx.hostId, region, total: totalResources(ctx.stateDir), load: load(), instanceCount: running(), latencyMs, drivers: cp.capabilities().drivers },
    });
    latencyMs = performance.now() - t0;
    return Math.max(1, res.heartbeatIntervalSeconds || 10);
  };

  const beat = async () => {
    const t0 = performance.now();
    const res = await client.heartbeat({ hostId: ctx.hostId, load: load(), instanceCount: running(), latencyMs, instances: cp.list(), drivers: cp.capabilities().drivers });
    latencyMs = performance.now() - t0;
    for (const vmId of res.orphanedVmIds) {
      ctx.logger.warn({ vmId }, "the server no longer knows this VM; terminating it");
      await cp.terminate(vmId, "server:orphaned").catch((e: Error) => ctx.logger.error({ vmId, err: e.message }, "could not terminate an orphaned VM"));
    }
  };

  let intervalS = 10;
  try {
    intervalS = await register();
    ctx.logger.info({ intervalS }, "host registered with the scheduler");
  } catch (e) {
    ctx.logger.error({ err: (e as Error).message }, "host registration failed; retrying with the heartbeats");
  }
  let registered = latencyMs > 0;
  const loop = () => {
    timer = setTimeout(async () => {
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
      if (!stopped) loop();
    }, intervalS * 1000);
    timer.unref();
  };
  loop();
  return {
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      client.close();
    },
  };
}
