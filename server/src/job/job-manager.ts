// Jobs end to end on the service side (seed 003): validates a submission against the caller's
// session and data, gets the job a VM from the VM area (job-vm-provisioner.ts: the scheduler's
// claim is the admission control), then serves that VM's job bridge — the spec, the job's own
// input only, the key request relayed over the session to the client's key holder, the
// encrypted result — and terminates the VM when the job ends, fails, times out or is
// cancelled. The service holds ciphertext and sealed keys only.
import { createHash, randomUUID } from "node:crypto";
import { TrustplaneError } from "../../../sdk/src/errors.js";
import { Job, JobState, ResultMode, type CreateJobVmRequest, type JobEvent, type JobLimits, type JobVm, type SubmitJobRequest } from "../../../sdk/src/gen/trustplane/job/v1/job.js";
import type { JobSpec, ReportResultRequest, RequestDataKeyRequest, RequestDataKeyResponse } from "../../../sdk/src/gen/trustplane/job/v1/job_vm.js";
import type { ObjectRef } from "../../../sdk/src/gen/trustplane/job/v1/storage.js";
import { VmState } from "../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { Caller } from "../runtime/auth/caller.js";
import type { Logger } from "../runtime/logger.js";
import type { BlobStore } from "../runtime/storage/blob-store.js";
import type { Storage } from "../runtime/storage/storage.js";
import { AsyncChannel } from "./async-channel.js";
import { BoundedPipe } from "./bounded-pipe.js";
import type { JobRepository } from "./job-repository.js";
import type { JobSession, SessionManager } from "./job-session.js";
import { checkJobHypervisor, type JobVms } from "./job-vm-provisioner.js";
import type { ObjectRepository } from "./object-repository.js";
import { MAX_OBJECT_BYTES, notFound, objectRef } from "./storage-service.js";
import { checkObjectName, checkTenantAccess } from "./tenant-access.js";

export const JOB_DEFAULTS = { memoryBytes: 256 * 1024 * 1024, wallClockMs: 60_000 };
export const JOB_MAXIMA = { memoryBytes: 2 * 1024 ** 3, wallClockMs: 3_600_000, codeBytes: 16 * 1024 * 1024, inlineBytes: 3 * 1024 * 1024 };
/** A job VM must be running within this long of the submission. */
const PROVISION_TIMEOUT_MS = 60_000;
/** After the wall clock (from the key release), the job VM gets this long before it is terminated. */
const KILL_GRACE_MS = 10_000;
/** An unused job VM from CreateJobVm is terminated after this long. */
const UNUSED_JOB_VM_MS = 10 * 60_000;
/** Bytes per ReadJobInput chunk. */
const INPUT_CHUNK = 1024 * 1024;
/** Chunks of a streamed input the service holds at most (bounded relay). */
const STREAM_PIPE_CHUNKS = 4;

/** The data gate: a job VM may read only the input its job was submitted with. */
export function isOwnInput(job: Pick<Job, "data">, asked: { tenant: string; name: string } | { inline: true }): boolean {
  if (!job.data) return "inline" in asked;
  return "tenant" in asked && asked.tenant === job.data.tenant && asked.name === job.data.name;
}

const TERMINAL = new Set([JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED]);

type Input =
  | { kind: "stored" }
  | { kind: "inline"; bytes: Uint8Array }
  | { kind: "streamed"; size: number; pipe: BoundedPipe<Uint8Array>; verified: Promise<void>; settle: (e?: Error) => void; sending: boolean };

interface ActiveJob {
  job: Job;
  code: Uint8Array;
  otk: Buffer;
  otkSha256: Buffer;
  input: Input;
  resultTenant: string;
  resultName: string;
  session: JobSession;
  watchers: Set<AsyncChannel<{ event: JobEvent | undefined; job: Job | undefined }>>;
  /** The job VM's host, checked against the caller of every JobVmService call. */
  hostId?: string;
  specServed: boolean;
  keyRequested: boolean;
  inputRead: boolean;
  resultReported: boolean;
  cancelled: boolean;
  timers: NodeJS.Timeout[];
  /** Resolves when the job VM is terminated (after the job ended). */
  vmGone?: Promise<void>;
}

interface JobVmRecord {
  jobVm: JobVm;
  owner: string;
  limits: { memoryBytes: number; wallClockMs: number };
  jobId?: string;
  timer?: NodeJS.Timeout;
}

export interface JobManagerDeps {
  storage: Storage;
  blobs: BlobStore;
  objects: ObjectRepository;
  jobs: JobRepository;
  sessions: SessionManager;
  vms: JobVms;
  logger: Logger;
}

