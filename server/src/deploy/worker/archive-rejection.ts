// How the core processor rejects an archive: one TrustplaneError per check with its own
// stable reason code (deploy validation, seed 001). Budget-type failures are RESOURCE_EXHAUSTED.
import { TrustplaneError } from "../../../../sdk/src/errors.js";

export type ArchiveReason =
  | "ARCHIVE_PATH_TRAVERSAL"
  | "ARCHIVE_ABSOLUTE_PATH"
  | "ARCHIVE_SYMLINK"
  | "ARCHIVE_SPECIAL_FILE"
  | "ARCHIVE_OVERLAP"
  | "ARCHIVE_TOO_MANY_ENTRIES"
  | "ARCHIVE_RATIO"
  | "ARCHIVE_SIZE_MISMATCH"
  | "ARCHIVE_HEADER_MISMATCH"
  | "ARCHIVE_ZIP64_INVALID"
  | "ARCHIVE_ENCRYPTED"
  | "ARCHIVE_TRUNCATED"
  | "ARCHIVE_TRAILING_DATA"
  | "ARCHIVE_NESTING"
  | "ARCHIVE_BUDGET"
  | "ARCHIVE_CRC"
  | "ARCHIVE_DUPLICATE_NAME"
  | "ARCHIVE_BAD_NAME"
  | "ARCHIVE_METHOD"
  | "ARCHIVE_MULTI_DISK"
  | "ARCHIVE_ENTRY_TOO_LARGE"
  | "ARCHIVE_TOO_LARGE"
  | "ARCHIVE_DESCRIPTORS_TOO_LARGE"
  | "ARCHIVE_CORRUPT";

const EXHAUSTION: ReadonlySet<ArchiveReason> = new Set<ArchiveReason>([
  "ARCHIVE_TOO_MANY_ENTRIES",
  "ARCHIVE_RATIO",
  "ARCHIVE_BUDGET",
  "ARCHIVE_NESTING",
  "ARCHIVE_ENTRY_TOO_LARGE",
  "ARCHIVE_TOO_LARGE",
  "ARCHIVE_DESCRIPTORS_TOO_LARGE",
]);

export function reject(reason: ArchiveReason, message: string): TrustplaneError {
  return new TrustplaneError(
    EXHAUSTION.has(reason) ? "RESOURCE_EXHAUSTED" : "INVALID_ARGUMENT",
    reason,
    `${message}; the archive was rejected, rebuild it with a standard zip/jar tool`,
    "archive",
  );
}
