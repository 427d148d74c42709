// Jobs end to end on the service side (seed 003): validates a submission against the caller's
// session and data, starts an untrusted runner (the job VM), relays its key request over the
// session to the client's key holder, feeds it only its own input ciphertext, and stores or
// returns the envelope-encrypted result. The service holds ciphertext and sealed keys only.
import { createHash, randomUUID } from "node:crypto";
import { TrustplaneError } from "../../../sdk/src/errors.js";
import { Job, JobState, ResultMode, type JobEvent, type SubmitJobRequest } from "../../../sdk/src/gen/trustplane/job/v1/job.js";
import type { ObjectRef } from "../../../sdk/src/gen/trustplane/job/v1/storage.js";
import type { Caller } from "../runtime/auth/caller.js";
import type { Logger } from "../runtime/logger.js";
import type { BlobStore } from "../runtime/storage/blob-store.js";
import type { Storage } from "../runtime/storage/storage.js";
import { AsyncChannel } from "./async-channel.js";
import type { JobRepository } from "./job-repository.js";
import type { JobSession, SessionManager } from "./job-session.js";
import type { ObjectRepository } from "./object-repository.js";
import { notFound, objectRef } from "./storage-service.js";
import { checkObjectName, checkTenantAccess } from "./tenant-access.js";
import { launchRunner, runnerIsolation, type RunnerProcess } from "./vm/runner-launcher.js";
import {
  controlFrame,
  encodeFrame,
  FRAME_CODE,
  FRAME_CONTROL,
  FRAME_DATA,
  FRAME_RESULT,
  parseControl,
  readFrames,
  writeFrame,
  type HostMessage,
  type RunnerMessage,
} from "./vm/runner-frames.js";

export const JOB_DEFAULTS = { memoryBytes: 256 * 1024 * 1024, wallClockMs: 60_000 };
export const JOB_MAXIMA = { memoryBytes: 2 * 1024 ** 3, wallClockMs: 3_600_000, codeBytes: 16 * 1024 * 1024, inlineBytes: 3 * 1024 * 1024 };
/** CPU budget (rlimit) of a runner started ahead of its job: enough for the default wall clock. */
const WARM_CPU_SECONDS = JOB_DEFAULTS.wallClockMs / 1000 + 60;
/** After the wall clock, the runner process itself gets this long before SIGKILL. */
const KILL_GRACE_MS = 10_000;
/** Bytes per input frame to the runner. */
const DATA_FRAME = 1024 * 1024;

/** The data gate: a job VM may read only the input its job was submitted with. */
export function isOwnInput(job: Pick<Job, "data">, asked: { tenant: string; name: string } | { inline: true }): boolean {
  if (!job.data) return "inline" in asked;
  return "tenant" in asked && asked.tenant === job.data.tenant && asked.name === job.data.name;
}

const TERMINAL = new Set([JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED]);

interface ActiveJob {
  job: Job;
  code: Uint8Array;
  otk: Uint8Array;
  inline?: Uint8Array;
  resultTenant: string;
  resultName: string;
  session: JobSession;
  watchers: Set<AsyncChannel<{ event: JobEvent | undefined; job: Job | undefined }>>;
  runner?: RunnerProcess;
  cancelled?: boolean;
}

export interface JobManagerDeps {
  storage: Storage;
  blobs: BlobStore;
  objects: ObjectRepository;
  jobs: JobRepository;
  sessions: SessionManager;
  logger: Logger;
}

export class JobManager {
  private readonly active = new Map<string, ActiveJob>();
  private readonly running = new Set<Promise<void>>();
  private warm: RunnerProcess | undefined;
  private stopped = false;

  constructor(private readonly deps: JobManagerDeps) {}