function hostOf(caller: Pick<Caller, "principal">): string | undefined {
  return caller.principal.startsWith("host:") ? caller.principal.slice(5) : undefined;
}

export class JobManager {
  private readonly active = new Map<string, ActiveJob>();
  private readonly byVm = new Map<string, ActiveJob>();
  private readonly jobVms = new Map<string, JobVmRecord>();
  private readonly specWaiters = new Map<string, () => void>();
  private readonly terminations = new Set<Promise<void>>();
  private stopped = false;

  constructor(private readonly deps: JobManagerDeps) {}

  private sessionOf(sessionId: string, caller: Caller): JobSession {
    const session = this.deps.sessions.get(sessionId);
    if (!session) throw new TrustplaneError("FAILED_PRECONDITION", "SESSION_UNKNOWN", "session_id: no established session with this id; open a session (OpenSession) and answer its challenge first", "session_id");
    if (session.principal !== caller.principal) throw new TrustplaneError("PERMISSION_DENIED", "SESSION_NOT_YOURS", "session_id: the session belongs to another principal", "session_id");
    return session;
  }

  private limitsOf(l: JobLimits | undefined): { memoryBytes: number; wallClockMs: number } {
    const limits = { memoryBytes: Number(l?.memoryBytes || JOB_DEFAULTS.memoryBytes), wallClockMs: l?.wallClockMs || JOB_DEFAULTS.wallClockMs };
    if (limits.memoryBytes > JOB_MAXIMA.memoryBytes || limits.wallClockMs > JOB_MAXIMA.wallClockMs) {
      throw new TrustplaneError("INVALID_ARGUMENT", "LIMITS_TOO_HIGH", `limits: at most ${JOB_MAXIMA.memoryBytes} bytes of memory and ${JOB_MAXIMA.wallClockMs} ms`, "limits");
    }
    return limits;
  }

  /** A job VM for one coming job of the session (SubmitJob with job_vm_id uses it). */
  async createJobVm(req: CreateJobVmRequest, caller: Caller, requestId: string): Promise<JobVm> {
    const session = this.sessionOf(req.sessionId, caller);
    checkJobHypervisor(req.hypervisor, "hypervisor");
    const limits = this.limitsOf(req.limits);
    const jobVmId = `jvm_${randomUUID()}`;
    const vm = await this.deps.vms.create({ name: `jvm-${jobVmId.slice(4)}`, memoryBytes: limits.memoryBytes, requestId: `jobvm-${jobVmId}` });
    const jobVm: JobVm = { jobVmId, sessionId: session.id, vmId: vm.vmId, state: VmState[vm.state]?.replace("VM_STATE_", "") ?? "", createdAtMs: Date.now() };
    const rec: JobVmRecord = { jobVm, owner: caller.principal, limits };
    // A job VM nobody uses does not hold its host's capacity for long.
    rec.timer = setTimeout(() => {
      if (rec.jobId) return;
      this.jobVms.delete(jobVmId);
      this.terminateVm(vm.vmId);
    }, UNUSED_JOB_VM_MS);
    rec.timer.unref();
    this.jobVms.set(jobVmId, rec);
    await this.deps.storage.audit.append({ principal: caller.principal, action: "job.create_vm", target: jobVmId, outcome: "ok", requestId, detail: { vmId: vm.vmId, hostId: vm.hostId } });
    return { ...jobVm };
  }

