// The agent's job bridge (seed 003, host side of the job VM): for every `job-runner` VM the
// control plane starts, a host channel — a unix socket in the VM's private directory that the
// sandbox driver binds into that VM only — and, for the runner that connects on it, signed
// JobVmService calls to the server with the host's identity: the job spec, the job's own
// input ciphertext, the data key (with the host's attestation of the VM's ephemeral key) and
// the encrypted result. The bridge relays ciphertext and sealed keys; it never holds a DEK.
import { randomBytes } from "node:crypto";
import { mkdir, open, rm } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import path from "node:path";
import type { SigningKey } from "../../../../sdk/src/auth/index.js";
import type { SignedClient } from "../../../../sdk/src/client/create-client.js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { JobState, ResultMode } from "../../../../sdk/src/gen/trustplane/job/v1/job.js";
import type { JobSpec, JobVmServiceService } from "../../../../sdk/src/gen/trustplane/job/v1/job_vm.js";
import type { InstanceSpec } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { fileChunks } from "../../../../sdk/src/job/file-chunks.js";
import { attestJobVm } from "../../../../sdk/src/job/job-vm-attestation.js";
import type { Logger } from "../../runtime/logger.js";
import { GUEST_CHANNEL_DIR, type GuestSupport, type GuestSupportProvider } from "../../vm/agent/driver.js";
import { controlFrame, encodeFrame, FRAME_CODE, FRAME_CONTROL, FRAME_DATA, FRAME_RESULT, parseControl, readFrames, writeFrame, type HostMessage, type RunnerMessage } from "../vm/runner-frames.js";
import type { RunnerBundle } from "./runner-bundle.js";

export const JOB_RUNNER_IMAGE = "job-runner";
const SOCKET = "job.sock";
/** How long a job VM waits for a job (CreateJobVm before SubmitJob). */
const SPEC_WAIT_MS = 10 * 60_000;
/** The runner's own JS heap; the module's data lives in its capped wasm memory. */
const RUNNER_HEAP_MIB = 256;
/** Result ciphertext is spooled in ~1 MiB reads for ReportResult's two passes (digest, send). */
const CHUNK = 1024 * 1024;

interface Channel {
  vmId: string;
  dir: string;
  server: Server;
  socket?: Socket;
}

export interface JobBridgeDeps {
  hostId: string;
  signingKey: SigningKey;
  hostCertificate: Uint8Array;
  client: SignedClient<typeof JobVmServiceService>;
  bundle: RunnerBundle;
  logger: Logger;
  /** Terminates a job VM through the control plane (its channel is gone with the bridge). */
  terminate(vmId: string): Promise<void>;
}

export class JobBridge implements GuestSupportProvider {
  private readonly channels = new Map<string, Channel>();

  constructor(private readonly deps: JobBridgeDeps) {}

