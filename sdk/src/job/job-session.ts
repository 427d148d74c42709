// The client end of a job session (seed 003): opens JobService.OpenSession, proves possession
// of its key (either challenge variant), then serves forwarded key requests through the
// KeyHolder and routes job events, security events and returned results to waiting jobs.
import { EventEmitter } from "node:events";
import type * as grpc from "@grpc/grpc-js";
import type { SigningKey } from "../auth/signing-key.js";
import { createClient, type BidiStream, type SignedClient } from "../client/create-client.js";
import { TrustplaneError } from "../errors.js";
import { open as hpkeOpen } from "../envelope/hpke.js";
import { generateX25519KeyPair, type X25519KeyPair } from "../envelope/x25519-keys.js";
import {
  ChallengeVariant,
  JobServiceService,
  type JobEvent,
  type OpenSessionRequest,
  type OpenSessionResponse,
  type SecurityEvent,
} from "../gen/trustplane/job/v1/job.js";
import { StorageServiceService } from "../gen/trustplane/job/v1/storage.js";
import { sessionChallengeInfo, sessionProofMessage } from "./job-bindings.js";
import type { KeyHolder } from "./key-holder.js";

export interface OpenSessionOptions {
  keyHolder: KeyHolder;
  /** Proof variant: "sign" (SIGN_BY_CLIENT_KEY with `key`) or "encrypt" (ENCRYPT_TO_CLIENT_KEY). */
  variant?: "sign" | "encrypt";
  /** X25519 pair for the encrypt variant; a fresh one if absent. */
  sealingKey?: X25519KeyPair;
  credentials?: grpc.ChannelCredentials;
  targetHost?: string;
}

type JobMessage = { event?: JobEvent; security?: SecurityEvent; result?: { data: Uint8Array; last: boolean } };

export class JobSession extends EventEmitter {
  private readonly queues = new Map<string, JobMessage[]>();
  private readonly jobListeners = new Map<string, (m: JobMessage) => void>();
  private closedError: Error | undefined;

  constructor(
    readonly id: string,
    readonly expiresAtMs: number,
    readonly jobs: SignedClient<typeof JobServiceService>,
    readonly storage: SignedClient<typeof StorageServiceService>,
    readonly keyHolder: KeyHolder,
    private readonly stream: BidiStream<OpenSessionRequest, OpenSessionResponse>,
  ) {
    super();
  }

  /** Runs until the stream ends: answers key requests, dispatches events. */
  async serve(iterator: AsyncIterator<OpenSessionResponse>): Promise<void> {
    try {
      for (let n = await iterator.next(); !n.done; n = await iterator.next()) {
        const m = n.value;
        if (m.keyRequest) {
          const req = m.keyRequest;
          this.emit("keyRequestReceived", req.jobId);
          void this.keyHolder.handleKeyRequest(req).then(
            (a) => this.stream.send(a.release ? { keyRelease: a.release } : { keyDenied: a.denied }),
            (e: Error) => {
              this.emit("keyHolderError", e);
              this.stream.send({ keyDenied: { jobId: req.jobId, requestSeq: req.requestSeq, reason: "KEY_HOLDER_ERROR" } });
            },
          );
        } else if (m.jobEvent) {
          this.emit("jobEvent", m.jobEvent);
          this.route(m.jobEvent.jobId, { event: m.jobEvent });
        } else if (m.securityEvent) {
          this.emit("securityEvent", m.securityEvent);
          this.route(m.securityEvent.jobId, { security: m.securityEvent });
        } else if (m.result) {
          this.route(m.result.jobId, { result: { data: m.result.data, last: m.result.last } });
        }
      }
      this.closedError = new TrustplaneError("UNAVAILABLE", "SESSION_CLOSED", "the job session ended");
    } catch (e) {
      this.closedError = e as Error;
    }
    for (const l of this.jobListeners.values()) l({});
  }

  private route(jobId: string, m: JobMessage): void {
    const l = this.jobListeners.get(jobId);
    if (l) l(m);
    else {
      const q = this.queues.get(jobId) ?? [];
      if (q.length < 10_000) q.push(m);
      this.queues.set(jobId, q);
    }
  }

  /** Messages for one job, including those that arrived before the caller asked. */
  async *messages(jobId: string): AsyncGenerator<JobMessage> {
    const pending: JobMessage[] = this.queues.get(jobId) ?? [];
    this.queues.delete(jobId);
    let wake: (() => void) | undefined;
    this.jobListeners.set(jobId, (m) => {
      if (m.event || m.security || m.result) pending.push(m);
      wake?.();
    });
    try {
      for (;;) {
        while (pending.length > 0) yield pending.shift()!;
        if (this.closedError) throw this.closedError;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    } finally {
      this.jobListeners.delete(jobId);
    }
  }

  close(): void {
    this.stream.end();
    this.jobs.close();
    this.storage.close();
  }
}

/** Opens a session and proves possession of the client's key; throws if the proof fails. */
export async function openSession(address: string, key: SigningKey, opts: OpenSessionOptions): Promise<JobSession> {
  const clientOpts = { key, credentials: opts.credentials, targetHost: opts.targetHost };
  const jobs = createClient(JobServiceService, address, clientOpts);
  const storage = createClient(StorageServiceService, address, clientOpts);
  const variant = opts.variant ?? "sign";
  const sealing = variant === "encrypt" ? (opts.sealingKey ?? generateX25519KeyPair()) : undefined;
  const stream = jobs.openSession({
    hello:
      variant === "encrypt"
        ? { variant: ChallengeVariant.CHALLENGE_VARIANT_ENCRYPT_TO_CLIENT_KEY, clientSealingKey: sealing!.publicKey, clientSigningJwk: "" }
        : { variant: ChallengeVariant.CHALLENGE_VARIANT_SIGN_BY_CLIENT_KEY, clientSealingKey: new Uint8Array(0), clientSigningJwk: JSON.stringify(key.publicJwk) },
  });
  const iterator = stream[Symbol.asyncIterator]();
  try {
    const first = await iterator.next();
    const challenge = first.done ? undefined : first.value.challenge;
    if (!challenge) throw new TrustplaneError("UNAVAILABLE", "SESSION_NO_CHALLENGE", "the service did not send a session challenge");
    const proof =
      variant === "encrypt"
        ? hpkeOpen(sealing!.privateKey, challenge.enc, challenge.ciphertext, { info: sessionChallengeInfo(challenge.sessionId) })
        : key.sign(sessionProofMessage(challenge.sessionId, challenge.nonce));
    stream.send({ challengeResponse: { proof } });
    const second = await iterator.next();
    const established = second.done ? undefined : second.value.established;
    if (!established) throw new TrustplaneError("UNAUTHENTICATED", "SESSION_NOT_ESTABLISHED", "the service did not establish the session");
    const session = new JobSession(established.sessionId, established.expiresAtMs, jobs, storage, opts.keyHolder, stream);
    void session.serve(iterator);
    return session;
  } catch (e) {
    stream.cancel();
    jobs.close();
    storage.close();
    throw e;
  }
}