  async submit(req: SubmitJobRequest, caller: Caller, requestId: string): Promise<Job> {
    const session = this.sessionOf(req.sessionId, caller);
    checkJobHypervisor(req.hypervisor, "hypervisor");
    const code = await this.codeOf(req, caller);
    const digest = createHash("sha256").update(code).digest();
    if (req.codeSha256.length !== 32 || !digest.equals(req.codeSha256)) throw new TrustplaneError("INVALID_ARGUMENT", "CODE_DIGEST_MISMATCH", "code_sha256: must be the SHA-256 of the module", "code_sha256");
    if (req.otk.length !== 32) throw new TrustplaneError("INVALID_ARGUMENT", "OTK_INVALID", "otk: a one-time job key is 32 random bytes from your key holder", "otk");
    if (req.dekId === "") throw new TrustplaneError("INVALID_ARGUMENT", "DEK_ID_REQUIRED", "dek_id: name the DEK the data was encrypted under", "dek_id");
    const limits = this.limitsOf(req.limits);
    let data: ObjectRef | undefined;
    let input: Input;
    const given = [req.stored !== undefined, (req.inlineCiphertext?.length ?? 0) > 0, req.streamed !== undefined].filter(Boolean).length;
    if (given > 1) throw new TrustplaneError("INVALID_ARGUMENT", "DATA_AMBIGUOUS", "data: give exactly one of stored, inline_ciphertext and streamed", "data");
    if (req.stored) {
      // A job reads only data its submitter may read, pinned to the digest seen now.
      checkTenantAccess(caller, req.stored.tenant);
      const o = await this.deps.objects.get(req.stored.tenant, req.stored.name);
      if (!o) throw notFound(req.stored.tenant, req.stored.name);
      if (req.stored.digest !== "" && req.stored.digest !== o.digest) throw new TrustplaneError("FAILED_PRECONDITION", "OBJECT_CHANGED", "stored.digest: the object's content changed since you named it", "stored.digest");
      data = objectRef(o);
      input = { kind: "stored" };
    } else if (req.inlineCiphertext !== undefined && req.inlineCiphertext.length > 0) {
      if (req.inlineCiphertext.length > JOB_MAXIMA.inlineBytes) throw new TrustplaneError("INVALID_ARGUMENT", "INLINE_TOO_LARGE", `inline_ciphertext: at most ${JOB_MAXIMA.inlineBytes} bytes; stream larger data (streamed + SendJobInput) or upload it to storage`, "inline_ciphertext");
      input = { kind: "inline", bytes: req.inlineCiphertext };
    } else if (req.streamed) {
      const size = Number(req.streamed.size);
      if (!Number.isSafeInteger(size) || size < 1 || size > MAX_OBJECT_BYTES) throw new TrustplaneError("INVALID_ARGUMENT", "STREAM_SIZE_INVALID", `streamed.size: declare the ciphertext's size (1..${MAX_OBJECT_BYTES} bytes)`, "streamed.size");
      let settle!: (e?: Error) => void;
      const verified = new Promise<void>((resolve, reject) => (settle = (e) => (e ? reject(e) : resolve())));
      verified.catch(() => undefined);
      input = { kind: "streamed", size, pipe: new BoundedPipe<Uint8Array>(STREAM_PIPE_CHUNKS), verified, settle, sending: false };
    } else {
      throw new TrustplaneError("INVALID_ARGUMENT", "DATA_REQUIRED", "data: give a stored object, inline ciphertext or a streamed input", "data");
    }
    const resultMode = req.resultMode === ResultMode.RESULT_MODE_RETURNED ? ResultMode.RESULT_MODE_RETURNED : ResultMode.RESULT_MODE_STORED;
    const jobId = `job_${randomUUID()}`;
    const resultTenant = data?.tenant ?? caller.principal;
    const resultName = req.resultName || `results/${jobId}`;
    if (resultMode === ResultMode.RESULT_MODE_STORED) {
      checkTenantAccess(caller, resultTenant);
      checkObjectName(resultName);
    }
    // The job VM: one from CreateJobVm, or a fresh one; the scheduler refuses when no host has room.
    let vmId: string;
    let reserved: JobVmRecord | undefined;
    if (req.jobVmId) {
      reserved = this.jobVms.get(req.jobVmId);
      if (!reserved || reserved.owner !== caller.principal || reserved.jobVm.sessionId !== session.id) throw new TrustplaneError("NOT_FOUND", "JOB_VM_NOT_FOUND", `job_vm_id: no job VM ${JSON.stringify(req.jobVmId)} of this session`, "job_vm_id");
      if (reserved.jobId) throw new TrustplaneError("FAILED_PRECONDITION", "JOB_VM_USED", "job_vm_id: a job VM runs one job; create another", "job_vm_id");
      if (limits.memoryBytes > reserved.limits.memoryBytes || limits.wallClockMs > reserved.limits.wallClockMs) throw new TrustplaneError("INVALID_ARGUMENT", "LIMITS_TOO_HIGH", "limits: above the job VM's limits", "limits");
      vmId = reserved.jobVm.vmId;
    } else {
      vmId = (await this.deps.vms.create({ name: `job-${jobId.slice(4)}`, memoryBytes: limits.memoryBytes, requestId: `jobvm-${jobId}` })).vmId;
    }
    const now = Date.now();
    const job = Job.fromPartial({
      jobId,
      sessionId: session.id,
      owner: caller.principal,
      state: JobState.JOB_STATE_PROVISIONING,
      codeSha256: digest,
      data,
      resultMode,
      limits,
      dekId: req.dekId,
      vmId,
      createdAtMs: now,
      updatedAtMs: now,
    });
    const otk = Buffer.from(req.otk);
    const a: ActiveJob = {
      job,
      code,
      otk,
      otkSha256: createHash("sha256").update(otk).digest(),
      input,
      resultTenant,
      resultName,
      session,
      watchers: new Set(),
      specServed: false,
      keyRequested: false,
      inputRead: false,
      resultReported: false,
      cancelled: false,
      timers: [],
    };
    try {
      await this.deps.jobs.save(job);
      await this.deps.storage.audit.append({ principal: caller.principal, action: "job.submit", target: jobId, outcome: "ok", requestId, detail: { codeSha256: digest.toString("hex"), data: data ? `${data.tenant}/${data.name}` : input.kind, vmId } });
    } catch (e) {
      if (!reserved) this.terminateVm(vmId);
      throw e;
    }
    if (reserved) {
      reserved.jobId = jobId;
      clearTimeout(reserved.timer);
    }
    this.active.set(jobId, a);
    this.byVm.set(vmId, a);
    this.specWaiters.get(vmId)?.();
    // Bounded in time end to end: a VM that never comes up, a key holder that never answers,
    // a runner that never reports — each ends the job (and its VM) with a reason.
    const overall = PROVISION_TIMEOUT_MS + 120_000 + limits.wallClockMs + KILL_GRACE_MS;
    this.timer(a, overall, () => this.fail(a, "JOB_TIMEOUT", `the job did not finish within ${overall} ms`));
    void this.watchProvisioning(a);
    return Job.fromPartial(job);
  }