  async submit(req: SubmitJobRequest, caller: Caller, requestId: string): Promise<Job> {
    const session = this.deps.sessions.get(req.sessionId);
    if (!session) throw new TrustplaneError("FAILED_PRECONDITION", "SESSION_UNKNOWN", "session_id: no established session with this id; open a session (OpenSession) and answer its challenge first", "session_id");
    if (session.principal !== caller.principal) throw new TrustplaneError("PERMISSION_DENIED", "SESSION_NOT_YOURS", "session_id: the session belongs to another principal", "session_id");
    if (req.code.length === 0 || req.code.length > JOB_MAXIMA.codeBytes) throw new TrustplaneError("INVALID_ARGUMENT", "CODE_INVALID", `code: send a WebAssembly module of 1..${JOB_MAXIMA.codeBytes} bytes`, "code");
    const digest = createHash("sha256").update(req.code).digest();
    if (req.codeSha256.length !== 32 || !digest.equals(req.codeSha256)) throw new TrustplaneError("INVALID_ARGUMENT", "CODE_DIGEST_MISMATCH", "code_sha256: must be the SHA-256 of code", "code_sha256");
    if (req.otk.length !== 32) throw new TrustplaneError("INVALID_ARGUMENT", "OTK_INVALID", "otk: a one-time job key is 32 random bytes from your key holder", "otk");
    if (req.dekId === "") throw new TrustplaneError("INVALID_ARGUMENT", "DEK_ID_REQUIRED", "dek_id: name the DEK the data was encrypted under", "dek_id");
    const limits = {
      memoryBytes: req.limits?.memoryBytes || JOB_DEFAULTS.memoryBytes,
      wallClockMs: req.limits?.wallClockMs || JOB_DEFAULTS.wallClockMs,
    };
    if (limits.memoryBytes > JOB_MAXIMA.memoryBytes || limits.wallClockMs > JOB_MAXIMA.wallClockMs) {
      throw new TrustplaneError("INVALID_ARGUMENT", "LIMITS_TOO_HIGH", `limits: at most ${JOB_MAXIMA.memoryBytes} bytes of memory and ${JOB_MAXIMA.wallClockMs} ms`, "limits");
    }
    let data: ObjectRef | undefined;
    let inline: Uint8Array | undefined;
    if (req.stored) {
      // A job reads only data its submitter may read, pinned to the digest seen now.
      checkTenantAccess(caller, req.stored.tenant);
      const o = await this.deps.objects.get(req.stored.tenant, req.stored.name);
      if (!o) throw notFound(req.stored.tenant, req.stored.name);
      if (req.stored.digest !== "" && req.stored.digest !== o.digest) throw new TrustplaneError("FAILED_PRECONDITION", "OBJECT_CHANGED", "stored.digest: the object's content changed since you named it", "stored.digest");
      data = objectRef(o);
    } else if (req.inlineCiphertext !== undefined && req.inlineCiphertext.length > 0) {
      if (req.inlineCiphertext.length > JOB_MAXIMA.inlineBytes) throw new TrustplaneError("INVALID_ARGUMENT", "INLINE_TOO_LARGE", `inline_ciphertext: at most ${JOB_MAXIMA.inlineBytes} bytes; upload larger data to storage`, "inline_ciphertext");
      inline = req.inlineCiphertext;
    } else {
      throw new TrustplaneError("INVALID_ARGUMENT", "DATA_REQUIRED", "data: give a stored object or inline ciphertext", "data");
    }
    const resultMode = req.resultMode === ResultMode.RESULT_MODE_RETURNED ? ResultMode.RESULT_MODE_RETURNED : ResultMode.RESULT_MODE_STORED;
    const jobId = `job_${randomUUID()}`;
    const resultTenant = data?.tenant ?? caller.principal;
    const resultName = req.resultName || `results/${jobId}`;
    if (resultMode === ResultMode.RESULT_MODE_STORED) {
      checkTenantAccess(caller, resultTenant);
      checkObjectName(resultName);
    }
    const now = Date.now();
    const job = Job.fromPartial({
      jobId,
      sessionId: session.id,
      owner: caller.principal,
      state: JobState.JOB_STATE_QUEUED,
      codeSha256: digest,
      data,
      resultMode,
      limits,
      dekId: req.dekId,
      vmId: `runner:${runnerIsolation()}`,
      createdAtMs: now,
      updatedAtMs: now,
    });
    await this.deps.jobs.save(job);
    await this.deps.storage.audit.append({ principal: caller.principal, action: "job.submit", target: jobId, outcome: "ok", requestId, detail: { codeSha256: digest.toString("hex"), data: data ? `${data.tenant}/${data.name}` : "inline" } });
    const a: ActiveJob = { job, code: req.code, otk: Buffer.from(req.otk), inline, resultTenant, resultName, session, watchers: new Set() };
    this.active.set(jobId, a);
    const p = this.execute(a).finally(() => this.running.delete(p));
    this.running.add(p);
    return Job.fromPartial(job);
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
      a.runner?.kill("SIGKILL");
      await this.setState(a, JobState.JOB_STATE_CANCELLED, "cancelled by the owner");
      return Job.fromPartial(a.job);
    }
    return job;
  }

  /**
   * A job VM for one job. One runner is kept started ahead (Node and its loader take a few
   * hundred ms to boot); it has seen nothing yet, and every runner serves exactly one job.
   */
  private takeRunner(wallClockMs: number): RunnerProcess {
    const warm = this.warm;
    this.warm = undefined;
    if (!this.stopped) {
      this.warm = launchRunner({ cpuSeconds: WARM_CPU_SECONDS });
      this.warm.on("error", () => undefined);
    }
    if (warm && warm.exitCode === null && warm.signalCode === null && wallClockMs / 1000 + 60 <= WARM_CPU_SECONDS) return warm;
    warm?.kill("SIGKILL");
    return launchRunner({ cpuSeconds: wallClockMs / 1000 + 60 });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.warm?.kill("SIGKILL");
    this.warm = undefined;
    for (const a of this.active.values()) a.runner?.kill("SIGKILL");
    await Promise.allSettled([...this.running]);
  }

  private async setState(a: ActiveJob, state: JobState, detail: string, progress = 0): Promise<void> {
    if (TERMINAL.has(a.job.state)) return;
    a.job.state = state;
    a.job.updatedAtMs = Date.now();
    if (state === JobState.JOB_STATE_FAILED) a.job.failureReason = detail;
    await this.deps.jobs.save(a.job).catch((e: Error) => this.deps.logger.error({ jobId: a.job.jobId, err: e.message }, "failed to save a job"));
    const event: JobEvent = { jobId: a.job.jobId, state, detail, progress, timeMs: a.job.updatedAtMs };
    a.session.send({ jobEvent: event });
    for (const w of a.watchers) {
      w.push({ event, job: Job.fromPartial(a.job) });
      if (TERMINAL.has(state)) w.end();
    }
    if (TERMINAL.has(state)) {
      this.deps.logger.info({ jobId: a.job.jobId, owner: a.job.owner, state: JobState[state], resultBytes: a.job.resultSize }, "job finished");
      a.otk.fill(0);
      this.active.delete(a.job.jobId);
    }
  }

  private async fail(a: ActiveJob, reason: string, detail: string): Promise<void> {
    this.deps.logger.info({ jobId: a.job.jobId, reason }, "job failed");
    await this.setState(a, JobState.JOB_STATE_FAILED, `${reason}: ${detail}`);
  }

  private async execute(a: ActiveJob): Promise<void> {
    const { job } = a;
    const log = this.deps.logger.child({ jobId: job.jobId });
    await this.setState(a, JobState.JOB_STATE_PROVISIONING, "starting the job VM");
    const limits = job.limits!;
    const runner = this.takeRunner(limits.wallClockMs);
    a.runner = runner;
    let stderr = "";
    runner.stderr.on("data", (d: Buffer) => {
      if (stderr.length < 4000) stderr += d.toString("utf8");
    });
    runner.stdin.on("error", () => undefined);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => runner.once("exit", (code, signal) => resolve({ code, signal })));
    let killTimer: NodeJS.Timeout | undefined;
    let killedForTime = false;
    let outcome: { ok: true; maxRssKiB: number } | { ok: false; reason: string; detail: string } | undefined;
    const resultPieces = new AsyncChannel<Uint8Array>();
    let storing: Promise<{ digest: string; size: number }> | undefined;
    const send = (m: HostMessage) => writeFrame(runner.stdin, controlFrame(m));
    let feeding: Promise<void> | undefined;
    try {
      await send({
        t: "start",
        jobId: job.jobId,
        otkDigest: createHash("sha256").update(a.otk).digest("hex"),
        codeSha256: Buffer.from(job.codeSha256).toString("hex"),
        dekId: job.dekId,
        data: job.data ? { tenant: job.data.tenant, name: job.data.name } : { inline: true },
        memoryBytes: limits.memoryBytes,
        wallClockMs: limits.wallClockMs,
      });
      await writeFrame(runner.stdin, encodeFrame(FRAME_CODE, a.code));
      let keyRequests = 0;
      for await (const frame of readFrames(runner.stdout)) {
        if (a.cancelled) break;
        if (frame.kind === FRAME_RESULT) {
          if (job.resultMode === ResultMode.RESULT_MODE_RETURNED) a.session.send({ result: { jobId: job.jobId, data: frame.payload, last: false } });
          else {
            storing ??= this.deps.blobs.put(resultPieces);
            resultPieces.push(Buffer.from(frame.payload));
          }
          job.resultSize += frame.payload.length;
          continue;
        }
        if (frame.kind !== FRAME_CONTROL) throw new TrustplaneError("INTERNAL", "RUNNER_PROTOCOL", `unexpected frame kind ${frame.kind}`);
        const m = parseControl<RunnerMessage>(frame);
        if (m.t === "keyRequest") {
          // One key request per job: a second one is a misbehaving job VM.
          if (++keyRequests > 1) {
            await send({ t: "keyDenied", reason: "SECOND_KEY_REQUEST" });
            outcome = { ok: false, reason: "SECOND_KEY_REQUEST", detail: "the job VM asked for the data key twice" };
            break;
          }
          await this.setState(a, JobState.JOB_STATE_AWAITING_KEY, "waiting for the client's key holder");
          const answer = await a.session.requestKey({
            jobId: job.jobId,
            otk: a.otk,
            vmEphemeralPublicKey: Buffer.from(m.publicKey, "base64"),
            codeSha256: job.codeSha256,
            data: job.data ?? { tenant: "", name: "", digest: "", size: 0 },
            dekId: job.dekId,
          });
          if (answer.release) {
            await send({ t: "keyRelease", enc: Buffer.from(answer.release.enc).toString("base64"), sealedDek: Buffer.from(answer.release.sealedDek).toString("base64") });
            killTimer = setTimeout(() => {
              killedForTime = true;
              runner.kill("SIGKILL");
            }, limits.wallClockMs + KILL_GRACE_MS);
          } else {
            const reason = answer.denied?.reason || "KEY_DENIED";
            await send({ t: "keyDenied", reason });
            if (reason === "OTK_REUSED") {
              a.session.send({ securityEvent: { jobId: job.jobId, reason, detail: "the key holder refused: this one-time job key was already used; the job is failed", timeMs: Date.now() } });
              await this.deps.storage.audit.append({ principal: job.owner, action: "job.security_event", target: job.jobId, outcome: reason, requestId: job.jobId, detail: {} });
            }
            outcome = { ok: false, reason: "KEY_DENIED", detail: `the client's key holder refused to release the data key (${reason})` };
            break;
          }
        } else if (m.t === "read") {
          if (!isOwnInput(job, m.data)) {
            await send({ t: "dataRefused", reason: "the job may read only its own input" });
            outcome = { ok: false, reason: "DATA_OUTSIDE_JOB", detail: "the job VM asked for data that is not this job's input" };
            break;
          }
          await this.setState(a, JobState.JOB_STATE_RUNNING, "running the module");
          await send({ t: "dataBegin" });
          // Fed alongside this loop, so the runner's progress reports are read as they come.
          feeding = this.streamInput(a, runner)
            .then(() => send({ t: "dataEnd" }))
            .catch((e: Error) => {
              outcome ??= { ok: false, reason: "INPUT_UNAVAILABLE", detail: `the job's input could not be read: ${e.message}` };
              runner.kill("SIGKILL");
            });
        } else if (m.t === "progress") {
          const total = job.data?.size ?? a.inline?.length ?? 0;
          if (m.state === "STORING") await this.setState(a, JobState.JOB_STATE_STORING, "encrypting and storing the result");
          else a.session.send({ jobEvent: { jobId: job.jobId, state: JobState.JOB_STATE_RUNNING, detail: `${m.bytes} bytes processed`, progress: total > 0 ? Math.min(1, m.bytes / total) : 0, timeMs: Date.now() } });
        } else if (m.t === "done") {
          outcome = { ok: true, maxRssKiB: m.maxRssKiB };
        } else if (m.t === "failed") {
          outcome = { ok: false, reason: m.reason, detail: m.detail };
        }
      }
    } catch (e) {
      outcome ??= { ok: false, reason: e instanceof TrustplaneError ? e.reason : "RUNNER_CHANNEL", detail: (e as Error).message };
    } finally {
      a.otk.fill(0);
    }
    if (!outcome?.ok) runner.kill("SIGKILL");
    await feeding;
    const exit = await exited;
    clearTimeout(killTimer);
    if (stderr.trim() !== "") log.debug({ stderr: stderr.slice(0, 2000) }, "job runner stderr");
    if (a.cancelled) {
      resultPieces.fail(new Error("cancelled"));
      await storing?.catch(() => undefined);
      return;
    }
    if (!outcome) {
      outcome = killedForTime
        ? { ok: false, reason: "WALL_CLOCK_EXCEEDED", detail: `the job VM outlived its wall-clock limit of ${limits.wallClockMs} ms and was killed` }
        : { ok: false, reason: "RUNNER_EXITED", detail: `the job VM exited (${exit.signal ?? `code ${exit.code}`}) before reporting a result` };
    }
    if (!outcome.ok) {
      resultPieces.fail(new Error(outcome.reason));
      await storing?.catch(() => undefined);
      return this.fail(a, outcome.reason, outcome.detail);
    }
    try {
      if (job.resultMode === ResultMode.RESULT_MODE_RETURNED) {
        a.session.send({ result: { jobId: job.jobId, data: new Uint8Array(0), last: true } });
      } else {
        resultPieces.end();
        const info = await (storing ?? this.deps.blobs.put(new Uint8Array(0)));
        const record = { tenant: a.resultTenant, name: a.resultName, digest: info.digest, size: info.size, createdBy: job.owner, createdAtMs: Date.now() };
        if (!(await this.deps.objects.insert(record))) throw new TrustplaneError("ALREADY_EXISTS", "OBJECT_EXISTS", `result name ${a.resultName} already exists`);
        job.result = objectRef(record);
      }
      const where = job.result ? `result stored as ${job.result.tenant}/${job.result.name}` : "result returned over the session";
      await this.setState(a, JobState.JOB_STATE_SUCCEEDED, `${where}; job VM peak RSS ${Math.round(outcome.maxRssKiB / 1024)} MiB`, 1);
    } catch (e) {
      await this.fail(a, e instanceof TrustplaneError ? e.reason : "RESULT_STORE_FAILED", (e as Error).message);
    }
  }

  private async streamInput(a: ActiveJob, runner: RunnerProcess): Promise<void> {
    if (a.inline) {
      for (let off = 0; off < a.inline.length; off += DATA_FRAME) {
        await writeFrame(runner.stdin, encodeFrame(FRAME_DATA, a.inline.subarray(off, off + DATA_FRAME)));
      }
      return;
    }
    // Read by the digest pinned at submission: a name re-pointed later cannot swap the input.
    // File reads come in 64 KiB; they go out in ~1 MiB frames (fewer frames, fewer copies).
    let batch: Buffer[] = [];
    let batched = 0;
    for await (const piece of this.deps.blobs.get(a.job.data!.digest) as AsyncIterable<Buffer>) {
      if (a.cancelled) return;
      batch.push(piece);
      batched += piece.length;
      if (batched >= DATA_FRAME) {
        await writeFrame(runner.stdin, encodeFrame(FRAME_DATA, Buffer.concat(batch, batched)));
        batch = [];
        batched = 0;
      }
    }
    if (batched > 0) await writeFrame(runner.stdin, encodeFrame(FRAME_DATA, Buffer.concat(batch, batched)));
  }
}
