// The client end of a job session (seed 003): opens JobService.OpenSession, proves possession
// of its key (either challenge variant), derives the session keys (session-keys.ts), then —
// every message sealed in both directions (session-frames.ts) — serves forwarded key requests
// through the KeyHolder and routes job events, security events and returned results to jobs.
import { EventEmitter } from "node:events";
import type * as grpc from "@grpc/grpc-js";
import type { SigningKey } from "../auth/signing-key.js";
import { createClient, type BidiStream, type SignedClient } from "../client/create-client.js";
import { TrustplaneError } from "../errors.js";
import { x25519Agree } from "../envelope/dhkem-x25519.js";
import { openAndExport } from "../envelope/hpke.js";
import { generateX25519KeyPair, type X25519KeyPair } from "../envelope/x25519-keys.js";
import {
  ChallengeVariant,
  JobServiceService,
  OpenSessionRequest,
  OpenSessionResponse,
  type JobEvent,
  type SecurityEvent,
} from "../gen/trustplane/job/v1/job.js";
import { StorageServiceService } from "../gen/trustplane/job/v1/storage.js";
import { sessionChallengeInfo, sessionProofMessage } from "./job-bindings.js";
import type { KeyHolder } from "./key-holder.js";
import { FrameOpener, FrameSealer } from "./session-frames.js";
import { SESSION_EXPORTER_CONTEXT, confirmationMac, deriveSessionKeys, wipeSessionKeys, type HandshakeTranscript } from "./session-keys.js";

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
    private readonly sealer: FrameSealer,
    private readonly opener: FrameOpener,
  ) {
    super();
  }

  /** Sends one message sealed under the session key (the only way anything is sent after the handshake). */
  private send(m: Partial<OpenSessionRequest>): void {
    this.stream.send({ sealed: this.sealer.seal(OpenSessionRequest.encode(OpenSessionRequest.fromPartial(m)).finish()) });
  }

  /** Runs until the stream ends: answers key requests, dispatches events. */
  async serve(iterator: AsyncIterator<OpenSessionResponse>): Promise<void> {
    try {
      for (let n = await iterator.next(); !n.done; n = await iterator.next()) {
        // A frame that does not open (altered, replayed, reordered, not from the service that
        // proved the handshake) ends the session: nothing unauthenticated is ever acted on.
        const m = OpenSessionResponse.decode(this.opener.open(n.value.sealed));
        if (m.keyRequest) {
          const req = m.keyRequest;
          this.emit("keyRequestReceived", req.jobId);
          void this.keyHolder.handleKeyRequest(req).then(
            (a) => this.send(a.release ? { keyRelease: a.release } : { keyDenied: a.denied }),
            (e: Error) => {
              this.emit("keyHolderError", e);
              this.send({ keyDenied: { jobId: req.jobId, requestSeq: req.requestSeq, reason: "KEY_HOLDER_ERROR" } });
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
      this.stream.cancel();
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
    const transcript: HandshakeTranscript = {
      sessionId: challenge.sessionId,
      variant: variant === "encrypt" ? ChallengeVariant.CHALLENGE_VARIANT_ENCRYPT_TO_CLIENT_KEY : ChallengeVariant.CHALLENGE_VARIANT_SIGN_BY_CLIENT_KEY,
      callKeyId: key.keyId,
      clientSealingKey: sealing?.publicKey ?? new Uint8Array(0),
      clientSigningJwk: variant === "encrypt" ? "" : JSON.stringify(key.publicJwk),
      enc: challenge.enc,
      ciphertext: challenge.ciphertext,
      nonce: challenge.nonce,
      serviceEphemeralKey: challenge.serviceEphemeralKey,
      clientEphemeralKey: new Uint8Array(0),
    };
    let proof: Uint8Array;
    let secret: Uint8Array;
    if (variant === "encrypt") {
      const opened = openAndExport(sealing!.privateKey, challenge.enc, challenge.ciphertext, { info: sessionChallengeInfo(challenge.sessionId) }, SESSION_EXPORTER_CONTEXT, 32);
      proof = opened.plaintext;
      secret = opened.exported;
    } else {
      const eph = generateX25519KeyPair();
      transcript.clientEphemeralKey = eph.publicKey;
      proof = key.sign(sessionProofMessage(challenge.sessionId, challenge.nonce, challenge.serviceEphemeralKey, eph.publicKey));
      try {
        secret = x25519Agree(eph.privateKey, challenge.serviceEphemeralKey, "challenge.service_ephemeral_key");
      } finally {
        eph.privateKey.fill(0);
      }
    }
    const keys = deriveSessionKeys(secret, transcript);
    secret.fill(0);
    stream.send({ challengeResponse: { proof, clientEphemeralKey: transcript.clientEphemeralKey, confirmation: confirmationMac(keys) } });
    const sealer = new FrameSealer(keys.clientToService, challenge.sessionId, "client-to-service");
    const opener = new FrameOpener(keys.serviceToClient, challenge.sessionId, "service-to-client");
    wipeSessionKeys(keys);
    const second = await iterator.next();
    // The first sealed frame is the service's confirmation that it derived the same keys.
    const established = second.done ? undefined : OpenSessionResponse.decode(opener.open(second.value.sealed)).established;
    if (!established || established.sessionId !== challenge.sessionId) throw new TrustplaneError("UNAUTHENTICATED", "SESSION_NOT_ESTABLISHED", "the service did not establish the session");
    const session = new JobSession(established.sessionId, established.expiresAtMs, jobs, storage, opts.keyHolder, stream, sealer, opener);
    void session.serve(iterator);
    return session;
  } catch (e) {
    stream.cancel();
    jobs.close();
    storage.close();
    throw e;
  }
}