  private async codeOf(req: SubmitJobRequest, caller: Caller): Promise<Uint8Array> {
    if (req.codeObject && req.code.length > 0) throw new TrustplaneError("INVALID_ARGUMENT", "CODE_AMBIGUOUS", "code: give the module bytes or code_object, not both", "code");
    if (req.codeObject) {
      checkTenantAccess(caller, req.codeObject.tenant);
      const o = await this.deps.objects.get(req.codeObject.tenant, req.codeObject.name);
      if (!o) throw notFound(req.codeObject.tenant, req.codeObject.name);
      if (o.size < 1 || o.size > JOB_MAXIMA.codeBytes) throw new TrustplaneError("INVALID_ARGUMENT", "CODE_INVALID", `code_object: a module of 1..${JOB_MAXIMA.codeBytes} bytes`, "code_object");
      const pieces: Buffer[] = [];
      for await (const p of this.deps.blobs.get(o.digest) as AsyncIterable<Buffer>) pieces.push(p);
      return Buffer.concat(pieces);
    }
    if (req.code.length === 0 || req.code.length > JOB_MAXIMA.codeBytes) throw new TrustplaneError("INVALID_ARGUMENT", "CODE_INVALID", `code: send a WebAssembly module of 1..${JOB_MAXIMA.codeBytes} bytes (or code_object)`, "code");
    return req.code;
  }

  private timer(a: ActiveJob, ms: number, fn: () => unknown): void {
    const t = setTimeout(() => void Promise.resolve(fn()).catch((e: Error) => this.deps.logger.error({ jobId: a.job.jobId, err: e.message }, "job timer failed")), ms);
    t.unref();
    a.timers.push(t);
  }

