// DSSE v1 pre-authentication encoding (PAE): the exact byte string every Trustplane signature
// covers. Implements "One signing primitive": Sign(key, PAE(payload_type, payload)).
// Binding the payload type into the signed bytes means a signature over one kind of
// statement can never be replayed as another kind.

/** Payload type of a per-call CallStatement (sent as gRPC metadata). */
export const CALL_STATEMENT_TYPE = "application/vnd.trustplane.call-statement+proto";
/** Payload type of a CA-issued Certificate travelling inside a SignedEnvelope. */
export const CERTIFICATE_TYPE = "application/vnd.trustplane.certificate+proto";

/**
 * "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, where LEN is the ASCII decimal
 * byte length (the type is measured as UTF-8 bytes, not JS string length).
 */
export function pae(payloadType: string, payload: Uint8Array): Buffer {
  const type = Buffer.from(payloadType, "utf8");
  const head = Buffer.from(`DSSEv1 ${type.length} `, "ascii");
  const mid = Buffer.from(` ${payload.length} `, "ascii");
  return Buffer.concat([head, type, mid, payload]);
}
