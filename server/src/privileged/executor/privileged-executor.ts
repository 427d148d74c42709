// The agent's privileged-operations executor (seed 002). Checks, in this order: signature →
// payload type → parse → time window → host id → nonce → certificate chain and restrictions →
// carrier → execute → sign the result with the host key → seal it with HPKE to the recipient key
// inside the request. Only the sealed result leaves the host. Every outcome is audited.
import { createHash } from "node:crypto";
import {
  hostPatternMatches,
  importVerificationKey,
  signEnvelope,
  verifyCertificate,
  verifyEnvelopeSync,
  type Certificate,
  type SigningKey,
  type VerificationKey,
} from "../../../../sdk/src/auth/index.js";
import { open, seal } from "../../../../sdk/src/envelope/index.js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { Certificate as CertificateMessage, SignedEnvelope } from "../../../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { PrivilegedRequest, PrivilegedResult, type SealedRequest, type SealedResult } from "../../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import {
  MAX_REQUEST_WINDOW_MS,
  PRIVILEGED_REQUEST_TYPE,
  PRIVILEGED_RESULT_TYPE,
  resultAad,
  resultInfo,
  sealedRequestInfo,
} from "../../../../sdk/src/privileged/payload-types.js";
import type { Caller } from "../../runtime/auth/caller.js";
import type { NonceStore } from "../../runtime/auth/nonce-store.js";
import { operationOf, type OperationRegistry } from "../operations/operation-registry.js";

export interface PrivilegedAuditEvent {
  requestId: string;
  operation: string;
  signer?: string;
  carrier: string;
  outcome: string;
  detail?: string;
}

export interface ExecutorDeps {
  hostId: string;
  hostKey: SigningKey;
  /** This host's X25519 private key (raw 32 bytes), for sealed requests. */
  sealingPrivateKey: Uint8Array;
  caKeys: () => VerificationKey[];
  nonces: NonceStore;
  operations: OperationRegistry;
  audit(e: PrivilegedAuditEvent): void;
  now?: () => number;
  /** Tolerated clock difference for not_before. */
  skewMs?: number;
}

const denied = (reason: string, message: string, status: "PERMISSION_DENIED" | "UNAUTHENTICATED" | "INVALID_ARGUMENT" | "FAILED_PRECONDITION" = "PERMISSION_DENIED") =>
  new TrustplaneError(status, reason, message);

export class PrivilegedExecutor {
  constructor(private readonly deps: ExecutorDeps) {}

  /** Opens a request sealed to this host; one sealed for another host does not open here. */
  unsealRequest(sealed: SealedRequest): SignedEnvelope {
    if (sealed.hostId !== this.deps.hostId) throw denied("HOST_MISMATCH", `the request is sealed for host ${sealed.hostId}, this is ${this.deps.hostId}`);
    let bytes: Uint8Array;
    try {
      bytes = open(this.deps.sealingPrivateKey, sealed.enc, sealed.ciphertext, { info: sealedRequestInfo(this.deps.hostId) });
    } catch {
      throw denied("SEALED_REQUEST_INVALID", "the sealed request does not open with this host's key (sealed for another host, or altered)", "UNAUTHENTICATED");
    }
    try {
      return SignedEnvelope.decode(bytes);
    } catch {
      throw denied("SEALED_REQUEST_INVALID", "the sealed request does not hold a signed envelope", "INVALID_ARGUMENT");
    }
  }

