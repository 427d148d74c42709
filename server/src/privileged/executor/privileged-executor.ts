// The agent's privileged-operations executor (seed 002). Checks, in this order: signature →
// payload type → parse → time window → host id → nonce → certificate chain and restrictions →
// carrier → execute → sign the result with the host key → seal it with HPKE to the recipient key
// inside the request. Large outputs stream: a signed header, envelope-format chunks sealed as
// they are read, and a signed trailer naming the plaintext's digest. Only sealed results leave
// the host, and every outcome (executed, denied, failed) goes to the durable audit first.
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
import { operationOf, resultIsStreamed, vmIdOf, type OperationClass, type OperationName } from "../../../../sdk/src/privileged/operations.js";
import { MAX_REQUEST_WINDOW_MS, PRIVILEGED_REQUEST_TYPE, PRIVILEGED_RESULT_TYPE, resultAad, resultInfo, sealedRequestInfo } from "../../../../sdk/src/privileged/payload-types.js";
import type { Caller } from "../../runtime/auth/caller.js";
import type { NonceStore } from "../../runtime/auth/nonce-store.js";
import type { OperationRegistry } from "../operations/operation-registry.js";
import type { OperationOutput } from "../operations/operation-output.js";
import { coalesce } from "./coalesce-chunks.js";
import { ResultCache } from "./result-cache.js";

export interface PrivilegedAuditEvent {
  requestId: string;
  operation: string;
  vmId: string;
  signer?: string;
  carrier: string;
  outcome: string;
  detail?: string;
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
}

/** Envelope pieces below this are merged into one chunk message; segments (1 MiB) go alone. */
const STREAM_SMALL_PIECE = 64 * 1024;

const denied = (reason: string, message: string, status: "PERMISSION_DENIED" | "UNAUTHENTICATED" | "INVALID_ARGUMENT" | "FAILED_PRECONDITION" = "PERMISSION_DENIED") =>
  new TrustplaneError(status, reason, message);

const reasonOf = (e: unknown) => (e instanceof TrustplaneError ? e.reason : "EXECUTION_FAILED");

export class PrivilegedExecutor {
  private readonly results: ResultCache<SealedResult>;
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
  async execute(envelopeBytes: Uint8Array, carrier: Caller): Promise<SealedResult> {
    const key = createHash("sha256").update(envelopeBytes).digest("base64");
    const prior = this.results.get(key);
    if (prior) return this.answerRetry(prior, envelopeBytes, carrier);
    let spentUntil: number | undefined;
    const outcome = this.executeOnce(envelopeBytes, carrier, (until) => (spentUntil = until));
    this.results.start(key, outcome);
    try {
      return await outcome;
    } catch (e) {
      // Refused before its nonce was spent (bad signature, not yet valid…): a retry is checked afresh.
      if (spentUntil === undefined) this.results.forget(key);
      throw e;
    } finally {
      if (spentUntil !== undefined) this.results.settle(key, spentUntil);
    }
  }

  private async answerRetry(prior: Promise<SealedResult>, envelopeBytes: Uint8Array, carrier: Caller): Promise<SealedResult> {
    const subject: AuditSubject = { requestId: "", operation: "unknown", vmId: "", carrier: carrier.principal };
    try {
      const req = PrivilegedRequest.decode(SignedEnvelope.decode(envelopeBytes).payload);
      Object.assign(subject, { requestId: req.requestId, operation: operationOf(req)?.name ?? "none", vmId: vmIdOf(req) });
    } catch {
      // It parsed the first time (or the stored outcome is that refusal): the audit names what it can.
    }
    const detail = "a retry of the same signed request, answered with the stored outcome; not executed again";
    try {
      const r = await prior;
      await this.deps.audit.record({ ...subject, outcome: "ok", detail });
      return r;
    } catch (e) {
      await this.deps.audit.record({ ...subject, outcome: reasonOf(e), detail: `${detail}: ${(e as Error).message}` });
      throw e;
    }
  }

