// SDK steps 3-6 of seed 003: submit a WebAssembly job on a session with a fresh OTK from the
// key holder, stream its data straight to the job VM if asked (SendJobInput, bounded memory),
// follow its events (the key request is answered by the session's key holder), and return the
// opened result — fetched from hosted storage or gathered from the session — decrypted with the
// client's DEK. A security event (e.g. OTK reuse) fails the call.
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { TrustplaneError } from "../errors.js";
import { decryptStream } from "../envelope/decrypt-stream.js";
import { JobState, ResultMode, type Job, type JobEvent, type JobLimits } from "../gen/trustplane/job/v1/job.js";
import type { ObjectRef } from "../gen/trustplane/job/v1/storage.js";
import { encryptToFile, type PlaintextSource, type TransferProgress } from "./encrypt-to-storage.js";
import { fileChunks } from "./file-chunks.js";
import type { JobSession } from "./job-session.js";

/**
 * Where a job's data comes from: hosted storage; small inline ciphertext inside SubmitJob; or
 * streamed straight to the job VM (never stored) — an envelope file, or plaintext the SDK
 * encrypts first (into a private temp file: only ciphertext touches the disk).
 */
export type DataRef =
  | { stored: { tenant: string; name: string; digest?: string }; dekId: string }
  | { inline: Uint8Array; dekId: string }
  | { streamed: { envelopeFile: string } | { plaintext: PlaintextSource; size?: number }; dekId: string };

const STREAM_CHUNK = 1024 * 1024;

export interface RunJobOptions {
  resultMode?: "stored" | "returned";
  limits?: Partial<JobLimits>;
  resultName?: string;
  onProgress?: (p: { state: string; progress: number; detail: string } | TransferProgress) => void;
  /** Reuse this OTK instead of issuing one (only to test the key holder's refusal). */
  otk?: Uint8Array;
  /** Run in this job VM (from CreateJobVm) instead of one provisioned for the job. */
  jobVmId?: string;
}

export interface JobResult {
  job: Job;
  output: Uint8Array;
}

const TERMINAL = new Set([JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED]);

export async function runJob(session: JobSession, code: Uint8Array, data: DataRef, opts: RunJobOptions = {}): Promise<JobResult> {
  if ("streamed" in data && "plaintext" in data.streamed) {
    const dir = await mkdtemp(path.join(os.tmpdir(), "tp-job-input-"));
    try {
      const file = path.join(dir, "input.tpev");
      const key = { dek: session.keyHolder.dek(data.dekId), dekId: data.dekId };
      await encryptToFile(data.streamed.plaintext, file, key, opts.onProgress, data.streamed.size);
      return await runJob(session, code, { streamed: { envelopeFile: file }, dekId: data.dekId }, opts);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  const streamedFile = "streamed" in data && "envelopeFile" in data.streamed ? data.streamed.envelopeFile : undefined;
  const streamedSize = streamedFile ? (await stat(streamedFile)).size : 0;
  const codeSha256 = createHash("sha256").update(code).digest();
  const otk =
    opts.otk ??
    (await session.keyHolder.issueOtk({ codeSha256, dekId: data.dekId, data: "stored" in data ? data.stored : { inline: true } }));
  const dataField =
    "stored" in data
      ? { stored: { tenant: data.stored.tenant, name: data.stored.name, digest: data.stored.digest ?? "" } }
      : "inline" in data
        ? { inlineCiphertext: data.inline }
        : { streamed: { size: streamedSize } };
  const submitted = await session.jobs.submitJob({
    requestId: `job-${randomBytes(8).toString("hex")}`,
    sessionId: session.id,
    code,
    codeSha256,
    otk,
    ...dataField,
    resultMode: opts.resultMode === "returned" ? ResultMode.RESULT_MODE_RETURNED : ResultMode.RESULT_MODE_STORED,
    limits: { memoryBytes: opts.limits?.memoryBytes ?? 0, wallClockMs: opts.limits?.wallClockMs ?? 0 },
    dekId: data.dekId,
    resultName: opts.resultName ?? "",
    jobVmId: opts.jobVmId ?? "",
  });
  const jobId = submitted.job!.jobId;
  // Streamed input goes out alongside the job's events; the service relays it to the VM.
  let sendError: Error | undefined;
  const sending = streamedFile ? sendInput(session, jobId, streamedFile, streamedSize, opts.onProgress).catch((e: Error) => void (sendError = e)) : undefined;
  const returned: Uint8Array[] = [];
  let security: string | undefined;
  let last: JobEvent | undefined;
  for await (const m of session.messages(jobId)) {
    if (m.security) security = `${m.security.reason}: ${m.security.detail}`;
    if (m.result) {
      if (m.result.data.length > 0) returned.push(m.result.data);
      continue;
    }
    if (m.event) {
      last = m.event;
      opts.onProgress?.({ state: JobState[m.event.state] ?? String(m.event.state), progress: m.event.progress, detail: m.event.detail });
      if (TERMINAL.has(m.event.state)) break;
    }
  }
  await sending;
  const job = (await session.jobs.getJob({ jobId })).job!;
  if (security) throw new TrustplaneError("PERMISSION_DENIED", "JOB_SECURITY_EVENT", `job ${jobId} failed with a security event: ${security}`);
  if (job.state !== JobState.JOB_STATE_SUCCEEDED) {
    const reason = job.failureReason.split(":")[0] || "JOB_FAILED";
    throw new TrustplaneError("ABORTED", reason, `job ${jobId} ${JobState[job.state] ?? job.state}: ${job.failureReason || last?.detail || "no detail"}${sendError ? ` (sending the input: ${sendError.message})` : ""}`);
  }
  const dek = session.keyHolder.dek(data.dekId);
  const ciphertext: AsyncIterable<Uint8Array> | Iterable<Uint8Array> =
    job.resultMode === ResultMode.RESULT_MODE_RETURNED ? returned : downloadObject(session, job.result!, opts.onProgress);
  const output = await collect(decryptStream(ciphertext, { dek: () => dek }));
  return { job, output };
}

/** SendJobInput: the envelope file in 1 MiB chunks (read twice: the signed digest, then the send). */
async function sendInput(session: JobSession, jobId: string, file: string, size: number, onProgress?: RunJobOptions["onProgress"]): Promise<void> {
  const requestId = `input-${randomBytes(8).toString("hex")}`;
  let pass = 0;
  await session.jobs.sendJobInput(() =>
    (async function* () {
      pass++;
      yield { header: { requestId, jobId } };
      const progress = pass > 1 ? (bytes: number) => onProgress?.({ phase: "upload", bytes, total: size }) : undefined;
      for await (const chunk of fileChunks(file, size, STREAM_CHUNK, progress)) yield { chunk };
    })(),
  );
}

/** Streams a stored object's ciphertext (GetObject). */
export async function* downloadObject(session: Pick<JobSession, "storage">, ref: Pick<ObjectRef, "tenant" | "name">, onProgress?: (p: TransferProgress) => void): AsyncGenerator<Uint8Array> {
  let total: number | undefined;
  let bytes = 0;
  for await (const m of session.storage.getObject({ tenant: ref.tenant, name: ref.name })) {
    if (m.object) total = m.object.size;
    if (m.chunk) {
      bytes += m.chunk.length;
      onProgress?.({ phase: "download", bytes, total });
      yield m.chunk;
    }
  }
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const pieces: Uint8Array[] = [];
  for await (const p of source) pieces.push(p);
  const out = Buffer.concat(pieces);
  for (const p of pieces) p.fill(0);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}
