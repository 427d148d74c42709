// Content-addressed blob storage behind one interface (filesystem now, S3 later). Blobs are
// named by SHA-256, streamed in and out (never held whole), and written atomically: temp file
// on the same filesystem, fsync, rename, fsync the directory. A failed write leaves nothing.
import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, readdir, rename, rm, stat, unlink, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { Readable, addAbortSignal } from "node:stream";
import { TrustplaneError } from "../../../../sdk/src/errors.js";

export type BlobSource = Uint8Array | AsyncIterable<Uint8Array> | NodeJS.ReadableStream;

export interface BlobInfo {
  /** SHA-256, lowercase hex. */
  digest: string;
  size: number;
}

export interface BlobPutOptions {
  /** The digest the caller expects; a mismatch fails with DATA_LOSS/DIGEST_MISMATCH and stores nothing. */
  expectedDigest?: string;
  /** Refuse (RESOURCE_EXHAUSTED/BLOB_TOO_LARGE) once the stream passes this many bytes. */
  maxBytes?: number;
  /** Aborting stops the write (CANCELLED/BLOB_WRITE_CANCELLED) and removes the temp file. */
  signal?: AbortSignal;
}

export interface BlobStore {
  put(data: BlobSource, opts?: BlobPutOptions): Promise<BlobInfo>;
  /** Streams the blob; a missing blob errors the stream with NOT_FOUND/BLOB_NOT_FOUND. */
  get(digest: string): Readable;
  has(digest: string): Promise<boolean>;
  stat(digest: string): Promise<BlobInfo | undefined>;
  /** True when the blob existed. */
  delete(digest: string): Promise<boolean>;
}

const DIGEST_RE = /^[0-9a-f]{64}$/;
/** Small chunks are coalesced up to this size before a write syscall. */
const WRITE_BATCH = 256 * 1024;
const READ_CHUNK = 256 * 1024;

/** The only digest shape accepted: it is also a path component, so nothing else may pass. */
export function checkDigest(digest: string): string {
  if (typeof digest !== "string" || !DIGEST_RE.test(digest)) {
    const shown = typeof digest === "string" ? JSON.stringify(digest.slice(0, 80)) : typeof digest;
    throw new TrustplaneError("INVALID_ARGUMENT", "BLOB_DIGEST_INVALID", `blob digest must be 64 lowercase hex characters (SHA-256), got ${shown}`, "digest");
  }
  return digest;
}