  async execute(envelope: SignedEnvelope, carrier: Caller): Promise<SealedResult> {
    const now = (this.deps.now ?? Date.now)();
    const envelopeBytes = SignedEnvelope.encode(envelope).finish();
    let requestId = "";
    let operation = "unknown";
    let signer: string | undefined;
    try {
      // 1. Signature, with the key the attached certificate names (trusted only at step 7).
      const sig = envelope.signatures[0];
      if (!sig || envelope.signatures.length !== 1 || sig.certificate.length === 0) {
        throw denied("SIGNATURE_INVALID", "a privileged request carries exactly one signature with the operator's CA certificate", "UNAUTHENTICATED");
      }
      let claimed: CertificateMessage;
      try {
        claimed = CertificateMessage.decode(SignedEnvelope.decode(sig.certificate).payload);
      } catch {
        throw denied("CERTIFICATE_INVALID", "the attached certificate does not parse", "UNAUTHENTICATED");
      }
      const signerKey = importVerificationKey(claimed.publicKeyJwk);
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
      requestId = req.requestId;
      operation = operationOf(req)?.name ?? "none";
      // 4. Time window.
      const skew = this.deps.skewMs ?? 30_000;
      if (req.notAfterMs - req.notBeforeMs > MAX_REQUEST_WINDOW_MS || req.notAfterMs <= req.notBeforeMs) {
        throw denied("REQUEST_WINDOW_INVALID", `a request may be valid for at most ${MAX_REQUEST_WINDOW_MS / 60_000} minutes`, "INVALID_ARGUMENT");
      }
      if (now + skew < req.notBeforeMs) throw denied("REQUEST_NOT_YET_VALID", `the request is valid from ${new Date(req.notBeforeMs).toISOString()}`);
      if (now > req.notAfterMs) throw denied("REQUEST_EXPIRED", `the request expired at ${new Date(req.notAfterMs).toISOString()}; sign a new one`);
      // 5. Host.
      if (req.hostId !== this.deps.hostId) throw denied("HOST_MISMATCH", `the request is for host ${req.hostId}, this is ${this.deps.hostId}`);
      // 6. Nonce, remembered for the request's whole window.
      if (req.nonce.length !== 16) throw denied("NONCE_INVALID", "the request nonce must be 128 bits", "INVALID_ARGUMENT");
      if (!(await this.deps.nonces.remember(req.nonce, req.notAfterMs + skew))) throw denied("NONCE_REPLAYED", "this request was already executed; each request runs once", "UNAUTHENTICATED");
      // 7. Certificate chain and its restrictions.
      let cert: Certificate;
      try {
        cert = verifyCertificate(sig.certificate, { caKeys: this.deps.caKeys(), nowMs: now, keyId: sig.keyId, hostId: this.deps.hostId });
      } catch (e) {
        if (e instanceof TrustplaneError) throw denied(e.reason, e.message, "PERMISSION_DENIED");
        throw e;
      }
      signer = cert.principal;
      const op = operationOf(req);
      if (!op) throw denied("OPERATION_MISSING", "the request names no operation", "INVALID_ARGUMENT");
      if (!cert.operationClasses.includes(op.operationClass)) {
        throw denied("POLICY_DENIED", `${cert.principal}'s certificate does not allow ${op.operationClass} operations (${op.name}); it allows ${cert.operationClasses.join(", ") || "nothing"}`);
      }
      if (!hostPatternMatches(cert.hostPattern, this.deps.hostId)) throw denied("HOST_MISMATCH", `${cert.principal}'s certificate is for hosts ${cert.hostPattern}`);
      if (req.recipientPublicKey.length !== 32) throw denied("RECIPIENT_KEY_INVALID", "the recipient key must be a raw 32-byte X25519 key", "INVALID_ARGUMENT");
      // 8. The carrier: the signer itself, or a principal certified to carry.
      if (carrier.principal !== cert.principal && !(carrier.certificate?.operationClasses.includes("carry") ?? false)) {
        throw denied("POLICY_DENIED", `${carrier.principal} may not carry requests signed by ${cert.principal}; its certificate needs the carry class`);
      }
      // Execute, then sign and seal before anything leaves the host.
      const output = await this.deps.operations.run(op.name, req);
      const result = PrivilegedResult.fromPartial({
        requestId: req.requestId,
        hostId: this.deps.hostId,
        requestDigest: createHash("sha256").update(envelopeBytes).digest(),
        executedAtMs: (this.deps.now ?? Date.now)(),
        outcome: "ok",
        ...output,
      });
      this.deps.audit({ requestId, operation, signer, carrier: carrier.principal, outcome: "ok" });
      return this.sealResult(result, req, envelopeBytes);
    } catch (e) {
      const reason = e instanceof TrustplaneError ? e.reason : "EXECUTION_FAILED";
      this.deps.audit({ requestId, operation, signer, carrier: carrier.principal, outcome: reason, detail: (e as Error).message });
      throw e;
    }
  }

  private sealResult(result: PrivilegedResult, req: PrivilegedRequest, requestEnvelope: Uint8Array): SealedResult {
    const signed = signEnvelope(PRIVILEGED_RESULT_TYPE, PrivilegedResult.encode(result).finish(), [this.deps.hostKey]);
    const sealed = seal(req.recipientPublicKey, SignedEnvelope.encode(signed).finish(), { info: resultInfo(requestEnvelope), aad: resultAad(this.deps.hostId, req.requestId) });
    return { hostId: this.deps.hostId, requestId: req.requestId, enc: sealed.enc, ciphertext: sealed.ciphertext };
  }
}
