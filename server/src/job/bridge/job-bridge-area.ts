// The secure-jobs area plugged into the agent process (seed 003): bundles the job runner,
// and offers the VM control plane guest support for `job-runner` VMs — a host channel served
// by the job bridge, which speaks for the runner to the server's JobVmService as this host.
import path from "node:path";
import { createClient } from "../../../../sdk/src/client/create-client.js";
import { JobVmServiceService } from "../../../../sdk/src/gen/trustplane/job/v1/job_vm.js";
import type { AgentArea } from "../../processes/area.js";
import { controlPlaneFor } from "../../vm/agent/vm-agent-area.js";
import { JOB_RUNNER_IMAGE, JobBridge } from "./job-bridge.js";
import { buildRunnerBundle } from "./runner-bundle.js";

const bridges = new Map<string, JobBridge>();

/** The job bridge of the agent for `hostId` (tests put it back after standing in for it). */
export function jobAgentAreaBridgeFor(hostId: string): JobBridge | undefined {
  return bridges.get(hostId);
}

export const jobAgentArea: AgentArea = {
  name: "job",
  async start(ctx) {
    const cp = controlPlaneFor(ctx.hostId);
    if (!cp) {
      ctx.logger.warn("no VM control plane on this agent: job VMs cannot run here");
      return;
    }
    const bundle = await buildRunnerBundle(path.join(ctx.stateDir, "job-runner"));
    // Job input arrives as a server stream: a 16 MiB receive window instead of HTTP/2's 64 KiB
    // default keeps it flowing while this agent's event loop is busy.
    const client = createClient(JobVmServiceService, ctx.serverAddress, {
      key: ctx.signingKey,
      certificate: ctx.hostCertificate,
      credentials: ctx.serverCredentials,
      channelOptions: { "grpc-node.flow_control_window": 16 * 1024 * 1024 },
    });
    const bridge = new JobBridge({
      hostId: ctx.hostId,
      signingKey: ctx.signingKey,
      hostCertificate: ctx.hostCertificate,
      client,
      bundle,
      logger: ctx.logger,
      terminate: async (vmId) => void (await cp.terminate(vmId, "agent:job-bridge-stopping")),
    });
    cp.provideGuest(JOB_RUNNER_IMAGE, bridge);
    bridges.set(ctx.hostId, bridge);
    ctx.logger.info({ runner: path.basename(bundle.file) }, "job bridge ready");
    return {
      async stop() {
        bridges.delete(ctx.hostId);
        await bridge.stop();
        client.close();
      },
    };
  },
};
