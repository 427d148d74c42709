// The limits the core processor enforces on one archive (deploy validation, seed 001).
// One typed object with defaults; the server may tighten them per operation.

export interface ArchiveLimits {
  /** Size of the archive file itself. */
  maxArchiveSize: number;
  /** Central-directory entries, nested archives included. */
  maxEntries: number;
  /** Inflated bytes of one entry (declared and actual). */
  maxEntrySize: number;
  /** Sum of declared inflated sizes of one archive. */
  maxTotalSize: number;
  /** Inflated / compressed size of one entry, checked when the entry is larger than ratioFloor. */
  maxRatio: number;
  /** Entries smaller than this are exempt from the ratio cap (tiny files compress absurdly). */
  ratioFloor: number;
  /** Bytes of one entry name. */
  maxNameLength: number;
  /** Path segments of one entry name. */
  maxDepth: number;
  /** Archive-in-archive levels (1: a JAR inside a WAR, no deeper). */
  maxNesting: number;
  /** Global budget of inflated bytes across all entries and nested archives. */
  maxInflatedTotal: number;
}

export const DEFAULT_ARCHIVE_LIMITS: Readonly<ArchiveLimits> = Object.freeze({
  maxArchiveSize: 512 * 1024 * 1024,
  maxEntries: 20_000,
  maxEntrySize: 128 * 1024 * 1024,
  maxTotalSize: 1024 * 1024 * 1024,
  maxRatio: 200,
  ratioFloor: 64 * 1024,
  maxNameLength: 512,
  maxDepth: 32,
  maxNesting: 1,
  maxInflatedTotal: 1024 * 1024 * 1024,
});

/** Defaults overlaid with whatever positive numbers the caller set (0 / missing: default). */
export function resolveLimits(partial?: Partial<ArchiveLimits>): ArchiveLimits {
  const out = { ...DEFAULT_ARCHIVE_LIMITS };
  for (const key of Object.keys(out) as (keyof ArchiveLimits)[]) {
    const v = partial?.[key];
    if (typeof v === "number" && Number.isFinite(v) && v > 0) out[key] = v;
  }
  return out;
}