  private async executeOnce(envelopeBytes: Uint8Array, carrier: Caller, onNonceSpent: (untilMs: number) => void): Promise<SealedResult> {
    const subject: AuditSubject = { requestId: "", operation: "unknown", vmId: "", carrier: carrier.principal };
    let a: Authorized;
    let output: OperationOutput;
    try {
      a = await this.authorize(envelopeBytes, carrier, "unary", subject, onNonceSpent);
      output = await this.deps.operations.run(a.operation, a.req, { principal: a.cert.principal, maxMemoryRead: a.restrictions.maxMemoryRead });
    } catch (e) {
      await this.deps.audit.record({ ...subject, outcome: reasonOf(e), detail: (e as Error).message });
      throw e;
    }
    // The registry only streams what resultIsStreamed names; anything else would be a bug here.
    if (output.stream) {
      await output.stream.dispose();
      const e = new TrustplaneError("INTERNAL", "STREAM_UNEXPECTED", `${a.operation} produced a stream for a unary Submit`);
      await this.deps.audit.record({ ...subject, outcome: e.reason, detail: e.message });
      throw e;
    }
    const sealed = this.sealResult(this.resultOf(a, output), a);
    await this.deps.audit.record({ ...subject, outcome: "ok" });
    return sealed;
  }

  /**
   * SubmitStream: a one-shot result as a single `result` part, or for streamed outputs the
   * signed header (announcing stream_size), envelope chunks, then the signed trailer naming
   * SHA-256 and size of the plaintext. The plaintext is read, hashed and sealed piece by piece.
   */
  async *executeStream(envelopeBytes: Uint8Array, carrier: Caller): AsyncGenerator<SubmitStreamResponse> {
    const subject: AuditSubject = { requestId: "", operation: "unknown", vmId: "", carrier: carrier.principal };
    let a: Authorized;
    let output: OperationOutput;
    try {
      a = await this.authorize(envelopeBytes, carrier, "stream", subject, () => undefined);
      output = await this.deps.operations.run(a.operation, a.req, { principal: a.cert.principal, maxMemoryRead: a.restrictions.maxMemoryRead });
    } catch (e) {
      await this.deps.audit.record({ ...subject, outcome: reasonOf(e), detail: (e as Error).message });
      throw e;
    }
    const stream = output.stream;
    if (!stream) {
      const sealed = this.sealResult(this.resultOf(a, output), a);
      await this.deps.audit.record({ ...subject, outcome: "ok" });
      yield { result: sealed };
      return;
    }
    let finished = false;
    let failure: unknown;
    let size = 0;
    const hash = createHash("sha256");
    try {
      yield { result: this.sealResult(this.resultOf(a, output, { streamSize: stream.size }), a) };
      async function* plaintext(): AsyncGenerator<Uint8Array> {
        for await (const chunk of stream!.chunks()) {
          hash.update(chunk);
          size += chunk.length;
          yield chunk;
        }
      }
      const envelope = encryptStream(plaintext(), { recipientPublicKey: a.req.recipientPublicKey, info: resultInfo(a.envelopeBytes), aad: resultAad(this.deps.hostId, a.req.requestId) });
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
      requestDigest: createHash("sha256").update(a.envelopeBytes).digest(),
      executedAtMs: this.now(),
      outcome: "ok",
      ...fields,
      ...stream,
    });
  }

  private async authorize(envelopeBytes: Uint8Array, carrier: Caller, mode: "unary" | "stream", subject: AuditSubject, onNonceSpent: (untilMs: number) => void): Promise<Authorized> {
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
    let signerKey: VerificationKey;
    try {
      signerKey = this.signerKeys.get(CertificateMessage.decode(SignedEnvelope.decode(sig.certificate).payload).publicKeyJwk);
    } catch {
      throw denied("CERTIFICATE_INVALID", "the attached certificate does not parse or names no valid public key", "UNAUTHENTICATED");
    }
    let payload: Uint8Array;
    try {
      // 2. Payload type is checked by the verifier after the signature.
      payload = verifyEnvelopeSync(envelope, { expectedType: PRIVILEGED_REQUEST_TYPE, resolveKey: (id) => (id === signerKey.keyId ? signerKey : undefined) }).payload;
    } catch (e) {
      if (e instanceof TrustplaneError) throw denied(e.reason, e.message, "UNAUTHENTICATED");
      throw e;
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
    if (!(await this.deps.nonces.remember(req.nonce, req.notAfterMs + this.skew))) throw denied("NONCE_REPLAYED", "this request was already executed; each request runs once", "UNAUTHENTICATED");
    onNonceSpent(req.notAfterMs + this.skew);
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
    return { req, envelopeBytes, operation: op.name, cert, restrictions };
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
    const sealed = seal(a.req.recipientPublicKey, SignedEnvelope.encode(signed).finish(), { info: resultInfo(a.envelopeBytes), aad: resultAad(this.deps.hostId, a.req.requestId) });
    return { hostId: this.deps.hostId, requestId: a.req.requestId, enc: sealed.enc, ciphertext: sealed.ciphertext };
  }
}
