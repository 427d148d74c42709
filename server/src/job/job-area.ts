// The secure-jobs area plugged into the server process (seed 003): hosted storage
// (StorageService) and jobs with proof-of-possession sessions (JobService), over the shared
// SQL storage (migration 005) and blob store.
import { JobServiceService } from "../../../sdk/src/gen/trustplane/job/v1/job.js";
import { StorageServiceService } from "../../../sdk/src/gen/trustplane/job/v1/storage.js";
import type { ServerArea } from "../processes/area.js";
import { JobManager } from "./job-manager.js";
import { JobRepository } from "./job-repository.js";
import { createJobHandlers } from "./job-service.js";
import { SessionManager } from "./job-session.js";
import { ObjectRepository } from "./object-repository.js";
import { createStorageHandlers } from "./storage-service.js";

export const jobServerArea: ServerArea = {
  name: "job",
  async start(ctx) {
    const objects = new ObjectRepository(ctx.storage.db);
    const sessions = new SessionManager();
    const jobs = new JobManager({ storage: ctx.storage, blobs: ctx.blobs, objects, jobs: new JobRepository(ctx.storage.db), sessions, logger: ctx.logger });
    ctx.bind(StorageServiceService, createStorageHandlers({ storage: ctx.storage, blobs: ctx.blobs, objects }));
    ctx.bind(JobServiceService, createJobHandlers({ sessions, jobs }));
    return {
      async stop() {
        sessions.closeAll();
        await jobs.stop();
      },
    };
  },
};
