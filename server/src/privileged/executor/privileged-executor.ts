// The agent's privileged-operations executor (seed 002). Checks, in this order: signature →
// payload type → parse → time window → host id → nonce → certificate chain and restrictions →
// carrier → execute → sign the result with the host key → seal it with HPKE to the recipient key
// inside the request. Large outputs stream: a signed header, envelope-format chunks sealed as
// they are read, and a signed trailer naming the plaintext's digest. Only sealed results leave
// the host, and every outcome (executed, denied, failed) goes to the durable audit first; an
// operation with effects is audited as an attempt before it runs. A retry of the same envelope
// gets the stored answer (a streamed one: STREAM_ALREADY_SENT), and nothing runs twice.
import { createHash } from "node:crypto";
import {
  VerificationKeyCache,
  signEnvelope,
  verifyCertificate,
  verifyEnvelopeSync,
  type Certificate,
  type SigningKey,
  type VerificationKey,
} from "../../../../sdk/src/auth/index.js";
import { encryptStream, open, seal } from "../../../../sdk/src/envelope/index.js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { Certificate as CertificateMessage, SignedEnvelope } from "../../../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { PrivilegedRequest, PrivilegedResult, type SealedRequest, type SealedResult, type SubmitStreamResponse } from "../../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { PRIVILEGED_CERTIFICATE_OPTIONS, certificateRestrictions, type CertificateRestrictions } from "../../../../sdk/src/privileged/certificate-options.js";
import { OPERATIONS_WITH_EFFECTS, operationOf, resultIsStreamed, vmIdOf, type OperationClass, type OperationName } from "../../../../sdk/src/privileged/operations.js";
import { MAX_REQUEST_WINDOW_MS, PRIVILEGED_REQUEST_TYPE, PRIVILEGED_RESULT_TYPE, resultAad, resultInfo, sealedRequestInfo } from "../../../../sdk/src/privileged/payload-types.js";
import type { Caller } from "../../runtime/auth/caller.js";
import type { NonceStore } from "../../runtime/auth/nonce-store.js";
import type { OperationRegistry } from "../operations/operation-registry.js";
import type { OperationOutput } from "../operations/operation-output.js";
import { callSignedEnvelope, type EnvelopeSource } from "./call-covered-envelope.js";
import { coalesce } from "./coalesce-chunks.js";
import { ResultCache } from "./result-cache.js";

export interface PrivilegedAuditEvent {
  requestId: string;
  operation: string;
  vmId: string;
  signer?: string;
  carrier: string;
  /** "ok", ATTEMPT_OUTCOME, or the denial/failure reason. */
  outcome: string;
  detail?: string;
  /** The request's nonce once spent, and until when it must stay refused (replay cache rebuild). */
  requestNonce?: Uint8Array;
  replayUntilMs?: number;
}

/** Where outcomes go; resolves once the record is durable (log levels never reach it). */
export interface PrivilegedAudit {
  record(e: PrivilegedAuditEvent): Promise<void>;
}

export interface ExecutorDeps {
  hostId: string;
  hostKey: SigningKey;
  /** This host's X25519 private key (raw 32 bytes), for sealed requests. */
  sealingPrivateKey: Uint8Array;
  caKeys: () => VerificationKey[];
  nonces: NonceStore;
  operations: OperationRegistry;
  audit: PrivilegedAudit;
  now?: () => number;
  /** Tolerated clock difference for not_before. */
  skewMs?: number;
}

/** A request that passed every check and may run. */
interface Authorized {
  req: PrivilegedRequest;
  envelopeBytes: Uint8Array;
  /** SHA-256 of envelopeBytes: the result's request_digest and its HPKE info. */
  digest: Buffer;
  operation: OperationName;
  cert: Certificate;
  restrictions: CertificateRestrictions;
}

/** What the audit knows about a request so far (filled in as checks pass). */
interface AuditSubject {
  requestId: string;
  operation: string;
  vmId: string;
  signer?: string;
  carrier: string;
  requestNonce?: Uint8Array;
  replayUntilMs?: number;
}