  /** Follows the job VM's bring-up until its runner fetches the job (or the VM fails). */
  private async watchProvisioning(a: ActiveJob): Promise<void> {
    const started = Date.now();
    while (!TERMINAL.has(a.job.state) && !a.specServed) {
      const vm = await this.deps.vms.get(a.job.vmId).catch(() => undefined);
      if (vm && (vm.state === VmState.VM_STATE_FAILED || vm.state === VmState.VM_STATE_TERMINATED)) {
        return this.fail(a, "JOB_VM_FAILED", `the job VM ${a.job.vmId} did not start: ${vm.failureReason || "no reason given"}`);
      }
      if (Date.now() - started > PROVISION_TIMEOUT_MS) return this.fail(a, "JOB_VM_TIMEOUT", `the job VM ${a.job.vmId} did not start within ${PROVISION_TIMEOUT_MS} ms`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async get(jobId: string, caller: Caller): Promise<Job> {
    const a = this.active.get(jobId);
    const job = a ? a.job : await this.deps.jobs.get(jobId);
    if (!job || job.owner !== caller.principal) throw new TrustplaneError("NOT_FOUND", "JOB_NOT_FOUND", `no job ${JSON.stringify(jobId)} of yours`, "job_id");
    return Job.fromPartial(job);
  }

  async *watch(jobId: string, caller: Caller): AsyncGenerator<{ event: JobEvent | undefined; job: Job | undefined }> {
    const job = await this.get(jobId, caller);
    yield { event: undefined, job };
    const a = this.active.get(jobId);
    if (!a || TERMINAL.has(a.job.state)) return;
    const ch = new AsyncChannel<{ event: JobEvent | undefined; job: Job | undefined }>();
    a.watchers.add(ch);
    try {
      yield* ch;
    } finally {
      a.watchers.delete(ch);
    }
  }

  async cancel(jobId: string, caller: Caller): Promise<Job> {
    const job = await this.get(jobId, caller);
    const a = this.active.get(jobId);
    if (a && !TERMINAL.has(a.job.state)) {
      a.cancelled = true;
      await this.setState(a, JobState.JOB_STATE_CANCELLED, "cancelled by the owner");
      return Job.fromPartial(a.job);
    }
    return job;
  }

  /** The session ended: its job VMs that never got a job hold no capacity any longer. */
  sessionClosed(sessionId: string): void {
    for (const [id, r] of this.jobVms) {
      if (r.jobVm.sessionId !== sessionId || r.jobId) continue;
      clearTimeout(r.timer);
      this.jobVms.delete(id);
      this.terminateVm(r.jobVm.vmId);
    }
  }

  /** Resolves once the job's VM is terminated (tests and shutdown wait on it). */
  async vmTerminated(jobId: string): Promise<void> {
    await this.active.get(jobId)?.vmGone;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const a of [...this.active.values()]) await this.fail(a, "SERVICE_STOPPING", "the job service is shutting down");
    for (const r of this.jobVms.values()) {
      clearTimeout(r.timer);
      if (!r.jobId) this.terminateVm(r.jobVm.vmId);
    }
    this.jobVms.clear();
    await Promise.race([Promise.allSettled([...this.terminations]), new Promise((r) => setTimeout(r, 5000).unref())]);
  }

  private terminateVm(vmId: string): Promise<void> {
    const p = (async () => {
      // A VM still coming up is terminated once its host has it (or it failed).
      for (let i = 0; i < 150; i++) {
        const vm = await this.deps.vms.get(vmId).catch(() => undefined);
        if (!vm || (vm.state !== VmState.VM_STATE_SCHEDULED && vm.state !== VmState.VM_STATE_STARTING && vm.state !== VmState.VM_STATE_PENDING)) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      await this.deps.vms.terminate(vmId);
    })().catch((e: Error) => this.deps.logger.error({ vmId, err: e.message }, "could not terminate a job VM"));
    this.terminations.add(p);
    void p.finally(() => this.terminations.delete(p));
    return p;
  }

  private async setState(a: ActiveJob, state: JobState, detail: string, progress = 0): Promise<void> {
    if (TERMINAL.has(a.job.state)) return;
    a.job.state = state;
    a.job.updatedAtMs = Date.now();
    if (state === JobState.JOB_STATE_FAILED) a.job.failureReason = detail;
    if (TERMINAL.has(state)) this.finish(a);
    await this.deps.jobs.save(a.job).catch((e: Error) => this.deps.logger.error({ jobId: a.job.jobId, err: e.message }, "failed to save a job"));
    const event: JobEvent = { jobId: a.job.jobId, state, detail, progress, timeMs: a.job.updatedAtMs };
    a.session.send({ jobEvent: event });
    for (const w of a.watchers) {
      w.push({ event, job: Job.fromPartial(a.job) });
      if (TERMINAL.has(state)) w.end();
    }
    if (TERMINAL.has(state)) {
      this.deps.logger.info({ jobId: a.job.jobId, owner: a.job.owner, state: JobState[state], resultBytes: a.job.resultSize, vmId: a.job.vmId }, "job finished");
      await this.deps.storage.audit
        .append({ principal: a.job.owner, action: "job.end", target: a.job.jobId, outcome: JobState[state] ?? String(state), requestId: a.job.jobId, detail: { vmId: a.job.vmId, reason: a.job.failureReason.split(":")[0] ?? "" } })
        .catch((e: Error) => this.deps.logger.error({ err: e.message }, "failed to audit a job's end"));
    }
  }

  /** The job ended: its keys are wiped, its input relay closed and its VM terminated. */
  private finish(a: ActiveJob): void {
    for (const t of a.timers) clearTimeout(t);
    a.otk.fill(0);
    if (a.input.kind === "streamed") {
      a.input.pipe.fail(new TrustplaneError("FAILED_PRECONDITION", "JOB_ENDED", `job ${a.job.jobId} ended`));
      a.input.settle(new TrustplaneError("FAILED_PRECONDITION", "JOB_ENDED", `job ${a.job.jobId} ended`));
    }
    this.byVm.delete(a.job.vmId);
    for (const [id, r] of this.jobVms) if (r.jobId === a.job.jobId) this.jobVms.delete(id);
    a.vmGone = this.terminateVm(a.job.vmId);
    void a.vmGone.finally(() => this.active.delete(a.job.jobId));
  }

  private async fail(a: ActiveJob, reason: string, detail: string): Promise<void> {
    if (TERMINAL.has(a.job.state)) return;
    this.deps.logger.info({ jobId: a.job.jobId, reason }, "job failed");
    await this.setState(a, JobState.JOB_STATE_FAILED, `${reason}: ${detail}`);
  }

  // ---- JobVmService: the job bridge of the VM's host, speaking for the runner ----

  /** The live job whose VM runs on the calling host; anything else is refused alike. */
  private forHost(jobId: string, caller: Caller): ActiveJob {
    const a = this.active.get(jobId);
    const host = hostOf(caller);
    if (!a || !host || a.hostId !== host || TERMINAL.has(a.job.state)) {
      throw new TrustplaneError("PERMISSION_DENIED", "JOB_NOT_ON_HOST", `no running job ${JSON.stringify(jobId)} has its VM on ${caller.principal}`, "job_id");
    }
    return a;
  }

  /** GetJobSpec: the job assigned to this host's VM, waiting for one (CreateJobVm) until `signal` ends. */
  async specFor(vmId: string, caller: Caller, signal: AbortSignal): Promise<JobSpec> {
    const host = hostOf(caller);
    const vm = vmId ? await this.deps.vms.get(vmId) : undefined;
    if (!host || !vm || vm.hostId !== host) throw new TrustplaneError("PERMISSION_DENIED", "JOB_VM_NOT_ON_HOST", `VM ${JSON.stringify(vmId)} is not a job VM on ${caller.principal}`, "vm_id");
    while (!this.byVm.has(vmId)) {
      if (signal.aborted || this.stopped) throw new TrustplaneError("DEADLINE_EXCEEDED", "NO_JOB", `no job was assigned to VM ${vmId}`);
      await new Promise<void>((resolve) => {
        const done = () => {
          this.specWaiters.delete(vmId);
          signal.removeEventListener("abort", done);
          resolve();
        };
        this.specWaiters.set(vmId, done);
        signal.addEventListener("abort", done, { once: true });
      });
    }
    const a = this.byVm.get(vmId)!;
    if (a.specServed) throw new TrustplaneError("FAILED_PRECONDITION", "SPEC_ALREADY_SERVED", `job ${a.job.jobId} was already handed to its runner (one runner per job)`, "vm_id");
    a.specServed = true;
    a.hostId = host;
    const { job } = a;
    return {
      jobId: job.jobId,
      module: a.code,
      codeSha256: job.codeSha256,
      stored: job.data,
      resultMode: job.resultMode,
      limits: job.limits,
      resultTenant: a.resultTenant,
      resultName: a.resultName,
      dekId: job.dekId,
      otkSha256: a.otkSha256,
      streamed: a.input.kind !== "stored",
      vmId,
    };
  }

  /** ReadJobInput: only the job's own input, by the digest pinned at submission. */
  async *input(jobId: string, asked: ObjectRef | undefined, caller: Caller, requestId: string): AsyncGenerator<Uint8Array> {
    const a = this.forHost(jobId, caller);
    const want = asked && asked.tenant !== "" ? { tenant: asked.tenant, name: asked.name } : ({ inline: true } as const);
    if (!isOwnInput(a.job, want)) {
      await this.deps.storage.audit.append({ principal: caller.principal, action: "job.input", target: jobId, outcome: "DATA_REFUSED", requestId, detail: { asked: "tenant" in want ? `${want.tenant}/${want.name}` : "inline" } });
      await this.fail(a, "DATA_REFUSED", "the job VM asked for data that is not this job's input");
      throw new TrustplaneError("PERMISSION_DENIED", "DATA_REFUSED", "a job VM may read only its own job's input", "asked");
    }
    if (!a.job.state || a.job.state !== JobState.JOB_STATE_RUNNING) throw new TrustplaneError("FAILED_PRECONDITION", "KEY_NOT_RELEASED", "the input is served after the key holder released the data key", "job_id");
    if (a.inputRead) throw new TrustplaneError("FAILED_PRECONDITION", "INPUT_ALREADY_READ", "a job's input is read once", "job_id");
    a.inputRead = true;
    if (a.input.kind === "inline") {
      for (let off = 0; off < a.input.bytes.length; off += INPUT_CHUNK) yield a.input.bytes.subarray(off, off + INPUT_CHUNK);
    } else if (a.input.kind === "streamed") {
      yield* a.input.pipe;
    } else {
      // File reads come in 64 KiB; they go out in ~1 MiB messages (a sixteenth of the messages,
      // each framed, signed-stream-free and flow-controlled once).
      let batch: Buffer[] = [];
      let batched = 0;
      for await (const piece of this.deps.blobs.get(a.job.data!.digest) as AsyncIterable<Buffer>) {
        batch.push(piece);
        batched += piece.length;
        if (batched >= INPUT_CHUNK) {
          yield batch.length === 1 ? batch[0]! : Buffer.concat(batch, batched);
          batch = [];
          batched = 0;
        }
      }
      if (batched > 0) yield Buffer.concat(batch, batched);
    }
  }

  /** SendJobInput: the client's ciphertext relayed to the job VM through a bounded pipe. */
  async sendInput(jobId: string, chunks: AsyncIterable<Uint8Array>, caller: Caller): Promise<number> {
    const a = this.active.get(jobId);
    if (!a || a.job.owner !== caller.principal) throw new TrustplaneError("NOT_FOUND", "JOB_NOT_FOUND", `no running job ${JSON.stringify(jobId)} of yours`, "job_id");
    const input = a.input;
    if (input.kind !== "streamed") throw new TrustplaneError("FAILED_PRECONDITION", "INPUT_NOT_STREAMED", "the job was not submitted with streamed input", "job_id");
    if (input.sending) throw new TrustplaneError("FAILED_PRECONDITION", "INPUT_ALREADY_SENT", "the job's input is already being sent", "job_id");
    input.sending = true;
    let sent = 0;
    try {
      for await (const c of chunks) {
        sent += c.length;
        if (sent > input.size) throw new TrustplaneError("INVALID_ARGUMENT", "STREAM_SIZE_MISMATCH", `the stream is longer than the declared ${input.size} bytes`, "chunk");
        await input.pipe.write(c);
      }
      // Reached only after the binder verified the whole stream against its signed digest.
      if (sent !== input.size) throw new TrustplaneError("INVALID_ARGUMENT", "STREAM_SIZE_MISMATCH", `the stream had ${sent} bytes, not the declared ${input.size}`, "chunk");
      input.pipe.end();
      input.settle();
      return sent;
    } catch (e) {
      input.pipe.fail(e as Error);
      input.settle(e as Error);
      await this.fail(a, "INPUT_STREAM_FAILED", (e as Error).message);
      throw e;
    }
  }

  /** RequestDataKey: relays the attested key request over the session to the key holder. */
  async requestKey(req: RequestDataKeyRequest, caller: Caller): Promise<RequestDataKeyResponse> {
    const a = this.forHost(req.jobId, caller);
    const { job } = a;
    if (a.keyRequested) {
      await this.fail(a, "SECOND_KEY_REQUEST", "the job VM asked for the data key twice");
      throw new TrustplaneError("PERMISSION_DENIED", "SECOND_KEY_REQUEST", "a job VM asks for the data key once");
    }
    a.keyRequested = true;
    if (req.ephemeralPublicKey.length !== 32) throw new TrustplaneError("INVALID_ARGUMENT", "VM_KEY_INVALID", "ephemeral_public_key: a raw 32-byte X25519 key", "ephemeral_public_key");
    if (!req.hostAttestation) throw new TrustplaneError("INVALID_ARGUMENT", "ATTESTATION_MISSING", "host_attestation: the host must attest the job VM's key", "host_attestation");
    if (!Buffer.from(req.codeSha256).equals(Buffer.from(job.codeSha256))) throw new TrustplaneError("INVALID_ARGUMENT", "CODE_DIGEST_MISMATCH", "code_sha256: not the job's code", "code_sha256");
    await this.setState(a, JobState.JOB_STATE_AWAITING_KEY, "waiting for the client's key holder");
    const answer = await a.session.requestKey({
      jobId: job.jobId,
      otk: a.otk,
      vmEphemeralPublicKey: req.ephemeralPublicKey,
      codeSha256: job.codeSha256,
      data: job.data ?? { tenant: "", name: "", digest: "", size: 0 },
      dekId: job.dekId,
      hostAttestation: req.hostAttestation,
    });
    if (answer.release && !TERMINAL.has(job.state)) {
      await this.setState(a, JobState.JOB_STATE_RUNNING, "the key holder released the data key; running the module");
      this.timer(a, job.limits!.wallClockMs + KILL_GRACE_MS, () => this.fail(a, "WALL_CLOCK_EXCEEDED", `the job VM outlived its wall-clock limit of ${job.limits!.wallClockMs} ms and was terminated`));
      return { enc: answer.release.enc, sealedDek: answer.release.sealedDek };
    }
    const reason = answer.denied?.reason || "KEY_DENIED";
    if (reason === "OTK_REUSED" || reason.startsWith("ATTESTATION_")) {
      const detail = reason === "OTK_REUSED" ? "the key holder refused: this one-time job key was already used; the job is failed" : `the key holder refused the job VM's key (${reason}); the job is failed`;
      a.session.send({ securityEvent: { jobId: job.jobId, reason, detail, timeMs: Date.now() } });
      await this.deps.storage.audit.append({ principal: job.owner, action: "job.security_event", target: job.jobId, outcome: reason, requestId: job.jobId, detail: {} });
    }
    await this.fail(a, "KEY_DENIED", `the client's key holder refused to release the data key (${reason})`);
    throw new TrustplaneError("PERMISSION_DENIED", reason, `the key holder refused to release the data key (${reason})`);
  }

  /** ReportProgress: relayed as a JobEvent; answers whether the job was cancelled. */
  async progress(jobId: string, detail: string, caller: Caller): Promise<boolean> {
    const a = this.active.get(jobId);
    if (a?.cancelled) return true;
    this.forHost(jobId, caller);
    if (detail === "STORING") await this.setState(a!, JobState.JOB_STATE_STORING, "encrypting and storing the result");
    else {
      const bytes = Number(/^(\d+) bytes processed$/.exec(detail)?.[1] ?? 0);
      const total = a!.job.data?.size ?? (a!.input.kind === "inline" ? a!.input.bytes.length : a!.input.kind === "streamed" ? a!.input.size : 0);
      a!.session.send({ jobEvent: { jobId, state: JobState.JOB_STATE_RUNNING, detail: `${bytes} bytes processed`, progress: total > 0 ? Math.min(1, bytes / Number(total)) : 0, timeMs: Date.now() } });
    }
    return false;
  }

  /** ReportResult: the outcome, and the result's ciphertext stored or returned over the session. */
  async result(stream: AsyncIterable<ReportResultRequest>, caller: Caller): Promise<Job> {
    const it = stream[Symbol.asyncIterator]();
    const first = await it.next();
    const header = first.done ? undefined : first.value.header;
    if (!header) throw new TrustplaneError("INVALID_ARGUMENT", "RESULT_HEADER_REQUIRED", "the first ReportResult message must be the header", "header");
    const a = this.forHost(header.jobId, caller);
    const { job } = a;
    if (a.resultReported) throw new TrustplaneError("FAILED_PRECONDITION", "RESULT_ALREADY_REPORTED", "a job's result is reported once", "header");
    a.resultReported = true;
    if (header.state !== JobState.JOB_STATE_SUCCEEDED) {
      await this.fail(a, header.failureReason || "JOB_FAILED", header.detail || "the job VM reported a failure");
      return Job.fromPartial(job);
    }
    const size = Number(header.resultSize);
    const chunks = (async function* () {
      for (let n = await it.next(); !n.done; n = await it.next()) if (n.value.chunk) yield n.value.chunk;
    })();
    try {
      // A streamed input counts only once its signed digest verified.
      if (a.input.kind === "streamed") await a.input.verified;
      if (job.resultMode === ResultMode.RESULT_MODE_RETURNED) {
        let n = 0;
        for await (const c of chunks) {
          n += c.length;
          a.session.send({ result: { jobId: job.jobId, data: c, last: false } });
        }
        if (n !== size) throw new TrustplaneError("INVALID_ARGUMENT", "RESULT_SIZE_MISMATCH", `the result had ${n} bytes, not ${size}`);
        a.session.send({ result: { jobId: job.jobId, data: new Uint8Array(0), last: true } });
      } else {
        const info = await this.deps.blobs.put(chunks, { maxBytes: size });
        if (info.size !== size) throw new TrustplaneError("INVALID_ARGUMENT", "RESULT_SIZE_MISMATCH", `the result had ${info.size} bytes, not ${size}`);
        const record = { tenant: a.resultTenant, name: a.resultName, digest: info.digest, size: info.size, createdBy: job.owner, createdAtMs: Date.now() };
        if (!(await this.deps.objects.insert(record))) throw new TrustplaneError("ALREADY_EXISTS", "OBJECT_EXISTS", `result name ${a.resultName} already exists`);
        job.result = objectRef(record);
      }
      job.resultSize = size;
      const where = job.result ? `result stored as ${job.result.tenant}/${job.result.name}` : "result returned over the session";
      await this.setState(a, JobState.JOB_STATE_SUCCEEDED, `${where}; ${header.detail}`, 1);
    } catch (e) {
      await this.fail(a, e instanceof TrustplaneError ? e.reason : "RESULT_STORE_FAILED", (e as Error).message);
      throw e;
    }
    return Job.fromPartial(job);
  }
}
