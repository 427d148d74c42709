// JobService handlers (seed 003): OpenSession (proof-of-possession session stream), CreateJobVm,
// SubmitJob, GetJob, WatchJob, CancelJob and SendJobInput (data straight to the job VM).
// Behaviour lives in SessionManager and JobManager; this file maps requests to them.
import { TrustplaneError } from "../../../sdk/src/errors.js";
import type { JobServiceService } from "../../../sdk/src/gen/trustplane/job/v1/job.js";
import { messageAuthenticated, type Handlers } from "../runtime/auth/service-binder.js";
import type { JobManager } from "./job-manager.js";
import type { SessionManager } from "./job-session.js";

export function createJobHandlers(deps: { sessions: SessionManager; jobs: JobManager }): Handlers<typeof JobServiceService> {
  const { sessions, jobs } = deps;
  return {
    // Every message after the handshake is a frame sealed under the session's keys.
    openSession: messageAuthenticated((stream, ctx) => sessions.open(stream, ctx)),
    async createJobVm(req, ctx) {
      return { jobVm: await jobs.createJobVm(req, ctx.caller, ctx.requestId) };
    },
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
    async sendJobInput(stream, ctx) {
      const it = stream[Symbol.asyncIterator]();
      const first = await it.next();
      const header = first.done ? undefined : first.value.header;
      if (!header) throw new TrustplaneError("INVALID_ARGUMENT", "INPUT_HEADER_REQUIRED", "the first SendJobInput message must be the header (job_id)", "header");
      const chunks = (async function* () {
        for (let n = await it.next(); !n.done; n = await it.next()) {
          if (n.value.header) throw new TrustplaneError("INVALID_ARGUMENT", "INPUT_HEADER_REPEATED", "only the first SendJobInput message may be a header", "header");
          if (n.value.chunk) yield n.value.chunk;
        }
      })();
      return { size: await jobs.sendInput(header.jobId, chunks, ctx.caller) };
    },
  };
}