/** What a submission answered, kept for its retries: a sealed one-shot result, or that a stream was sent. */
type Answer = { kind: "sealed"; sealed: SealedResult } | { kind: "streamed"; startedAtMs: number; requestId: string };

/** An authorized SubmitStream whose output streams. */
interface StreamStart {
  a: Authorized;
  output: OperationOutput;
  subject: AuditSubject;
  sealed?: SealedResult;
}

/** The outcome of the record written before an operation with effects runs. */
export const ATTEMPT_OUTCOME = "attempt";

function streamAlreadySent(answer: { startedAtMs: number; requestId: string }): TrustplaneError {
  return new TrustplaneError(
    "FAILED_PRECONDITION",
    "STREAM_ALREADY_SENT",
    `request ${answer.requestId} already ran at ${new Date(answer.startedAtMs).toISOString()} and its streamed result was sent (or is being sent) on another call; ` +
      "streamed results are not kept on the host, so sign a new request to run it again",
  );
}

/** Envelope pieces below this are merged into one chunk message; segments (1 MiB) go alone. */
const STREAM_SMALL_PIECE = 64 * 1024;

const denied = (reason: string, message: string, status: "PERMISSION_DENIED" | "UNAUTHENTICATED" | "INVALID_ARGUMENT" | "FAILED_PRECONDITION" = "PERMISSION_DENIED") =>
  new TrustplaneError(status, reason, message);

const reasonOf = (e: unknown) => (e instanceof TrustplaneError ? e.reason : "EXECUTION_FAILED");

export class PrivilegedExecutor {
  private readonly results: ResultCache<Answer>;
  private readonly signerKeys = new VerificationKeyCache(1000);

  constructor(private readonly deps: ExecutorDeps) {
    this.results = new ResultCache(10_000, deps.now);
  }

  private get skew(): number {
    return this.deps.skewMs ?? 30_000;
  }

  private now(): number {
    return (this.deps.now ?? Date.now)();
  }

  /** Opens a request sealed to this host into the envelope bytes it holds. */
  unsealRequest(sealed: SealedRequest): Uint8Array {
    if (sealed.hostId !== this.deps.hostId) throw denied("HOST_MISMATCH", `the request is sealed for host ${sealed.hostId}, this is ${this.deps.hostId}`);
    try {
      return open(this.deps.sealingPrivateKey, sealed.enc, sealed.ciphertext, { info: sealedRequestInfo(this.deps.hostId) });
    } catch {
      throw denied("SEALED_REQUEST_INVALID", "the sealed request does not open with this host's key (sealed for another host, or altered)", "UNAUTHENTICATED");
    }
  }

  /**
   * Unary Submit. A retry of the exact same envelope bytes inside the request's window gets the
   * stored outcome (the same sealed result, or the same refusal) and nothing runs again.
   */
  async execute(envelopeBytes: Uint8Array, carrier: Caller, source: EnvelopeSource = "sealed"): Promise<SealedResult> {
    const answer = await this.once(envelopeBytes, carrier, (subject, onNonceSpent) => this.executeOnce(envelopeBytes, source, carrier, subject, onNonceSpent));
    if (answer.kind === "streamed") throw streamAlreadySent(answer);
    return answer.sealed;
  }

