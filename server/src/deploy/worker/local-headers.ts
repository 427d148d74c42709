// Local-header checks of the core processor (deploy validation, seed 001): every central
// entry's local header must exist and agree with it (name, method, flags, CRC and sizes when
// there is no data descriptor). Returns each entry's full byte range for the overlap check.
import type { CentralEntry } from "./central-directory.js";
import { reject } from "./archive-rejection.js";

const LFH_SIG = 0x04034b50;
const DD_SIG = 0x08074b50;
const U32 = 0xffffffff;

export interface EntryRange {
  index: number;
  start: number;
  /** Local header + name + extra + compressed data + data descriptor. */
  end: number;
  dataStart: number;
}

/** Reads the local header only far enough to know where the entry ends; no agreement checks. */
export function entryRange(buf: Buffer, e: CentralEntry, zip64: boolean): EntryRange {
  const at = e.localHeaderOffset;
  if (at + 30 > buf.length) throw reject("ARCHIVE_TRUNCATED", `entry ${e.index}'s local header lies past the end of the archive`);
  const dataStart = at + 30 + buf.readUInt16LE(at + 26) + buf.readUInt16LE(at + 28);
  let end = dataStart + e.compressedSize;
  if (e.flags & 0x0008) {
    // Data descriptor: optional signature, CRC, then 4- or 8-byte sizes.
    const sized = zip64 ? 16 : 8;
    end += 4 + sized;
    if (end <= buf.length && buf.readUInt32LE(dataStart + e.compressedSize) === DD_SIG) end += 4;
  }
  return { index: e.index, start: at, end, dataStart };
}

export function checkLocalHeader(buf: Buffer, e: CentralEntry, range: EntryRange): void {
  const at = e.localHeaderOffset;
  const where = `entry ${e.index}`;
  if (buf.readUInt32LE(at) !== LFH_SIG) throw reject("ARCHIVE_HEADER_MISMATCH", `${where}: no local header at the offset the central directory gives`);
  const flags = buf.readUInt16LE(at + 6);
  const method = buf.readUInt16LE(at + 8);
  const crc = buf.readUInt32LE(at + 14);
  let csize = buf.readUInt32LE(at + 18);
  let usize = buf.readUInt32LE(at + 22);
  const nameLen = buf.readUInt16LE(at + 26);
  const extraLen = buf.readUInt16LE(at + 28);
  if (range.dataStart > buf.length) throw reject("ARCHIVE_TRUNCATED", `${where}: local header cut short`);
  const name = buf.subarray(at + 30, at + 30 + nameLen);
  if (!name.equals(e.nameBytes)) throw reject("ARCHIVE_HEADER_MISMATCH", `${where}: local header name differs from the central directory name`);
  if (method !== e.method) throw reject("ARCHIVE_HEADER_MISMATCH", `${where}: local header method differs from the central directory`);
  if (flags !== e.flags) throw reject("ARCHIVE_HEADER_MISMATCH", `${where}: local header flags differ from the central directory`);
  if (flags & 0x0008) return; // sizes live in the data descriptor; the inflater counts bytes
  if (csize === U32 || usize === U32) {
    const extra = buf.subarray(at + 30 + nameLen, at + 30 + nameLen + extraLen);
    const z = findZip64(extra);
    if (!z) throw reject("ARCHIVE_ZIP64_INVALID", `${where}: local header uses Zip64 escape values without a Zip64 extra field`);
    let q = 0;
    if (usize === U32) { usize = Number(z.readBigUInt64LE(q)); q += 8; }
    if (csize === U32) { csize = Number(z.readBigUInt64LE(q)); q += 8; }
  }
  if (crc !== e.crc32 || csize !== e.compressedSize || usize !== e.uncompressedSize) {
    throw reject("ARCHIVE_HEADER_MISMATCH", `${where}: local header CRC or sizes differ from the central directory`);
  }
}

function findZip64(extra: Buffer): Buffer | undefined {
  for (let q = 0; q + 4 <= extra.length; ) {
    const len = extra.readUInt16LE(q + 2);
    if (extra.readUInt16LE(q) === 0x0001 && q + 4 + len <= extra.length && len >= 8) return extra.subarray(q + 4, q + 4 + len);
    q += 4 + len;
  }
  return undefined;
}
