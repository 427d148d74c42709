// The one server-side check of every signed call, on the RAW bytes received, before any
// decoding. Implements the architecture's "Server checks" in order: key, signature, parse,
// method, timestamp skew, nonce, host binding, digest of the received bytes, policy.
import type * as grpc from "@grpc/grpc-js";
import { createHash } from "node:crypto";
import {
  CERTIFICATE_METADATA,
  KEY_ID_METADATA,
  NONCE_BYTES,
  SIGNATURE_METADATA,
  STATEMENT_METADATA,
} from "../../../../sdk/src/auth/call-statement.js";
import { verifyCertificateWithKey } from "../../../../sdk/src/auth/certificate.js";
import { CALL_STATEMENT_TYPE, pae } from "../../../../sdk/src/auth/pae.js";
import { importVerificationKey, type VerificationKey } from "../../../../sdk/src/auth/verification-key.js";
import { TrustplaneError, type StatusName } from "../../../../sdk/src/errors.js";
import { CallStatement, type Certificate } from "../../../../sdk/src/gen/trustplane/auth/v1/auth.js";
import type { Caller } from "./caller.js";
import type { KeyResolver } from "./key-resolver.js";
import type { NonceStore } from "./nonce-store.js";
import type { PolicyEngine } from "./policy-engine.js";

/** A rejected call, carrying what is known about who made it (for the audit log). */
export class CallRejectedError extends TrustplaneError {
  constructor(
    status: StatusName,
    reason: string,
    message: string,
    readonly keyId?: string,
    readonly principal?: string,
  ) {
    super(status, reason, message);
  }
}

export interface CallVerifierOptions {
  keys: KeyResolver;
  /** Current CA public keys (re-read per call so CA rotation needs no restart). */
  caKeys: () => VerificationKey[];
  nonces: NonceStore;
  policy: PolicyEngine;
  /** Accepted clock difference either way; default 300 000 ms. */
  skewMs?: number;
  /** This process's host id (agents); control-plane servers leave it undefined. */
  hostId?: string;
  now?: () => number;
  /** Certificate critical options this server understands. */
  knownCertificateOptions?: Set<string>;
}

function single(metadata: grpc.Metadata, name: string): grpc.MetadataValue | undefined {
  const values = metadata.get(name);
  // Two values for one name would leave "which one counted" to chance; accept exactly one.
  return values.length === 1 ? values[0] : undefined;
}

export class CallVerifier {
  readonly skewMs: number;
  private readonly now: () => number;

  constructor(private readonly opts: CallVerifierOptions) {
    this.skewMs = opts.skewMs ?? 300_000;
    this.now = opts.now ?? Date.now;
  }

  get hostId(): string | undefined {
    return this.opts.hostId;
  }

