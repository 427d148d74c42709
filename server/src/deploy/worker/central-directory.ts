// Central-directory pre-pass of the core processor (deploy validation, seed 001): finds the
// end record, checks directory bounds, multi-disk, Zip64 consistency, trailing data, entry
// count, encryption and method — all before a single byte is inflated. Facts per APPNOTE 6.3.
import type { ArchiveLimits } from "./archive-limits.js";
import { reject } from "./archive-rejection.js";

export interface CentralEntry {
  index: number;
  nameBytes: Buffer;
  name: string;
  versionMadeBy: number;
  flags: number;
  method: number;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  localHeaderOffset: number;
  externalAttributes: number;
}

export interface CentralDirectory {
  entries: CentralEntry[];
  /** Where the central directory starts: no local data may reach it. */
  cdOffset: number;
}

const EOCD_SIG = 0x06054b50;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const ZIP64_EOCD_SIG = 0x06064b50;
const CDH_SIG = 0x02014b50;
const U32 = 0xffffffff;
const U16 = 0xffff;

function findEndRecord(buf: Buffer): number {
  // The end record is 22 bytes plus a comment of at most 65535 bytes; search backwards.
  const stop = Math.max(0, buf.length - 22 - U16);
  for (let p = buf.length - 22; p >= stop; p--) {
    if (buf.readUInt32LE(p) === EOCD_SIG) return p;
  }
  return -1;
}

function readU64(buf: Buffer, at: number): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw reject("ARCHIVE_ZIP64_INVALID", "a Zip64 value exceeds 2^53");
  return Number(v);
}

export function readCentralDirectory(buf: Buffer, limits: ArchiveLimits): CentralDirectory {
  if (buf.length > limits.maxArchiveSize) throw reject("ARCHIVE_TOO_LARGE", `archive is ${buf.length} bytes, limit ${limits.maxArchiveSize}`);
  if (buf.length < 22) throw reject("ARCHIVE_TRUNCATED", "archive is shorter than an end-of-central-directory record");
  const eocd = findEndRecord(buf);
  if (eocd < 0) throw reject("ARCHIVE_TRUNCATED", "no end-of-central-directory record found (truncated or not a zip)");
  const commentLength = buf.readUInt16LE(eocd + 20);
  if (eocd + 22 + commentLength !== buf.length) {
    throw reject(
      eocd + 22 + commentLength > buf.length ? "ARCHIVE_TRUNCATED" : "ARCHIVE_TRAILING_DATA",
      "bytes after the end-of-central-directory record do not match its comment length",
    );
  }
  const disk = buf.readUInt16LE(eocd + 4);
  const cdDisk = buf.readUInt16LE(eocd + 6);
  let entriesOnDisk = buf.readUInt16LE(eocd + 8);
  let total = buf.readUInt16LE(eocd + 10);
  let cdSize = buf.readUInt32LE(eocd + 12);
  let cdOffset = buf.readUInt32LE(eocd + 16);
  let cdEndLimit = eocd;

  const hasLocator = eocd >= 20 && buf.readUInt32LE(eocd - 20) === ZIP64_LOCATOR_SIG;
  const needsZip64 = disk === U16 || cdDisk === U16 || entriesOnDisk === U16 || total === U16 || cdSize === U32 || cdOffset === U32;
  if (hasLocator) {
    const loc = eocd - 20;
    if (buf.readUInt32LE(loc + 4) !== 0 || buf.readUInt32LE(loc + 16) !== 1) throw reject("ARCHIVE_MULTI_DISK", "multi-disk Zip64 archives are not accepted");
    const recAt = readU64(buf, loc + 8);
    if (recAt + 56 > loc || buf.readUInt32LE(recAt) !== ZIP64_EOCD_SIG) throw reject("ARCHIVE_ZIP64_INVALID", "the Zip64 locator does not point to a Zip64 end record");
    const recSize = readU64(buf, recAt + 4);
    if (recAt + 12 + recSize !== loc) throw reject("ARCHIVE_ZIP64_INVALID", "the Zip64 end record size is inconsistent");
    if (buf.readUInt32LE(recAt + 16) !== 0 || buf.readUInt32LE(recAt + 20) !== 0) throw reject("ARCHIVE_MULTI_DISK", "multi-disk archives are not accepted");
    const z64OnDisk = readU64(buf, recAt + 24);
    const z64Total = readU64(buf, recAt + 32);
    const z64Size = readU64(buf, recAt + 40);
    const z64Offset = readU64(buf, recAt + 48);
    // A 32-bit field must be either the escape value or agree with its Zip64 counterpart.
    const agree = (small: number, escape: number, big: number) => small === escape || small === big;
    if (!agree(entriesOnDisk, U16, z64OnDisk) || !agree(total, U16, z64Total) || !agree(cdSize, U32, z64Size) || !agree(cdOffset, U32, z64Offset)) {
      throw reject("ARCHIVE_ZIP64_INVALID", "the end record disagrees with the Zip64 end record");
    }
    entriesOnDisk = z64OnDisk;
    total = z64Total;
    cdSize = z64Size;
    cdOffset = z64Offset;
    cdEndLimit = recAt;
  } else {
    if (needsZip64) throw reject("ARCHIVE_ZIP64_INVALID", "the end record uses Zip64 escape values but there is no Zip64 end record");
    if (disk !== 0 || cdDisk !== 0) throw reject("ARCHIVE_MULTI_DISK", "multi-disk archives are not accepted");
  }
  if (entriesOnDisk !== total) throw reject("ARCHIVE_MULTI_DISK", "entry counts per disk and in total differ");
  if (total > limits.maxEntries) throw reject("ARCHIVE_TOO_MANY_ENTRIES", `archive declares ${total} entries, limit ${limits.maxEntries}`);
  if (cdOffset + cdSize > cdEndLimit) throw reject("ARCHIVE_TRUNCATED", "the central directory extends past its end record");
  if (cdOffset + cdSize !== cdEndLimit) throw reject("ARCHIVE_TRAILING_DATA", "unaccounted bytes between the central directory and its end record");

  const entries: CentralEntry[] = [];
  let p = cdOffset;
  const cdEnd = cdOffset + cdSize;
  for (let i = 0; i < total; i++) {
    if (p + 46 > cdEnd || buf.readUInt32LE(p) !== CDH_SIG) throw reject("ARCHIVE_TRUNCATED", `central directory entry ${i} is missing or cut short`);
    const nameLen = buf.readUInt16LE(p + 28);
    const extraLen = buf.readUInt16LE(p + 30);
    const commentLen = buf.readUInt16LE(p + 32);
    const next = p + 46 + nameLen + extraLen + commentLen;
    if (next > cdEnd) throw reject("ARCHIVE_TRUNCATED", `central directory entry ${i} extends past the directory`);
    const diskStart = buf.readUInt16LE(p + 34);
    const nameBytes = buf.subarray(p + 46, p + 46 + nameLen);
    const e: CentralEntry = {
      index: i,
      nameBytes,
      name: nameBytes.toString("latin1"),
      versionMadeBy: buf.readUInt16LE(p + 4),
      flags: buf.readUInt16LE(p + 8),
      method: buf.readUInt16LE(p + 10),
      crc32: buf.readUInt32LE(p + 16),
      compressedSize: buf.readUInt32LE(p + 20),
      uncompressedSize: buf.readUInt32LE(p + 24),
      localHeaderOffset: buf.readUInt32LE(p + 42),
      externalAttributes: buf.readUInt32LE(p + 38),
    };
    applyZip64Extra(e, buf.subarray(p + 46 + nameLen, p + 46 + nameLen + extraLen), diskStart);
    // Encryption first: an encrypted entry's method field is meaningless to us.
    if (e.flags & 0x0001 || e.flags & 0x0040 || e.method === 99) throw reject("ARCHIVE_ENCRYPTED", `entry ${i} is encrypted`);
    if (e.method !== 0 && e.method !== 8) throw reject("ARCHIVE_METHOD", `entry ${i} uses compression method ${e.method}; only stored and deflate are accepted`);
    entries.push(e);
    p = next;
  }
  if (p !== cdEnd) throw reject("ARCHIVE_TRAILING_DATA", "the central directory holds bytes after its last entry");
  return { entries, cdOffset };
}

