// Entry-name checks of the core processor (deploy validation, seed 001): zip slip (unix and
// windows), absolute paths and drive letters, control characters, empty segments, length and
// depth limits, and duplicates including case-folded ones (which collide on macOS/Windows).
import type { ArchiveLimits } from "./archive-limits.js";
import type { CentralEntry } from "./central-directory.js";
import { reject } from "./archive-rejection.js";

const UTF8 = new TextDecoder("utf-8", { fatal: true });

export function decodeName(e: CentralEntry): string {
  try {
    return UTF8.decode(e.nameBytes);
  } catch {
    throw reject("ARCHIVE_BAD_NAME", `entry ${e.index} has a name that is not valid UTF-8`);
  }
}

export function checkName(name: string, index: number, limits: ArchiveLimits): void {
  const label = `entry ${index} (${JSON.stringify(name.slice(0, 80))})`;
  if (name.length === 0) throw reject("ARCHIVE_BAD_NAME", `entry ${index} has an empty name`);
  if (Buffer.byteLength(name) > limits.maxNameLength) throw reject("ARCHIVE_BAD_NAME", `${label} has a name longer than ${limits.maxNameLength} bytes`);
  // Traversal is judged on both separators so that a windows zip slip gets its own reason.
  const segments = name.split(/[\\/]/);
  if (segments.some((s) => s === "..")) throw reject("ARCHIVE_PATH_TRAVERSAL", `${label} climbs out of the extraction directory`);
  if (name.startsWith("/") || name.startsWith("\\") || /^[A-Za-z]:/.test(name)) throw reject("ARCHIVE_ABSOLUTE_PATH", `${label} is an absolute path`);
  if (name.includes("\\")) throw reject("ARCHIVE_BAD_NAME", `${label} contains a backslash`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) throw reject("ARCHIVE_BAD_NAME", `${label} contains a NUL or control character`);
  const body = name.endsWith("/") ? segments.slice(0, -1) : segments;
  if (body.some((s) => s === "" || s === ".")) throw reject("ARCHIVE_BAD_NAME", `${label} has an empty or '.' path segment`);
  if (body.length > limits.maxDepth) throw reject("ARCHIVE_BAD_NAME", `${label} is deeper than ${limits.maxDepth} segments`);
}

/** Rejects exact and case-folded duplicates (after NFC normalisation). */
export function checkDuplicates(names: string[]): void {
  const seen = new Map<string, number>();
  names.forEach((n, i) => {
    const key = n.normalize("NFC").toLowerCase().replace(/\/$/, "");
    const prior = seen.get(key);
    if (prior !== undefined) throw reject("ARCHIVE_DUPLICATE_NAME", `entries ${prior} and ${i} have the same name (${JSON.stringify(n.slice(0, 80))}) ignoring case`);
    seen.set(key, i);
  });
}
