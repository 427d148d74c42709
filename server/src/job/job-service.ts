// JobService handlers (seed 003): OpenSession (proof-of-possession session stream), SubmitJob,
// GetJob, WatchJob, CancelJob. Behaviour lives in SessionManager and JobManager; this file
// maps requests to them. CreateJobVm is not offered: SubmitJob starts one job VM per job.
import type { JobServiceService } from "../../../sdk/src/gen/trustplane/job/v1/job.js";
import type { Handlers } from "../runtime/auth/service-binder.js";
import type { JobManager } from "./job-manager.js";
import type { SessionManager } from "./job-session.js";

export function createJobHandlers(deps: { sessions: SessionManager; jobs: JobManager }): Partial<Handlers<typeof JobServiceService>> {
  const { sessions, jobs } = deps;
  return {
    openSession: (stream, ctx) => sessions.open(stream, ctx),
    async submitJob(req, ctx) {
      return { job: await jobs.submit(req, ctx.caller, ctx.requestId) };
    },
    async getJob(req, ctx) {
      return { job: await jobs.get(req.jobId, ctx.caller) };
    },
    watchJob: (req, ctx) => jobs.watch(req.jobId, ctx.caller),
    async cancelJob(req, ctx) {
      return { job: await jobs.cancel(req.jobId, ctx.caller) };
    },
  };
}
