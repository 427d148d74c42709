// The secure-jobs area plugged into the server process (seed 003): hosted storage
// (StorageService), jobs with proof-of-possession sessions (JobService), and the job VMs'
// side (JobVmService, called by each host's job bridge), over the shared SQL storage
// (migration 005) and blob store. Job VMs come from VmService, called as the server.
import { createClient, type SignedClient } from "../../../sdk/src/client/create-client.js";
import { JobServiceService } from "../../../sdk/src/gen/trustplane/job/v1/job.js";
import { JobVmServiceService } from "../../../sdk/src/gen/trustplane/job/v1/job_vm.js";
import { StorageServiceService } from "../../../sdk/src/gen/trustplane/job/v1/storage.js";
import { VmServiceService } from "../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { ServerArea } from "../processes/area.js";
import { JobManager } from "./job-manager.js";
import { JobRepository } from "./job-repository.js";
import { createJobHandlers } from "./job-service.js";
import { SessionManager } from "./job-session.js";
import { ObjectRepository } from "./object-repository.js";
import { createStorageHandlers } from "./storage-service.js";
import { createJobVmHandlers } from "./job-vm-service.js";
import { VmServiceJobVms } from "./job-vm-provisioner.js";

export const jobServerArea: ServerArea = {
  name: "job",
  async start(ctx) {
    const objects = new ObjectRepository(ctx.storage.db);
    const sessions = new SessionManager();
    // The server's address is known once it listens, after the areas started.
    let vmClient: SignedClient<typeof VmServiceService> | undefined;
    const vms = new VmServiceJobVms(() => (vmClient ??= createClient(VmServiceService, ctx.address(), { key: ctx.serviceKey })));
    const jobs = new JobManager({ storage: ctx.storage, blobs: ctx.blobs, objects, jobs: new JobRepository(ctx.storage.db), sessions, vms, logger: ctx.logger });
    sessions.onClosed((sessionId) => jobs.sessionClosed(sessionId));
    ctx.bind(StorageServiceService, createStorageHandlers({ storage: ctx.storage, blobs: ctx.blobs, objects }));
    ctx.bind(JobServiceService, createJobHandlers({ sessions, jobs }));
    ctx.bind(JobVmServiceService, createJobVmHandlers(jobs));
    return {
      async stop() {
        await jobs.stop();
        sessions.closeAll();
        vmClient?.close();
      },
    };
  },
};
