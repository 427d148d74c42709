// Building, signing and sealing privileged requests in the SDK (seed 002). A request is a
// portable SignedEnvelope: an investigator can sign it ahead of time and an untrusted
// technician can carry it; sealed to the host's X25519 key, the carrier cannot read it either.
import { randomBytes } from "node:crypto";
import { signEnvelope, type SigningKey } from "../auth/index.js";
import { seal } from "../envelope/index.js";
import { invalidArgument } from "../errors.js";
import { SignedEnvelope } from "../gen/trustplane/auth/v1/auth.js";
import { PrivilegedRequest, SealedRequest } from "../gen/trustplane/privileged/v1/privileged.js";
import { MAX_REQUEST_WINDOW_MS, PRIVILEGED_REQUEST_TYPE, sealedRequestInfo } from "./payload-types.js";

/** The operation part of a request: exactly one of PrivilegedRequest's operation fields. */
export type PrivilegedOperation = Pick<
  PrivilegedRequest,
  "readGuestMemory" | "dumpGuestMemory" | "queryHypervisor" | "collectHostDiagnostics" | "stopGuest" | "startGuest" | "terminateGuest" | "applyConfigPatch"
>;

export interface BuildRequestInput {
  hostId: string;
  operation: Partial<PrivilegedOperation>;
  /** X25519 public key (raw 32 bytes) the result is sealed to. */
  recipientPublicKey: Uint8Array;
  /** Validity window; at most 5 minutes. */
  windowMs?: number;
  notBeforeMs?: number;
  justification?: string;
  requestId?: string;
}

export function buildPrivilegedRequest(input: BuildRequestInput): PrivilegedRequest {
  const window = input.windowMs ?? MAX_REQUEST_WINDOW_MS;
  if (window <= 0 || window > MAX_REQUEST_WINDOW_MS) throw invalidArgument("window", `must be 1 ms to ${MAX_REQUEST_WINDOW_MS / 1000} s`);
  if (input.recipientPublicKey.length !== 32) throw invalidArgument("recipient_public_key", "must be a raw 32-byte X25519 public key");
  const ops = Object.entries(input.operation).filter(([, v]) => v !== undefined);
  if (ops.length !== 1) throw invalidArgument("operation", "give exactly one operation");
  const notBefore = input.notBeforeMs ?? Date.now();
  return PrivilegedRequest.fromPartial({
    requestId: input.requestId ?? `prq_${randomBytes(12).toString("hex")}`,
    hostId: input.hostId,
    notBeforeMs: notBefore,
    notAfterMs: notBefore + window,
    nonce: randomBytes(16),
    recipientPublicKey: input.recipientPublicKey,
    justification: input.justification ?? "",
    ...input.operation,
  });
}

/** Signs the request into a portable envelope, carrying the operator's CA certificate. */
export function signPrivilegedRequest(request: PrivilegedRequest, key: SigningKey, certificate: Uint8Array): SignedEnvelope {
  return signEnvelope(PRIVILEGED_REQUEST_TYPE, PrivilegedRequest.encode(request).finish(), [{ key, certificate }]);
}

/** Seals a signed request to the host's published X25519 key (HostKeysService). */
export function sealPrivilegedRequest(envelope: SignedEnvelope, hostId: string, hostSealingPublicKey: Uint8Array): SealedRequest {
  const sealed = seal(hostSealingPublicKey, SignedEnvelope.encode(envelope).finish(), { info: sealedRequestInfo(hostId) });
  return { hostId, enc: sealed.enc, ciphertext: sealed.ciphertext };
}
