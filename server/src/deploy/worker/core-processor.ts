// The core processor of a deploy worker (deploy validation, seed 001): pre-pass, then
// inflation under one budget, nested archives (JAR/WAR/ZIP) one level deep under the same
// budget. Returns the small text files sub-processors need; never writes extracted files.
import { resolveLimits, type ArchiveLimits } from "./archive-limits.js";
import { prepass, type PrepassEntry } from "./archive-prepass.js";
import { InflateBudget } from "./inflate-budget.js";
import { inflateEntries } from "./inflate-entries.js";
import { reject } from "./archive-rejection.js";

/** Files sub-processors read, kept in memory: at most KEEP_MAX each and KEEP_TOTAL in all. */
const KEEP_MAX = 1024 * 1024;
const KEEP_TOTAL = 32 * 1024 * 1024;
const NESTED = /\.(jar|war|zip|ear)$/i;
const WANTED = /(^|\/)(web\.xml|MANIFEST\.MF|roles\.properties|pom\.properties|package\.json|trustplane-roles\.json|README[^/]*|[^/]+\.md)$/i;

export interface CoreResult {
  entryCount: number;
  uncompressedSize: number;
  /** path → bytes for the descriptor files; nested archive files are "outer.jar!/inner/path". */
  files: Map<string, Buffer>;
}

export interface CoreOptions {
  limits?: Partial<ArchiveLimits>;
  onProgress?: (p: { entriesDone: number; entriesTotal: number; bytesInflated: number }) => void;
}

export async function processArchive(buf: Buffer, opts: CoreOptions = {}): Promise<CoreResult> {
  const limits = resolveLimits(opts.limits);
  const budget = new InflateBudget(limits.maxInflatedTotal, limits.maxEntries);
  const files = new Map<string, Buffer>();
  await walk(buf, "", 0, limits, budget, files, { bytes: 0 }, opts.onProgress);
  return { entryCount: budget.entries, uncompressedSize: budget.used, files };
}

async function walk(
  buf: Buffer,
  prefix: string,
  depth: number,
  limits: ArchiveLimits,
  budget: InflateBudget,
  files: Map<string, Buffer>,
  kept: { bytes: number },
  onProgress: CoreOptions["onProgress"],
): Promise<void> {
  const { entries } = prepass(buf, limits);
  budget.countEntries(entries.length);
  let done = 0;
  const isNested = (e: PrepassEntry) => !e.isDirectory && NESTED.test(e.path);
  await inflateEntries(buf, entries, {
    limits,
    budget,
    keep: (e) => isNested(e) || (WANTED.test(e.path) && e.uncompressedSize <= KEEP_MAX),
    onEntry: async ({ entry, data }) => {
      done++;
      if (depth === 0) onProgress?.({ entriesDone: done, entriesTotal: entries.length, bytesInflated: budget.used });
      if (!data) return;
      if (isNested(entry)) {
        if (depth + 1 > limits.maxNesting) throw reject("ARCHIVE_NESTING", `${prefix}${entry.path} is an archive nested deeper than ${limits.maxNesting} level(s)`);
        await walk(data, `${prefix}${entry.path}!/`, depth + 1, limits, budget, files, kept, onProgress);
        return;
      }
      kept.bytes += data.length;
      if (kept.bytes > KEEP_TOTAL) throw reject("ARCHIVE_DESCRIPTORS_TOO_LARGE", `descriptor and documentation files exceed ${KEEP_TOTAL} bytes in all`);
      files.set(prefix + entry.path, data);
    },
  });
}
