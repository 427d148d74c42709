// Turns a grpc-js ServiceError into the SDK's TrustplaneError: status name, the stable
// reason from trailer `tp-reason`, the field from `tp-field`, and the server's message.
// Implements the client half of the wire error conventions.
import type * as grpc from "@grpc/grpc-js";
import { TrustplaneError, statusName } from "../errors.js";

function firstString(md: grpc.Metadata | undefined, name: string): string | undefined {
  const v = md?.get(name)[0];
  return typeof v === "string" ? v : v instanceof Buffer ? v.toString("utf8") : undefined;
}

export function toTrustplaneError(err: unknown): unknown {
  if (err instanceof TrustplaneError) return err;
  const e = err as Partial<grpc.ServiceError> | undefined;
  if (!e || typeof e.code !== "number") return err;
  const status = statusName(e.code);
  const reason = firstString(e.metadata, "tp-reason") ?? status;
  return new TrustplaneError(status, reason, e.details ?? e.message ?? status, firstString(e.metadata, "tp-field"));
}