  /**
   * SubmitStream: a one-shot result as a single `result` part, or for streamed outputs the
   * signed header (announcing stream_size), envelope chunks, then the signed trailer naming
   * SHA-256 and size of the plaintext. The plaintext is read, hashed and sealed piece by piece.
   *
   * A retry of the same envelope gets a stored one-shot result or refusal again, as Submit
   * does. A streamed result is not stored, by choice: keeping every dump's ciphertext on the
   * host for the request's window would put another copy of guest memory on the agent's disk
   * (as long-lived as the recipient key's secrecy) and double the agent's I/O for every dump,
   * to serve a retry that a fresh request serves as well with a newer snapshot. Such a retry is
   * answered STREAM_ALREADY_SENT, saying so.
   */
  async *executeStream(envelopeBytes: Uint8Array, carrier: Caller, source: EnvelopeSource = "sealed"): AsyncGenerator<SubmitStreamResponse> {
    let started: StreamStart | undefined;
    const answer = await this.once(envelopeBytes, carrier, async (subject, onNonceSpent) => {
      const s = await this.startStream(envelopeBytes, source, carrier, subject, onNonceSpent);
      if (s.sealed) return { kind: "sealed", sealed: s.sealed };
      started = s;
      return { kind: "streamed", startedAtMs: this.now(), requestId: s.a.req.requestId };
    });
    if (!started) {
      if (answer.kind === "streamed") throw streamAlreadySent(answer);
      yield { result: answer.sealed };
      return;
    }
    yield* this.streamOutput(started);
  }

  /**
   * Runs `first` for envelope bytes not seen inside their window, or answers a retry with the
   * stored answer (audited as a retry). A refusal before the nonce was spent (bad signature,
   * not yet valid…) is forgotten, so a retry is checked afresh.
   */
  private async once(envelopeBytes: Uint8Array, carrier: Caller, first: (subject: AuditSubject, onNonceSpent: (untilMs: number) => void) => Promise<Answer>): Promise<Answer> {
    const key = createHash("sha256").update(envelopeBytes).digest("base64");
    const prior = this.results.get(key);
    if (prior) return this.answerRetry(prior, envelopeBytes, carrier);
    let spentUntil: number | undefined;
    const subject: AuditSubject = { requestId: "", operation: "unknown", vmId: "", carrier: carrier.principal };
    const outcome = first(subject, (until) => (spentUntil = until));
    this.results.start(key, outcome);
    try {
      return await outcome;
    } catch (e) {
      if (spentUntil === undefined) this.results.forget(key);
      throw e;
    } finally {
      if (spentUntil !== undefined) this.results.settle(key, spentUntil);
    }
  }

  private async answerRetry(prior: Promise<Answer>, envelopeBytes: Uint8Array, carrier: Caller): Promise<Answer> {
    const subject: AuditSubject = { requestId: "", operation: "unknown", vmId: "", carrier: carrier.principal };
    try {
      const req = PrivilegedRequest.decode(SignedEnvelope.decode(envelopeBytes).payload);
      Object.assign(subject, { requestId: req.requestId, operation: operationOf(req)?.name ?? "none", vmId: vmIdOf(req) });
    } catch {
      // It parsed the first time (or the stored outcome is that refusal): the audit names what it can.
    }
    const detail = "a retry of the same signed request, answered with the stored outcome; not executed again";
    let answer: Answer;
    try {
      answer = await prior;
    } catch (e) {
      await this.deps.audit.record({ ...subject, outcome: reasonOf(e), detail: `${detail}: ${(e as Error).message}` });
      throw e;
    }
    if (answer.kind === "streamed") {
      const e = streamAlreadySent(answer);
      await this.deps.audit.record({ ...subject, outcome: e.reason, detail: e.message });
      throw e;
    }
    await this.deps.audit.record({ ...subject, outcome: "ok", detail });
    return answer;
  }

  /** Authorizes, records the attempt of an operation with effects, and runs it. */
  private async run(envelopeBytes: Uint8Array, source: EnvelopeSource, carrier: Caller, mode: "unary" | "stream", subject: AuditSubject, onNonceSpent: (untilMs: number) => void): Promise<{ a: Authorized; output: OperationOutput }> {
    try {
      const a = await this.authorize(envelopeBytes, source, carrier, mode, subject, onNonceSpent);
      if (OPERATIONS_WITH_EFFECTS.has(a.operation)) {
        // Durable before anything happens: a crash while the guest stops, the config changes or
        // memory is read still leaves this trace (and the spent nonce) in the audit.
        await this.deps.audit.record({ ...subject, outcome: ATTEMPT_OUTCOME, detail: `${a.operation} authorized for ${a.cert.principal}; its outcome follows in a later record` });
      }
      const output = await this.deps.operations.run(a.operation, a.req, { principal: a.cert.principal, maxMemoryRead: a.restrictions.maxMemoryRead });
      return { a, output };
    } catch (e) {
      await this.deps.audit.record({ ...subject, outcome: reasonOf(e), detail: (e as Error).message });
      throw e;
    }
  }

