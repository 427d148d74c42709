// File-type check of the core processor (deploy validation, seed 001): the unix mode in the
// upper half of the external attributes must be a regular file or a directory (or absent).
import type { CentralEntry } from "./central-directory.js";
import { reject } from "./archive-rejection.js";

const S_IFMT = 0o170000;
const S_IFLNK = 0o120000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;

export function checkEntryType(e: CentralEntry, name: string): void {
  // Checked whatever the "made by" host says: a tool that honours the mode would create it.
  const mode = (e.externalAttributes >>> 16) & 0xffff;
  const type = mode & S_IFMT;
  if (type === 0 || type === S_IFREG || type === S_IFDIR) return;
  if (type === S_IFLNK) throw reject("ARCHIVE_SYMLINK", `entry ${e.index} (${JSON.stringify(name.slice(0, 80))}) is a symbolic link`);
  throw reject("ARCHIVE_SPECIAL_FILE", `entry ${e.index} (${JSON.stringify(name.slice(0, 80))}) is a device, FIFO or socket (mode ${type.toString(8)})`);
}