/** Zip64 extended information (0x0001): fields appear only for escaped values, in a fixed order. */
function applyZip64Extra(e: CentralEntry, extra: Buffer, diskStart: number): void {
  const wantUncompressed = e.uncompressedSize === U32;
  const wantCompressed = e.compressedSize === U32;
  const wantOffset = e.localHeaderOffset === U32;
  const wantDisk = diskStart === U16;
  const need = (wantUncompressed ? 8 : 0) + (wantCompressed ? 8 : 0) + (wantOffset ? 8 : 0) + (wantDisk ? 4 : 0);
  let z64: Buffer | undefined;
  for (let q = 0; q + 4 <= extra.length; ) {
    const id = extra.readUInt16LE(q);
    const len = extra.readUInt16LE(q + 2);
    if (q + 4 + len > extra.length) throw reject("ARCHIVE_TRUNCATED", `entry ${e.index} has a cut-short extra field`);
    if (id === 0x0001) {
      if (z64) throw reject("ARCHIVE_ZIP64_INVALID", `entry ${e.index} has two Zip64 extra fields`);
      z64 = extra.subarray(q + 4, q + 4 + len);
    }
    q += 4 + len;
  }
  if (need === 0) {
    if (diskStart !== 0) throw reject("ARCHIVE_MULTI_DISK", `entry ${e.index} starts on another disk`);
    return;
  }
  if (!z64) throw reject("ARCHIVE_ZIP64_INVALID", `entry ${e.index} uses Zip64 escape values without a Zip64 extra field`);
  if (z64.length < need) throw reject("ARCHIVE_ZIP64_INVALID", `entry ${e.index} has a Zip64 extra field too short for its escaped values`);
  let q = 0;
  if (wantUncompressed) { e.uncompressedSize = readU64(z64, q); q += 8; }
  if (wantCompressed) { e.compressedSize = readU64(z64, q); q += 8; }
  if (wantOffset) { e.localHeaderOffset = readU64(z64, q); q += 8; }
  if (wantDisk && z64.readUInt32LE(q) !== 0) throw reject("ARCHIVE_MULTI_DISK", `entry ${e.index} starts on another disk`);
}