  private async executeOnce(envelopeBytes: Uint8Array, source: EnvelopeSource, carrier: Caller, subject: AuditSubject, onNonceSpent: (untilMs: number) => void): Promise<Answer> {
    const { a, output } = await this.run(envelopeBytes, source, carrier, "unary", subject, onNonceSpent);
    // The registry only streams what resultIsStreamed names; anything else would be a bug here.
    if (output.stream) {
      await output.stream.dispose();
      const e = new TrustplaneError("INTERNAL", "STREAM_UNEXPECTED", `${a.operation} produced a stream for a unary Submit`);
      await this.deps.audit.record({ ...subject, outcome: e.reason, detail: e.message });
      throw e;
    }
    const sealed = this.sealResult(this.resultOf(a, output), a);
    await this.deps.audit.record({ ...subject, outcome: "ok" });
    return { kind: "sealed", sealed };
  }

  /** Authorizes and runs a SubmitStream request: a one-shot result sealed, or a stream to send. */
  private async startStream(envelopeBytes: Uint8Array, source: EnvelopeSource, carrier: Caller, subject: AuditSubject, onNonceSpent: (untilMs: number) => void): Promise<StreamStart> {
    const { a, output } = await this.run(envelopeBytes, source, carrier, "stream", subject, onNonceSpent);
    if (!output.stream) {
      const sealed = this.sealResult(this.resultOf(a, output), a);
      await this.deps.audit.record({ ...subject, outcome: "ok" });
      return { a, output, subject, sealed };
    }
    return { a, output, subject };
  }

  private async *streamOutput({ a, output, subject }: StreamStart): AsyncGenerator<SubmitStreamResponse> {
    const stream = output.stream!;
    let finished = false;
    let failure: unknown;
    let size = 0;
    const hash = createHash("sha256");
    try {
      yield { result: this.sealResult(this.resultOf(a, output, { streamSize: stream.size }), a) };
      async function* plaintext(): AsyncGenerator<Uint8Array> {
        for await (const chunk of stream.chunks()) {
          hash.update(chunk);
          size += chunk.length;
          yield chunk;
        }
      }
      const envelope = encryptStream(plaintext(), { recipientPublicKey: a.req.recipientPublicKey, info: a.digest, aad: resultAad(this.deps.hostId, a.req.requestId) });
      for await (const chunk of coalesce(envelope, STREAM_SMALL_PIECE)) yield { chunk };
      if (size !== stream.size) throw new TrustplaneError("INTERNAL", "STREAM_SIZE_CHANGED", `the output was announced as ${stream.size} bytes but ${size} were read`);
      const digest = hash.digest();
      yield { trailer: this.sealResult(this.resultOf(a, output, { streamSize: size, streamSha256: digest }), a) };
      finished = true;
      await this.deps.audit.record({ ...subject, outcome: "ok", detail: `streamed ${size} bytes, sha256 ${digest.toString("hex")}` });
    } catch (e) {
      failure = e;
      throw e;
    } finally {
      await stream.dispose();
      if (!finished) {
        // Failed, or the client went away mid-stream (the generator is closed without an error).
        const outcome = failure === undefined ? "CANCELLED" : reasonOf(failure);
        const detail = failure === undefined ? `the caller stopped reading after ${size} of ${stream.size} bytes` : (failure as Error).message;
        await this.deps.audit.record({ ...subject, outcome, detail });
      }
    }
  }

