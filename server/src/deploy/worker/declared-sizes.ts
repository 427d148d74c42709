// Declared-size caps of the core processor (deploy validation, seed 001): per-entry size,
// total declared size and compression ratio, checked on the central directory before inflating.
import type { ArchiveLimits } from "./archive-limits.js";
import type { CentralEntry } from "./central-directory.js";
import { reject } from "./archive-rejection.js";

export function checkDeclaredSizes(entries: CentralEntry[], limits: ArchiveLimits): number {
  let total = 0;
  for (const e of entries) {
    if (e.uncompressedSize > limits.maxEntrySize) throw reject("ARCHIVE_ENTRY_TOO_LARGE", `entry ${e.index} declares ${e.uncompressedSize} bytes, limit ${limits.maxEntrySize}`);
    if (e.method === 0 && e.compressedSize !== e.uncompressedSize && !(e.flags & 0x0008)) {
      throw reject("ARCHIVE_SIZE_MISMATCH", `entry ${e.index} is stored but its compressed and inflated sizes differ`);
    }
    if (e.uncompressedSize > limits.ratioFloor && e.uncompressedSize > limits.maxRatio * Math.max(1, e.compressedSize)) {
      throw reject("ARCHIVE_RATIO", `entry ${e.index} declares a compression ratio above ${limits.maxRatio}`);
    }
    total += e.uncompressedSize;
  }
  if (total > limits.maxTotalSize) throw reject("ARCHIVE_BUDGET", `entries declare ${total} bytes in total, limit ${limits.maxTotalSize}`);
  return total;
}
