// JobVmService handlers (seed 003, the job VM's side of the service): called only by the job
// bridge of the host running the job's VM, with that host's key (JobManager checks the host of
// every call against the VM's). Behaviour lives in JobManager; this file maps requests to it.
import type { JobVmServiceService } from "../../../sdk/src/gen/trustplane/job/v1/job_vm.js";
import type { Handlers } from "../runtime/auth/service-binder.js";
import type { JobManager } from "./job-manager.js";

export function createJobVmHandlers(jobs: JobManager): Handlers<typeof JobVmServiceService> {
  return {
    async getJobSpec(req, ctx) {
      return { spec: await jobs.specFor(req.vmId, ctx.caller, ctx.signal) };
    },
    async requestDataKey(req, ctx) {
      return jobs.requestKey(req, ctx.caller);
    },
    async reportProgress(req, ctx) {
      return { cancelled: await jobs.progress(req.jobId, req.detail, ctx.caller) };
    },
    async reportResult(stream, ctx) {
      return { job: await jobs.result(stream, ctx.caller) };
    },
    async *readJobInput(req, ctx) {
      for await (const chunk of jobs.input(req.jobId, req.asked, ctx.caller, ctx.requestId)) yield { chunk };
    },
  };
}