  private resultOf(a: Authorized, output: OperationOutput, stream: { streamSize?: number; streamSha256?: Uint8Array } = {}): PrivilegedResult {
    const { stream: _stream, ...fields } = output;
    return PrivilegedResult.fromPartial({
      requestId: a.req.requestId,
      hostId: this.deps.hostId,
      requestDigest: a.digest,
      executedAtMs: this.now(),
      outcome: "ok",
      ...fields,
      ...stream,
    });
  }

  private async authorize(envelopeBytes: Uint8Array, source: EnvelopeSource, carrier: Caller, mode: "unary" | "stream", subject: AuditSubject, onNonceSpent: (untilMs: number) => void): Promise<Authorized> {
    const now = this.now();
    let envelope: SignedEnvelope;
    try {
      envelope = SignedEnvelope.decode(envelopeBytes);
    } catch {
      throw denied("REQUEST_MALFORMED", "the request envelope does not parse as a SignedEnvelope", "INVALID_ARGUMENT");
    }
    // 1. Signature, with the key the attached certificate names (trusted only at step 7).
    const sig = envelope.signatures[0];
    if (!sig || envelope.signatures.length !== 1 || sig.certificate.length === 0) {
      throw denied("SIGNATURE_INVALID", "a privileged request carries exactly one signature with the operator's CA certificate", "UNAUTHENTICATED");
    }
    let signerCertificate: CertificateMessage;
    let signerCertificateBytes: Uint8Array;
    try {
      signerCertificateBytes = SignedEnvelope.decode(sig.certificate).payload;
      signerCertificate = CertificateMessage.decode(signerCertificateBytes);
    } catch {
      throw denied("CERTIFICATE_INVALID", "the attached certificate does not parse", "UNAUTHENTICATED");
    }
    let payload: Uint8Array;
    if (source === "in-call" && callSignedEnvelope(carrier, sig.keyId, signerCertificateBytes)) {
      // The carrier's own call signature already covers this envelope (see callSignedEnvelope);
      // the payload type is still checked before anything parses.
      if (envelope.payloadType !== PRIVILEGED_REQUEST_TYPE) {
        throw denied("PAYLOAD_TYPE_MISMATCH", `the envelope holds ${JSON.stringify(envelope.payloadType)}, expected ${JSON.stringify(PRIVILEGED_REQUEST_TYPE)}`, "UNAUTHENTICATED");
      }
      payload = envelope.payload;
    } else {
      let signerKey: VerificationKey;
      try {
        signerKey = this.signerKeys.get(signerCertificate.publicKeyJwk);
      } catch {
        throw denied("CERTIFICATE_INVALID", "the attached certificate names no valid public key", "UNAUTHENTICATED");
      }
      try {
        // 2. Payload type is checked by the verifier after the signature.
        payload = verifyEnvelopeSync(envelope, { expectedType: PRIVILEGED_REQUEST_TYPE, resolveKey: (id) => (id === signerKey.keyId ? signerKey : undefined) }).payload;
      } catch (e) {
        if (e instanceof TrustplaneError) throw denied(e.reason, e.message, "UNAUTHENTICATED");
        throw e;
      }
    }
    // 3. Parse.
    let req: PrivilegedRequest;
    try {
      req = PrivilegedRequest.decode(payload);
    } catch {
      throw denied("REQUEST_MALFORMED", "the signed request does not parse", "INVALID_ARGUMENT");
    }
    const op = operationOf(req);
    Object.assign(subject, { requestId: req.requestId, operation: op?.name ?? "none", vmId: vmIdOf(req) });
    // 4. Time window.
    if (req.notAfterMs - req.notBeforeMs > MAX_REQUEST_WINDOW_MS || req.notAfterMs <= req.notBeforeMs) {
      throw denied("REQUEST_WINDOW_INVALID", `a request may be valid for at most ${MAX_REQUEST_WINDOW_MS / 60_000} minutes`, "INVALID_ARGUMENT");
    }
    if (now + this.skew < req.notBeforeMs) throw denied("REQUEST_NOT_YET_VALID", `the request is valid from ${new Date(req.notBeforeMs).toISOString()}`);
    if (now > req.notAfterMs) throw denied("REQUEST_EXPIRED", `the request expired at ${new Date(req.notAfterMs).toISOString()}; sign a new one`);
    // 5. Host.
    if (req.hostId !== this.deps.hostId) throw denied("HOST_MISMATCH", `the request is for host ${req.hostId}, this is ${this.deps.hostId}`);
    if (!op) throw denied("OPERATION_MISSING", "the request names no operation", "INVALID_ARGUMENT");
    // Routing, before the nonce is spent: a unary call cannot carry a streamed result.
    if (mode === "unary" && resultIsStreamed(req)) {
      throw denied("STREAM_REQUIRED", `${op.name} of this size returns a stream: submit it with SubmitStream (the SDK's submitPrivilegedStream)`, "FAILED_PRECONDITION");
    }
    // 6. Nonce, remembered for the request's whole window.
    if (req.nonce.length !== 16) throw denied("NONCE_INVALID", "the request nonce must be 128 bits", "INVALID_ARGUMENT");
    const replayUntilMs = req.notAfterMs + this.skew;
    if (!(await this.deps.nonces.remember(req.nonce, replayUntilMs))) throw denied("NONCE_REPLAYED", "this request was already executed; each request runs once", "UNAUTHENTICATED");
    // Every audit record from here on carries the nonce, so a restarted agent refuses it again.
    Object.assign(subject, { requestNonce: req.nonce, replayUntilMs });
    onNonceSpent(replayUntilMs);
    // 7. Certificate chain and its restrictions (host pattern included, checked there only).
    let cert: Certificate;
    let restrictions: CertificateRestrictions;
    try {
      cert = verifyCertificate(sig.certificate, { caKeys: this.deps.caKeys(), nowMs: now, keyId: sig.keyId, hostId: this.deps.hostId, knownOptions: PRIVILEGED_CERTIFICATE_OPTIONS as Set<string> });
      restrictions = certificateRestrictions(cert);
    } catch (e) {
      if (e instanceof TrustplaneError) throw denied(e.reason, e.message, "PERMISSION_DENIED");
      throw e;
    }
    subject.signer = cert.principal;
    this.checkAllowed(cert, restrictions, op.name, op.operationClass);
    if (req.recipientPublicKey.length !== 32) throw denied("RECIPIENT_KEY_INVALID", "the recipient key must be a raw 32-byte X25519 key", "INVALID_ARGUMENT");
    // 8. The carrier: the signer itself, or a principal certified to carry.
    if (carrier.principal !== cert.principal && !(carrier.certificate?.operationClasses.includes("carry") ?? false)) {
      throw denied("POLICY_DENIED", `${carrier.principal} may not carry requests signed by ${cert.principal}; its certificate needs the carry class`);
    }
    return { req, envelopeBytes, digest: resultInfo(envelopeBytes), operation: op.name, cert, restrictions };
  }

  private checkAllowed(cert: Certificate, restrictions: CertificateRestrictions, name: OperationName, operationClass: OperationClass): void {
    if (!cert.operationClasses.includes(operationClass)) {
      throw denied("POLICY_DENIED", `${cert.principal}'s certificate does not allow ${operationClass} operations (${name}); it allows ${cert.operationClasses.join(", ") || "nothing"}`);
    }
    if (restrictions.operations && !restrictions.operations.has(name)) {
      throw denied("POLICY_DENIED", `${cert.principal}'s certificate allows only ${[...restrictions.operations].join(", ")}, not ${name}`);
    }
  }

  private sealResult(result: PrivilegedResult, a: Authorized): SealedResult {
    const signed = signEnvelope(PRIVILEGED_RESULT_TYPE, PrivilegedResult.encode(result).finish(), [this.deps.hostKey]);
    const sealed = seal(a.req.recipientPublicKey, SignedEnvelope.encode(signed).finish(), { info: a.digest, aad: resultAad(this.deps.hostId, a.req.requestId) });
    return { hostId: this.deps.hostId, requestId: a.req.requestId, enc: sealed.enc, ciphertext: sealed.ciphertext };
  }
}