async function fsyncPath(p: string): Promise<void> {
  const h = await open(p, "r");
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

async function writeAll(fh: FileHandle, chunks: Buffer[]): Promise<void> {
  const buf = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
  for (let off = 0; off < buf.length; ) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
}

/** Every accepted source as one Readable of bytes (old-style streams wrapped, Uint8Array whole). */
function toReadable(data: BlobSource): Readable {
  if (data instanceof Uint8Array) return Readable.from([Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
  if (data instanceof Readable) return data;
  if (typeof (data as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] === "function") return Readable.from(data as AsyncIterable<Uint8Array>);
  return new Readable().wrap(data as NodeJS.ReadableStream);
}

function asBuffer(chunk: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (typeof chunk === "string") return Buffer.from(chunk, "utf8");
  throw new TrustplaneError("INVALID_ARGUMENT", "BLOB_CHUNK_INVALID", `blob sources must yield bytes, got ${typeof chunk}`, "data");
}

export class FsBlobStore implements BlobStore {
  /** Temp files live under root so the final rename never crosses a filesystem. */
  private readonly tmpDir: string;

  constructor(readonly root: string) {
    this.tmpDir = path.join(root, "tmp");
  }

  private pathOf(digest: string): string {
    checkDigest(digest);
    return path.join(this.root, digest.slice(0, 2), digest.slice(2, 4), digest);
  }

  async put(data: BlobSource, opts: BlobPutOptions = {}): Promise<BlobInfo> {
    if (opts.expectedDigest !== undefined) checkDigest(opts.expectedDigest);
    const cancelled = () => new TrustplaneError("CANCELLED", "BLOB_WRITE_CANCELLED", "the blob upload was cancelled before it completed; nothing was stored", "data");
    if (opts.signal?.aborted) throw cancelled();
    // Attached before any await: an old-style stream emits whether or not anyone listens.
    const source = toReadable(data);
    if (opts.signal) addAbortSignal(opts.signal, source);
    // The temp name is unpredictable and opened with O_EXCL: no one can pre-plant or race it.
    const tmp = path.join(this.tmpDir, `${Date.now()}-${randomBytes(12).toString("hex")}.part`);
    let fh: FileHandle;
    try {
      await mkdir(this.tmpDir, { recursive: true, mode: 0o700 });
      // Opened before reading anything, so every failure below knows there is a file to remove
      // (an fs.WriteStream opens lazily and could create the file after the cleanup ran).
      fh = await open(tmp, "wx", 0o600);
    } catch (e) {
      source.destroy();
      throw e;
    }
    let open_ = true;
    const hash = createHash("sha256");
    const max = opts.maxBytes ?? Number.POSITIVE_INFINITY;
    let size = 0;
    try {
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      for await (const raw of source) {
        const chunk = asBuffer(raw);
        size += chunk.length;
        if (size > max) throw new TrustplaneError("RESOURCE_EXHAUSTED", "BLOB_TOO_LARGE", `blob exceeds the limit of ${max} bytes; send a smaller object`, "data");
        hash.update(chunk);
        pending.push(chunk);
        pendingBytes += chunk.length;
        if (pendingBytes >= WRITE_BATCH) {
          await writeAll(fh, pending);
          pending = [];
          pendingBytes = 0;
        }
      }
      if (pendingBytes > 0) await writeAll(fh, pending);
      if (opts.signal?.aborted) throw cancelled();
      await fh.sync();
      open_ = false;
      await fh.close();
      const digest = hash.digest("hex");
      if (opts.expectedDigest !== undefined && opts.expectedDigest !== digest) {
        throw new TrustplaneError("DATA_LOSS", "DIGEST_MISMATCH", `blob content hashes to ${digest}, not the expected ${opts.expectedDigest}; resend the object`, "sha256");
      }
      const final = this.pathOf(digest);
      await mkdir(path.dirname(final), { recursive: true, mode: 0o700 });
      // Same content under the same name: replacing an existing blob is harmless and atomic.
      await rename(tmp, final);
      await fsyncPath(path.dirname(final));
      return { digest, size };
    } catch (e) {
      if (open_) await fh.close().catch(() => undefined);
      await rm(tmp, { force: true });
      if (!source.destroyed) source.destroy();
      if (opts.signal?.aborted && !(e instanceof TrustplaneError)) throw cancelled();
      throw e;
    }
  }

  get(digest: string): Readable {
    const file = this.pathOf(digest);
    async function* chunks(): AsyncGenerator<Buffer> {
      let fh: FileHandle;
      try {
        fh = await open(file, "r");
      } catch (e) {
        // A missing blob is NOT_FOUND, not a raw ENOENT carrying a server path.
        if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new TrustplaneError("NOT_FOUND", "BLOB_NOT_FOUND", `no blob ${digest}`, "digest");
        throw e;
      }
      try {
        for (;;) {
          const { bytesRead, buffer } = await fh.read({ buffer: Buffer.allocUnsafe(READ_CHUNK) });
          if (bytesRead === 0) return;
          yield bytesRead === buffer.length ? buffer : buffer.subarray(0, bytesRead);
        }
      } finally {
        await fh.close();
      }
    }
    return Readable.from(chunks(), { objectMode: false });
  }

  async stat(digest: string): Promise<BlobInfo | undefined> {
    try {
      const s = await stat(this.pathOf(digest));
      return s.isFile() ? { digest, size: s.size } : undefined;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw e;
    }
  }

  async has(digest: string): Promise<boolean> {
    return (await this.stat(digest)) !== undefined;
  }

  async delete(digest: string): Promise<boolean> {
    try {
      await unlink(this.pathOf(digest));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw e;
    }
  }

  /**
   * Removes temp files left by a process that died mid-write (a crash cannot clean up after
   * itself). Call once at startup; files younger than maxAgeMs may belong to a live upload.
   */
  async removeStaleTemp(maxAgeMs = 60 * 60 * 1000, nowMs = Date.now()): Promise<number> {
    let names: string[];
    try {
      names = await readdir(this.tmpDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return 0;
      throw e;
    }
    let removed = 0;
    for (const name of names) {
      const p = path.join(this.tmpDir, name);
      const s = await stat(p).catch(() => undefined);
      if (s && nowMs - s.mtimeMs > maxAgeMs) {
        await rm(p, { force: true });
        removed++;
      }
    }
    return removed;
  }
}
