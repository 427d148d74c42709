// Payload types and HPKE labels of the privileged-operations area (seed 002): what the
// operator signs, what the host signs, and the context every seal is bound to.
import { createHash } from "node:crypto";

export const PRIVILEGED_REQUEST_TYPE = "application/vnd.trustplane.privileged-request+proto";
export const PRIVILEGED_RESULT_TYPE = "application/vnd.trustplane.privileged-result+proto";
/** Longest allowed validity window of a privileged request. */
export const MAX_REQUEST_WINDOW_MS = 5 * 60_000;

/** HPKE info sealing a request to a host: the host id is part of it, so it opens only there. */
export function sealedRequestInfo(hostId: string): Buffer {
  return Buffer.from(`trustplane privileged request v1\u0000${hostId}`, "utf8");
}

/** HPKE info of a result: the digest of the exact signed request envelope it answers. */
export function resultInfo(requestEnvelopeBytes: Uint8Array): Buffer {
  return createHash("sha256").update(requestEnvelopeBytes).digest();
}

/** HPKE aad of a result: host id and request id. */
export function resultAad(hostId: string, requestId: string): Buffer {
  return Buffer.from(`${hostId}\u0000${requestId}`, "utf8");
}

/** The CA-signed binding of a host id to its signing and sealing keys (HostKeysService). */
export const HOST_KEY_BINDING_TYPE = "application/vnd.trustplane.host-key-binding+proto";
