// The one error type shared by the SDK and the server: a gRPC status name used as the
// name says, a stable reason code (NONCE_REPLAYED, ARCHIVE_PATH_TRAVERSAL, ...) and the
// request field at fault. The server maps it to a gRPC status at the edge, in one place.

export type StatusName =
  | "CANCELLED"
  | "UNKNOWN"
  | "INVALID_ARGUMENT"
  | "DEADLINE_EXCEEDED"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "PERMISSION_DENIED"
  | "RESOURCE_EXHAUSTED"
  | "FAILED_PRECONDITION"
  | "ABORTED"
  | "OUT_OF_RANGE"
  | "UNIMPLEMENTED"
  | "INTERNAL"
  | "UNAVAILABLE"
  | "DATA_LOSS"
  | "UNAUTHENTICATED";

/** gRPC numeric codes, so the SDK does not need grpc-js to name a status. */
export const STATUS_CODES: Readonly<Record<StatusName, number>> = {
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
};

const NAMES_BY_CODE = new Map<number, StatusName>(
  Object.entries(STATUS_CODES).map(([name, code]) => [code, name as StatusName]),
);

export function statusName(code: number): StatusName {
  return NAMES_BY_CODE.get(code) ?? "UNKNOWN";
}

export class TrustplaneError extends Error {
  override readonly name = "TrustplaneError";

  constructor(
    readonly status: StatusName,
    /** Stable, machine-readable reason code, e.g. NONCE_REPLAYED. */
    readonly reason: string,
    message: string,
    /** The request field at fault, when there is one. */
    readonly field?: string,
  ) {
    super(message);
  }

  get code(): number {
    return STATUS_CODES[this.status];
  }
}

/** Shorthand for the most common edge error: a named field with a bad value. */
export function invalidArgument(field: string, message: string, reason = "INVALID_ARGUMENT"): TrustplaneError {
  return new TrustplaneError("INVALID_ARGUMENT", reason, `${field}: ${message}`, field);
}