  /** Opens the VM's host channel before the driver starts it. */
  async prepare(spec: InstanceSpec, dir: string): Promise<GuestSupport> {
    await this.released(spec.vmId);
    const channelDir = path.join(dir, "channel");
    await mkdir(channelDir, { recursive: true, mode: 0o700 });
    const socketPath = path.join(channelDir, SOCKET);
    await rm(socketPath, { force: true });
    const server = createServer();
    const channel: Channel = { vmId: spec.vmId, dir, server };
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(socketPath, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.on("error", (e) => this.deps.logger.warn({ vmId: spec.vmId, err: e.message }, "job channel error"));
    // One runner per VM: the first connection is served; the channel then takes no other.
    server.once("connection", (socket) => {
      channel.socket = socket;
      server.close();
      void this.serve(channel, socket).catch((e: Error) => this.deps.logger.warn({ vmId: spec.vmId, err: e.message }, "job channel ended with an error"));
    });
    this.channels.set(spec.vmId, channel);
    return {
      channelDir,
      readOnlyPaths: [this.deps.bundle.dir],
      command: [process.execPath, `--max-old-space-size=${RUNNER_HEAP_MIB}`, this.deps.bundle.file, `${GUEST_CHANNEL_DIR}/${SOCKET}`],
      memoryCgroup: true,
      // The runner writes nothing to disk (read-only root, no console file): plaintext it
      // holds can never reach the host's disk.
      noDiskWrites: true,
    };
  }

  /** The VM was terminated: nothing of its channel survives (listener, connection, files). */
  async released(vmId: string): Promise<void> {
    const c = this.channels.get(vmId);
    if (!c) return;
    this.channels.delete(vmId);
    c.socket?.destroy();
    await new Promise<void>((r) => c.server.close(() => r()));
    await rm(path.join(c.dir, "channel"), { recursive: true, force: true });
    await rm(path.join(c.dir, "bridge"), { recursive: true, force: true });
  }

  /** The agent stops: a job VM cannot outlive its channel, so each is terminated (no process,
   * cgroup or file left behind); the service fails their jobs. */
  async stop(): Promise<void> {
    for (const vmId of [...this.channels.keys()]) {
      await this.deps.terminate(vmId).catch((e: Error) => this.deps.logger.warn({ vmId, err: e.message }, "could not terminate a job VM at shutdown"));
      await this.released(vmId);
    }
  }

  /** The bridge's side of one runner: every step is a signed call made as this host. */
  private async serve(channel: Channel, socket: Socket): Promise<void> {
    const { client, logger } = this.deps;
    const log = logger.child({ vmId: channel.vmId });
    socket.on("error", () => undefined);
    const send = (m: HostMessage) => writeFrame(socket, controlFrame(m));
    const spec: JobSpec = (await client.getJobSpec({ vmId: channel.vmId }, { deadlineMs: SPEC_WAIT_MS })).spec!;
    const jobId = spec.jobId;
    log.info({ jobId }, "job VM runner connected; job assigned");
    // Result ciphertext is spooled beside (never inside) the VM's root, removed with the VM.
    const spoolDir = path.join(channel.dir, "bridge");
    await mkdir(spoolDir, { recursive: true, mode: 0o700 });
    const spoolFile = path.join(spoolDir, `result-${randomBytes(6).toString("hex")}.tpev`);
    const spool = await open(spoolFile, "w", 0o600);
    let resultBytes = 0;
    let outcome: { state: JobState; reason: string; detail: string } | undefined;
    let feeding: Promise<void> | undefined;
    try {
      await send({
        t: "start",
        jobId,
        otkDigest: Buffer.from(spec.otkSha256).toString("hex"),
        codeSha256: Buffer.from(spec.codeSha256).toString("hex"),
        dekId: spec.dekId,
        data: spec.stored ? { tenant: spec.stored.tenant, name: spec.stored.name } : { inline: true },
        memoryBytes: Number(spec.limits?.memoryBytes ?? 0),
        wallClockMs: spec.limits?.wallClockMs ?? 0,
      });
      await writeFrame(socket, encodeFrame(FRAME_CODE, spec.module ?? new Uint8Array(0)));
      for await (const frame of readFrames(socket)) {
        if (frame.kind === FRAME_RESULT) {
          await spool.write(frame.payload);
          resultBytes += frame.payload.length;
          continue;
        }
        if (frame.kind !== FRAME_CONTROL) throw new TrustplaneError("INTERNAL", "RUNNER_PROTOCOL", `unexpected frame kind ${frame.kind}`);
        const m = parseControl<RunnerMessage>(frame);
        if (m.t === "keyRequest") {
          const publicKey = Buffer.from(m.publicKey, "base64");
          // The host vouches that this key came over this VM's own channel, for this job.
          const attestation = attestJobVm(this.deps.signingKey, this.deps.hostCertificate, {
            jobId,
            vmId: channel.vmId,
            hostId: this.deps.hostId,
            codeSha256: spec.codeSha256,
            data: spec.stored,
            ephemeralPublicKey: publicKey,
            otkSha256: spec.otkSha256,
            issuedAtMs: Date.now(),
          });
          try {
            // No request_id: the answer (a DEK sealed to this VM's key) must not be kept in the
            // server's idempotency table; a job VM asks once, and a second ask fails the job.
            const r = await client.requestDataKey({ requestId: "", jobId, ephemeralPublicKey: publicKey, codeSha256: spec.codeSha256, hostAttestation: attestation }, { deadlineMs: 5 * 60_000 });
            await send({ t: "keyRelease", enc: Buffer.from(r.enc).toString("base64"), sealedDek: Buffer.from(r.sealedDek).toString("base64") });
          } catch (e) {
            await send({ t: "keyDenied", reason: (e as TrustplaneError).reason ?? "KEY_DENIED" });
          }
        } else if (m.t === "read") {
          const asked = "inline" in m.data ? undefined : { tenant: m.data.tenant, name: m.data.name, digest: "", size: 0 };
          // Fed alongside this loop, so the runner's progress reports are read as they come.
          feeding = (async () => {
            const input = client.readJobInput({ jobId, asked });
            let begun = false;
            try {
              for await (const piece of input) {
                if (!begun) {
                  begun = true;
                  await send({ t: "dataBegin" });
                }
                if (piece.chunk.length > 0) await writeFrame(socket, encodeFrame(FRAME_DATA, piece.chunk));
              }
              if (!begun) await send({ t: "dataBegin" });
              await send({ t: "dataEnd" });
            } catch (e) {
              const reason = (e as TrustplaneError).reason ?? "INPUT_UNAVAILABLE";
              if (!begun) await send({ t: "dataRefused", reason: `${reason}: ${(e as Error).message}` }).catch(() => undefined);
              else socket.destroy();
              outcome ??= { state: JobState.JOB_STATE_FAILED, reason: begun ? "INPUT_UNAVAILABLE" : reason, detail: (e as Error).message };
            }
          })();
        } else if (m.t === "progress") {
          const r = await client
            .reportProgress({ jobId, progress: 0, detail: m.state === "STORING" ? "STORING" : `${m.bytes} bytes processed` })
            .catch((e: Error) => (log.warn({ err: e.message }, "progress report failed"), { cancelled: false }));
          if (r.cancelled) socket.destroy();
        } else if (m.t === "done") {
          outcome ??= { state: JobState.JOB_STATE_SUCCEEDED, reason: "", detail: `job VM peak RSS ${Math.round(m.maxRssKiB / 1024)} MiB` };
        } else if (m.t === "failed") {
          outcome ??= { state: JobState.JOB_STATE_FAILED, reason: m.reason, detail: m.detail };
        }
      }
    } catch (e) {
      outcome ??= { state: JobState.JOB_STATE_FAILED, reason: (e as TrustplaneError).reason ?? "RUNNER_CHANNEL", detail: (e as Error).message };
    } finally {
      await spool.close();
    }
    await feeding;
    outcome ??= { state: JobState.JOB_STATE_FAILED, reason: "RUNNER_EXITED", detail: "the job VM's runner closed its channel before reporting a result" };
    const ok = outcome.state === JobState.JOB_STATE_SUCCEEDED;
    const size = ok ? resultBytes : 0;
    const header = { requestId: `result-${jobId}`, jobId, state: outcome.state, failureReason: outcome.reason, detail: outcome.detail, resultSize: size };
    try {
      await client.reportResult(() =>
        (async function* () {
          yield { header };
          if (!ok) return;
          for await (const chunk of fileChunks(spoolFile, size, CHUNK)) yield { chunk };
        })(),
      );
    } catch (e) {
      // The service already ended the job (its key refused, a timeout, a cancel): nothing to report.
      if ((e as TrustplaneError).reason !== "JOB_NOT_ON_HOST") throw e;
      log.info({ jobId }, "the job had already ended on the service side");
    } finally {
      await rm(spoolFile, { force: true });
      socket.end();
    }
    log.info({ jobId, state: JobState[outcome.state], resultBytes: size, mode: spec.resultMode === ResultMode.RESULT_MODE_RETURNED ? "returned" : "stored" }, "job VM reported its result");
  }
}
