// Job sessions (seed 003, "secure channel"): a bidirectional stream bound by a proof-of-
// possession challenge to the client's key. Both variants: ENCRYPT_TO_CLIENT_KEY (a secret
// HPKE-sealed to the client's X25519 key, returned in clear) and SIGN_BY_CLIENT_KEY (a nonce
// and both ECDH halves signed over PAE by the call-signing key). Session keys derived from what
// the wire never carried (HPKE exporter / ECDH) and from the call key id seal every message
// after the handshake in both directions (session-frames.ts): only that client can speak.
import { randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { importVerificationKey, type VerificationKey } from "../../../sdk/src/auth/index.js";
import { TrustplaneError } from "../../../sdk/src/errors.js";
import { x25519Agree } from "../../../sdk/src/envelope/dhkem-x25519.js";
import { sealAndExport } from "../../../sdk/src/envelope/hpke.js";
import { checkRawKey, generateX25519KeyPair } from "../../../sdk/src/envelope/x25519-keys.js";
import {
  ChallengeVariant,
  OpenSessionRequest,
  OpenSessionResponse,
  type KeyDenied,
  type KeyRelease,
  type KeyRequest,
} from "../../../sdk/src/gen/trustplane/job/v1/job.js";
import { sessionChallengeInfo, sessionProofMessage } from "../../../sdk/src/job/job-bindings.js";
import { FrameOpener, FrameSealer, frameRefused } from "../../../sdk/src/job/session-frames.js";
import { SESSION_EXPORTER_CONTEXT, confirmationMatches, deriveSessionKeys, wipeSessionKeys, type HandshakeTranscript } from "../../../sdk/src/job/session-keys.js";
import type { CallContext } from "../runtime/auth/service-binder.js";
import { AsyncChannel } from "./async-channel.js";

export const SESSION_TTL_MS = 60 * 60 * 1000;
const CHALLENGE_TIMEOUT_MS = 30_000;
/** How long a job VM waits for the client to answer a key request. */
export const KEY_REQUEST_TIMEOUT_MS = 120_000;

export class JobSession {
  readonly out = new AsyncChannel<OpenSessionResponse>();
  readonly expiresAtMs = Date.now() + SESSION_TTL_MS;
  private readonly pending = new Map<string, { resolve: (r: { release?: KeyRelease; denied?: KeyDenied }) => void; timer: NodeJS.Timeout }>();
  private seq = 0;
  closed = false;

  constructor(
    readonly id: string,
    readonly principal: string,
    /** What the session is bound to: the proven key's description (thumbprint or X25519 key). */
    readonly boundKey: string,
  ) {}

  get live(): boolean {
    return !this.closed && Date.now() < this.expiresAtMs;
  }

  send(m: OpenSessionResponse): void {
    this.out.push(m);
  }

  /** Forwards a job VM's key request to the client and waits for its answer. */
  requestKey(req: Omit<KeyRequest, "requestSeq">): Promise<{ release?: KeyRelease; denied?: KeyDenied }> {
    if (!this.live) return Promise.resolve({ denied: { jobId: req.jobId, requestSeq: 0, reason: "SESSION_CLOSED" } });
    const requestSeq = ++this.seq;
    const key = `${req.jobId}:${requestSeq}`;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(key);
        resolve({ denied: { jobId: req.jobId, requestSeq, reason: "KEY_REQUEST_TIMEOUT" } });
      }, KEY_REQUEST_TIMEOUT_MS);
      this.pending.set(key, { resolve, timer });
      this.send({ keyRequest: { ...req, requestSeq } });
    });
  }

  /** A client answer; answers to requests this session never made are ignored. */
  answer(m: OpenSessionRequest): void {
    const a = m.keyRelease ?? m.keyDenied;
    if (!a) return;
    const key = `${a.jobId}:${a.requestSeq}`;
    const p = this.pending.get(key);
    if (!p) return;
    this.pending.delete(key);
    clearTimeout(p.timer);
    p.resolve(m.keyRelease ? { release: m.keyRelease } : { denied: m.keyDenied });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [key, p] of this.pending) {
      clearTimeout(p.timer);
      p.resolve({ denied: { jobId: key.split(":")[0]!, requestSeq: 0, reason: "SESSION_CLOSED" } });
    }
    this.pending.clear();
    this.out.end();
  }
}

