// Overlap detection of the core processor (deploy validation, seed 001), in the manner of
// CPython's zipfile: sorted by local-header offset, each entry's header+data+descriptor must
// end before the next entry starts and before the central directory. This defeats Fifield's
// overlapping and quoted-overlapping zip bombs, which reuse one compressed kernel.
import type { EntryRange } from "./local-headers.js";
import { reject } from "./archive-rejection.js";

export function checkOverlap(ranges: EntryRange[], cdOffset: number, archiveLength: number): void {
  const sorted = [...ranges].sort((a, b) => a.start - b.start || a.index - b.index);
  for (let i = 0; i < sorted.length; i++) {
    const r = sorted[i]!;
    const limit = i + 1 < sorted.length ? sorted[i + 1]!.start : cdOffset;
    if (r.end > limit) {
      const other = i + 1 < sorted.length ? `entry ${sorted[i + 1]!.index}` : "the central directory";
      throw reject("ARCHIVE_OVERLAP", `entry ${r.index} (bytes ${r.start}..${r.end}) overlaps ${other}`);
    }
    if (r.end > archiveLength) throw reject("ARCHIVE_TRUNCATED", `entry ${r.index}'s data lies past the end of the archive`);
  }
}