  async verify(method: string, metadata: grpc.Metadata, firstMessage: Uint8Array): Promise<Caller> {
    const statementBytes = single(metadata, STATEMENT_METADATA);
    const signature = single(metadata, SIGNATURE_METADATA);
    const keyId = single(metadata, KEY_ID_METADATA);
    const certificateBytes = single(metadata, CERTIFICATE_METADATA);
    if (!Buffer.isBuffer(statementBytes) || !Buffer.isBuffer(signature) || typeof keyId !== "string" || keyId === "") {
      throw new CallRejectedError(
        "UNAUTHENTICATED",
        "MISSING_SIGNATURE",
        `the call carries no signature: sign it with the Trustplane SDK (metadata ${STATEMENT_METADATA}, ${SIGNATURE_METADATA}, ${KEY_ID_METADATA})`,
      );
    }
    const reject = (status: StatusName, reason: string, message: string, principal?: string) =>
      new CallRejectedError(status, reason, message, keyId, principal);

    // 1. The key: registered and not revoked, or certified by a CA this server trusts.
    let key: VerificationKey;
    let principal: string;
    let roles: string[] = [];
    let certificate: Certificate | undefined;
    const known = await this.opts.keys.resolve(keyId);
    if (known) {
      if (known.revoked) throw reject("UNAUTHENTICATED", "UNKNOWN_KEY", `key ${keyId} is revoked; sign with a current key`, known.principal);
      if (known.key.keyId !== keyId) throw reject("UNAUTHENTICATED", "UNKNOWN_KEY", `key ${keyId} is not registered`);
      key = known.key;
      principal = known.principal;
      roles = known.roles ?? [];
    } else if (Buffer.isBuffer(certificateBytes) && certificateBytes.length > 0) {
      try {
        // The certified key comes back imported once per certificate (cached with its CA check).
        ({ certificate, key } = verifyCertificateWithKey(certificateBytes, {
          caKeys: this.opts.caKeys(),
          nowMs: this.now(),
          keyId,
          hostId: this.opts.hostId,
          knownOptions: this.opts.knownCertificateOptions,
        }));
      } catch (e) {
        if (e instanceof TrustplaneError) throw reject(e.status, e.reason, e.message);
        throw e;
      }
      principal = certificate.principal;
    } else {
      throw reject("UNAUTHENTICATED", "UNKNOWN_KEY", `key ${keyId} is not registered and no CA certificate was sent for it`);
    }

    // 2. The signature over the bytes received, before anything is parsed.
    if (!key.verify(pae(CALL_STATEMENT_TYPE, statementBytes), signature)) {
      throw reject("UNAUTHENTICATED", "SIGNATURE_INVALID", "the call signature does not verify", principal);
    }

    // 3. Parse, then bind the statement to this call.
    let statement: CallStatement;
    try {
      statement = CallStatement.decode(statementBytes);
    } catch {
      throw reject("UNAUTHENTICATED", "STATEMENT_INVALID", "the signed call statement does not parse", principal);
    }
    if (statement.method !== method) {
      throw reject("UNAUTHENTICATED", "METHOD_MISMATCH", `the call was signed for ${statement.method}, not ${method}`, principal);
    }
    const now = this.now();
    if (Math.abs(now - statement.timestampMs) > this.skewMs) {
      throw reject(
        "UNAUTHENTICATED",
        "TIMESTAMP_SKEW",
        `the call was signed ${Math.round((now - statement.timestampMs) / 1000)} s from server time (allowed ±${this.skewMs / 1000} s); check the client clock`,
        principal,
      );
    }
    if (statement.nonce.length !== NONCE_BYTES) {
      throw reject("UNAUTHENTICATED", "NONCE_INVALID", `the call nonce must be ${NONCE_BYTES} bytes`, principal);
    }
    // Recorded only now, after the signature verified, so nobody can burn another's nonces.
    // A statement stays acceptable until timestamp + skew, so the nonce must be kept that long.
    if (!(await this.opts.nonces.remember(statement.nonce, statement.timestampMs + this.skewMs + 1))) {
      throw reject("UNAUTHENTICATED", "NONCE_REPLAYED", "this signed call was already used; each call needs a fresh signature", principal);
    }
    const expectedHost = this.opts.hostId ?? "";
    if (statement.targetHost !== expectedHost) {
      throw reject(
        "UNAUTHENTICATED",
        "HOST_MISMATCH",
        `the call is bound to host ${JSON.stringify(statement.targetHost)}, this is ${expectedHost ? JSON.stringify(expectedHost) : "the control plane"}`,
        principal,
      );
    }
    const digest = createHash("sha256").update(firstMessage).digest();
    if (!digest.equals(statement.requestDigest)) {
      throw reject("UNAUTHENTICATED", "DIGEST_MISMATCH", "the request bytes received are not the bytes that were signed", principal);
    }

    const caller: Caller = { principal, keyId, roles, statement };
    if (certificate) caller.certificate = certificate;
    if (!(await this.opts.policy.authorize(caller, method))) {
      throw reject("PERMISSION_DENIED", "POLICY_DENIED", `principal ${principal} may not call ${method}`, principal);
    }
    return caller;
  }
}
