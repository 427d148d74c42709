// Inflation of the core processor (deploy validation, seed 001), on top of yauzl 3.4: each
// entry's bytes are counted against its declared size and the global budget as they arrive,
// and its CRC-32 is checked at the end. yauzl's own size validation is off so that ours is
// the check (and is tested); yauzl sees only archives the pre-pass has accepted.
import { crc32 } from "node:zlib";
import yauzl from "yauzl";
import type { ArchiveLimits } from "./archive-limits.js";
import type { PrepassEntry } from "./archive-prepass.js";
import type { InflateBudget } from "./inflate-budget.js";
import { reject } from "./archive-rejection.js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";

export interface InflatedEntry {
  entry: PrepassEntry;
  /** Kept only when keep() said so (descriptors, READMEs, nested archives). */
  data?: Buffer;
}

export interface InflateOptions {
  limits: ArchiveLimits;
  budget: InflateBudget;
  keep: (e: PrepassEntry) => boolean;
  onEntry: (e: InflatedEntry) => Promise<void> | void;
}

function openBuffer(buf: Buffer): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject_) =>
    yauzl.fromBuffer(buf, { lazyEntries: true, validateEntrySizes: false, decodeStrings: true, strictFileNames: true }, (err, zf) =>
      err || !zf ? reject_(err ?? new Error("yauzl: no zipfile")) : resolve(zf),
    ),
  );
}

export async function inflateEntries(buf: Buffer, entries: PrepassEntry[], opts: InflateOptions): Promise<void> {
  const zf = await openBuffer(buf).catch((err: Error) => {
    throw reject("ARCHIVE_CORRUPT", `zip reader refused the archive: ${err.message}`);
  });
  try {
    let index = 0;
    await new Promise<void>((resolve, fail) => {
      zf.on("error", (err: Error) => fail(err instanceof TrustplaneError ? err : reject("ARCHIVE_CORRUPT", err.message)));
      zf.on("end", () => resolve());
      zf.on("entry", (ye: yauzl.Entry) => {
        const e = entries[index++];
        if (!e || e.path !== ye.fileName) return fail(reject("ARCHIVE_HEADER_MISMATCH", "the zip reader and the pre-pass disagree on entry order"));
        inflateOne(zf, ye, e, opts).then(() => zf.readEntry(), fail);
      });
      zf.readEntry();
    });
  } finally {
    zf.close();
  }
}

function inflateOne(zf: yauzl.ZipFile, ye: yauzl.Entry, e: PrepassEntry, opts: InflateOptions): Promise<void> {
  if (e.isDirectory) {
    if (e.uncompressedSize !== 0) return Promise.reject(reject("ARCHIVE_SIZE_MISMATCH", `directory entry ${e.index} declares data`));
    return Promise.resolve(opts.onEntry({ entry: e }));
  }
  const keep = opts.keep(e);
  return new Promise<void>((resolve, fail) => {
    zf.openReadStream(ye, (err, stream) => {
      if (err || !stream) return fail(reject("ARCHIVE_CORRUPT", `entry ${e.index}: ${err?.message ?? "no stream"}`));
      let count = 0;
      let crc = 0;
      const chunks: Buffer[] = [];
      let failed = false;
      const stop = (x: unknown) => {
        if (failed) return;
        failed = true;
        stream.destroy();
        fail(x instanceof TrustplaneError ? x : reject("ARCHIVE_CORRUPT", `entry ${e.index}: ${(x as Error).message}`));
      };
      stream.on("data", (chunk: Buffer) => {
        if (failed) return;
        count += chunk.length;
        try {
          if (count > e.uncompressedSize) throw reject("ARCHIVE_SIZE_MISMATCH", `entry ${e.index} inflates to more than its declared ${e.uncompressedSize} bytes`);
          if (count > opts.limits.maxEntrySize) throw reject("ARCHIVE_ENTRY_TOO_LARGE", `entry ${e.index} is larger than ${opts.limits.maxEntrySize} bytes`);
          opts.budget.spend(chunk.length);
        } catch (x) {
          return stop(x);
        }
        crc = crc32(chunk, crc);
        if (keep) chunks.push(chunk);
      });
      stream.on("error", stop);
      stream.on("end", () => {
        if (failed) return;
        if (count !== e.uncompressedSize) return stop(reject("ARCHIVE_SIZE_MISMATCH", `entry ${e.index} inflates to ${count} bytes, declared ${e.uncompressedSize}`));
        if (crc >>> 0 !== e.crc32 >>> 0) return stop(reject("ARCHIVE_CRC", `entry ${e.index} fails its CRC-32 check`));
        Promise.resolve(opts.onEntry({ entry: e, data: keep ? Buffer.concat(chunks) : undefined })).then(resolve, stop);
      });
    });
  });
}
