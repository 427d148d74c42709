// The thin pre-pass of the core processor (deploy validation, seed 001), run on the raw bytes
// before yauzl inflates anything: directory, names, types, overlap, local headers, sizes.
import type { ArchiveLimits } from "./archive-limits.js";
import { readCentralDirectory, type CentralEntry } from "./central-directory.js";
import { checkDuplicates, checkName, decodeName } from "./entry-names.js";
import { checkEntryType } from "./entry-types.js";
import { checkLocalHeader, entryRange } from "./local-headers.js";
import { checkOverlap } from "./overlap-check.js";
import { checkDeclaredSizes } from "./declared-sizes.js";

export interface PrepassEntry extends CentralEntry {
  path: string;
  isDirectory: boolean;
}

export interface PrepassResult {
  entries: PrepassEntry[];
  declaredTotal: number;
}

export function prepass(buf: Buffer, limits: ArchiveLimits): PrepassResult {
  const cd = readCentralDirectory(buf, limits);
  const entries: PrepassEntry[] = cd.entries.map((e) => {
    const path = decodeName(e);
    checkName(path, e.index, limits);
    checkEntryType(e, path);
    return { ...e, path, isDirectory: path.endsWith("/") };
  });
  checkDuplicates(entries.map((e) => e.path));
  // Zip64 data descriptors carry 8-byte sizes when the entry has a Zip64 extra field; we
  // take the larger span so an overlap cannot hide in the descriptor.
  const ranges = entries.map((e) => entryRange(buf, e, e.compressedSize >= 0xffffffff || e.uncompressedSize >= 0xffffffff));
  checkOverlap(ranges, cd.cdOffset, buf.length);
  entries.forEach((e, i) => checkLocalHeader(buf, e, ranges[i]!));
  const declaredTotal = checkDeclaredSizes(entries, limits);
  return { entries, declaredTotal };
}
