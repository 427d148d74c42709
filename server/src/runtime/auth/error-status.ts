// The one place a thrown error becomes a gRPC status: TrustplaneError keeps its status,
// reason (trailer `tp-reason`) and field (`tp-field`); anything else is INTERNAL with only a
// request id, so internals never leak to callers. Implements the wire error conventions.
import * as grpc from "@grpc/grpc-js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";

export const REASON_METADATA = "tp-reason";
export const FIELD_METADATA = "tp-field";

export function toServiceError(err: unknown, requestId: string): Partial<grpc.StatusObject> & { code: grpc.status } {
  const metadata = new grpc.Metadata();
  if (err instanceof TrustplaneError) {
    metadata.set(REASON_METADATA, err.reason);
    if (err.field) metadata.set(FIELD_METADATA, err.field);
    return { code: err.code as grpc.status, details: err.message, metadata };
  }
  metadata.set(REASON_METADATA, "INTERNAL");
  return { code: grpc.status.INTERNAL, details: `internal error (request id ${requestId})`, metadata };
}