function proofFailed(detail: string): TrustplaneError {
  return new TrustplaneError("UNAUTHENTICATED", "SESSION_PROOF_INVALID", `no session: ${detail}; answer the challenge with the key named in Hello`);
}

export class SessionManager {
  private readonly sessions = new Map<string, JobSession>();
  private readonly closedListeners: ((sessionId: string) => void)[] = [];

  /** Called once per session when it ends (stream closed or expired). */
  onClosed(listener: (sessionId: string) => void): void {
    this.closedListeners.push(listener);
  }

  private ended(id: string): void {
    this.sessions.delete(id);
    for (const l of this.closedListeners) l(id);
  }

  get(id: string): JobSession | undefined {
    const s = this.sessions.get(id);
    if (s && !s.live) {
      s.close();
      this.ended(id);
      return undefined;
    }
    return s;
  }

  closeAll(): void {
    for (const s of this.sessions.values()) s.close();
    this.sessions.clear();
  }

  /** The OpenSession handler: challenge, verify, derive the session keys, then route the client's sealed answers. */
  open(stream: AsyncIterable<OpenSessionRequest>, ctx: CallContext): AsyncIterable<OpenSessionResponse> {
    const channel = new AsyncChannel<OpenSessionResponse>();
    const it = stream[Symbol.asyncIterator]();
    const nextWithin = async (ms: number) => {
      let timer: NodeJS.Timeout | undefined;
      try {
        return await Promise.race([
          it.next(),
          new Promise<never>((_, reject) => (timer = setTimeout(() => reject(proofFailed("the challenge was not answered in time")), ms))),
        ]);
      } finally {
        clearTimeout(timer);
      }
    };
    void (async () => {
      const first = await it.next();
      const hello = first.done ? undefined : first.value.hello;
      if (!hello) throw new TrustplaneError("INVALID_ARGUMENT", "HELLO_REQUIRED", "the first OpenSession message must be Hello with your public key", "hello");
      const sessionId = `ses_${randomUUID()}`;
      const transcript: HandshakeTranscript = {
        sessionId,
        variant: hello.variant,
        callKeyId: ctx.caller.keyId,
        clientSealingKey: hello.clientSealingKey,
        clientSigningJwk: hello.clientSigningJwk,
        enc: new Uint8Array(0),
        ciphertext: new Uint8Array(0),
        nonce: new Uint8Array(0),
        serviceEphemeralKey: new Uint8Array(0),
        clientEphemeralKey: new Uint8Array(0),
      };
      // Checks the proof and returns the session secret (never on the wire), or throws.
      let prove: (answer: { proof: Uint8Array; clientEphemeralKey: Uint8Array }) => Uint8Array;
      let boundKey: string;
      if (hello.variant === ChallengeVariant.CHALLENGE_VARIANT_ENCRYPT_TO_CLIENT_KEY) {
        checkRawKey(hello.clientSealingKey, "hello.client_sealing_key");
        const secret = randomBytes(32);
        const sealed = sealAndExport(hello.clientSealingKey, secret, { info: sessionChallengeInfo(sessionId) }, SESSION_EXPORTER_CONTEXT, 32);
        Object.assign(transcript, { enc: sealed.enc, ciphertext: sealed.ciphertext });
        channel.push({ challenge: { variant: hello.variant, enc: sealed.enc, ciphertext: sealed.ciphertext, nonce: new Uint8Array(0), sessionId, serviceEphemeralKey: new Uint8Array(0) } });
        prove = ({ proof }) => {
          if (!(proof.length === secret.length && timingSafeEqual(proof, secret))) throw proofFailed("the challenge response does not prove possession of the key");
          return sealed.exported;
        };
        boundKey = `x25519:${Buffer.from(hello.clientSealingKey).toString("base64url")}`;
      } else if (hello.variant === ChallengeVariant.CHALLENGE_VARIANT_SIGN_BY_CLIENT_KEY) {
        let key: VerificationKey;
        try {
          key = importVerificationKey(hello.clientSigningJwk);
        } catch (e) {
          throw new TrustplaneError("INVALID_ARGUMENT", "SESSION_KEY_INVALID", `hello.client_signing_jwk: ${(e as Error).message}`, "hello.client_signing_jwk");
        }
        if (key.algorithm === "HS256") throw new TrustplaneError("INVALID_ARGUMENT", "SESSION_KEY_INVALID", "hello.client_signing_jwk: use an asymmetric key (Ed25519 or ES256)", "hello.client_signing_jwk");
        // The session is the caller's: the key it proves is the key that signs its calls.
        if (key.keyId !== ctx.caller.keyId) {
          throw new TrustplaneError("PERMISSION_DENIED", "SESSION_KEY_NOT_CALLER", `hello.client_signing_jwk: key ${key.keyId} is not the key that signed this call (${ctx.caller.keyId}); open the session with your call-signing key`, "hello.client_signing_jwk");
        }
        const nonce = randomBytes(32);
        const eph = generateX25519KeyPair();
        Object.assign(transcript, { nonce, serviceEphemeralKey: eph.publicKey });
        channel.push({ challenge: { variant: hello.variant, enc: new Uint8Array(0), ciphertext: new Uint8Array(0), nonce, sessionId, serviceEphemeralKey: eph.publicKey } });
        prove = ({ proof, clientEphemeralKey }) => {
          try {
            checkRawKey(clientEphemeralKey, "challenge_response.client_ephemeral_key");
          } catch {
            throw proofFailed("the challenge response carries no valid client ephemeral key");
          }
          if (!key.verify(sessionProofMessage(sessionId, nonce, eph.publicKey, clientEphemeralKey), proof)) throw proofFailed("the challenge response does not prove possession of the key");
          try {
            return x25519Agree(eph.privateKey, clientEphemeralKey, "challenge_response.client_ephemeral_key");
          } finally {
            eph.privateKey.fill(0);
          }
        };
        boundKey = `jwk:${key.keyId}`;
      } else {
        throw new TrustplaneError("INVALID_ARGUMENT", "CHALLENGE_VARIANT_REQUIRED", "hello.variant: choose ENCRYPT_TO_CLIENT_KEY or SIGN_BY_CLIENT_KEY", "hello.variant");
      }
      const answer = await nextWithin(CHALLENGE_TIMEOUT_MS);
      const response = answer.done ? undefined : answer.value.challengeResponse;
      if (!response) throw proofFailed("the second message must be the challenge response");
      const secret = prove(response);
      transcript.clientEphemeralKey = response.clientEphemeralKey;
      const keys = deriveSessionKeys(secret, transcript);
      secret.fill(0);
      if (!confirmationMatches(keys, response.confirmation)) {
        wipeSessionKeys(keys);
        throw proofFailed("the session confirmation does not match: the keys were derived for another handshake or another call key");
      }
      const sealer = new FrameSealer(keys.serviceToClient, sessionId, "service-to-client");
      const opener = new FrameOpener(keys.clientToService, sessionId, "client-to-service");
      wipeSessionKeys(keys);
      const session = new JobSession(sessionId, ctx.caller.principal, boundKey);
      this.sessions.set(sessionId, session);
      ctx.logger.info({ sessionId, boundKey }, "job session established");
      const sealed = (m: OpenSessionResponse): OpenSessionResponse => ({ sealed: sealer.seal(OpenSessionResponse.encode(OpenSessionResponse.fromPartial(m)).finish()) }) as OpenSessionResponse;
      channel.push(sealed({ established: { sessionId, expiresAtMs: session.expiresAtMs } } as OpenSessionResponse));
      // Everything the session sends from now on goes out on this stream.
      void (async () => {
        for await (const m of session.out) channel.push(sealed(m));
        channel.end();
        sealer.wipe();
      })();
      const onAbort = () => session.close();
      ctx.signal.addEventListener("abort", onAbort, { once: true });
      try {
        for (let n = await it.next(); !n.done; n = await it.next()) {
          // Verify the frame's bytes first, then parse what they hold.
          const inner = OpenSessionRequest.decode(opener.open(n.value.sealed));
          if (!inner.keyRelease && !inner.keyDenied) throw frameRefused("a sealed client message must be a key release or denial");
          session.answer(inner);
        }
      } catch (e) {
        // The refusal reaches the client as the stream's status (before the close ends it).
        ctx.logger.warn({ sessionId, reason: (e as TrustplaneError).reason }, "job session closed: a message was refused");
        channel.fail(e);
        throw e;
      } finally {
        opener.wipe();
        ctx.signal.removeEventListener("abort", onAbort);
        session.close();
        this.ended(sessionId);
      }
    })().catch((e: unknown) => channel.fail(e));
    return channel;
  }
}
