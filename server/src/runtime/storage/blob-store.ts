// Content-addressed blob storage behind one interface (filesystem now, S3 later). Blobs are
// named by SHA-256, streamed in and out (never held whole), and written atomically: temp file
// in the same directory, fsync, rename, fsync the directory. A failed write leaves nothing.
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, type ReadStream } from "node:fs";
import { mkdir, open, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { TrustplaneError } from "../../../../sdk/src/errors.js";

export type BlobSource = Uint8Array | AsyncIterable<Uint8Array> | NodeJS.ReadableStream;

export interface BlobInfo {
  /** SHA-256, lowercase hex. */
  digest: string;
  size: number;
}

export interface BlobStore {
  put(data: BlobSource, opts?: { expectedDigest?: string; maxBytes?: number }): Promise<BlobInfo>;
  get(digest: string): Readable;
  has(digest: string): Promise<boolean>;
  stat(digest: string): Promise<BlobInfo | undefined>;
  delete(digest: string): Promise<boolean>;
}

const DIGEST_RE = /^[0-9a-f]{64}$/;

export function checkDigest(digest: string): string {
  if (!DIGEST_RE.test(digest)) throw new TrustplaneError("INVALID_ARGUMENT", "BLOB_DIGEST_INVALID", `blob digest must be 64 lowercase hex characters, got ${JSON.stringify(digest.slice(0, 80))}`, "digest");
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

export class FsBlobStore implements BlobStore {
  constructor(readonly root: string) {}

  private pathOf(digest: string): string {
    checkDigest(digest);
    return path.join(this.root, digest.slice(0, 2), digest.slice(2, 4), digest);
  }

  async put(data: BlobSource, opts: { expectedDigest?: string; maxBytes?: number } = {}): Promise<BlobInfo> {
    if (opts.expectedDigest !== undefined) checkDigest(opts.expectedDigest);
    const tmpDir = path.join(this.root, "tmp");
    await mkdir(tmpDir, { recursive: true, mode: 0o700 });
    const tmp = path.join(tmpDir, `${Date.now()}-${randomBytes(8).toString("hex")}`);
    const hash = createHash("sha256");
    let size = 0;
    const max = opts.maxBytes ?? Number.POSITIVE_INFINITY;
    const source: AsyncIterable<Uint8Array> = data instanceof Uint8Array ? [data] as unknown as AsyncIterable<Uint8Array> : (data as AsyncIterable<Uint8Array>);
    try {
      await pipeline(
        Readable.from(source, { objectMode: false }),
        async function* (chunks: AsyncIterable<Buffer>) {
          for await (const chunk of chunks) {
            size += chunk.length;
            if (size > max) throw new TrustplaneError("RESOURCE_EXHAUSTED", "BLOB_TOO_LARGE", `blob exceeds the limit of ${max} bytes`, "data");
            hash.update(chunk);
            yield chunk;
          }
        },
        createWriteStream(tmp, { flags: "wx", mode: 0o600 }),
      );
      await fsyncPath(tmp);
      const digest = hash.digest("hex");
      if (opts.expectedDigest !== undefined && opts.expectedDigest !== digest) {
        throw new TrustplaneError("DATA_LOSS", "DIGEST_MISMATCH", `blob content hashes to ${digest}, not the expected ${opts.expectedDigest}`, "sha256");
      }
      const final = this.pathOf(digest);
      await mkdir(path.dirname(final), { recursive: true, mode: 0o700 });
      await rename(tmp, final);
      await fsyncPath(path.dirname(final));
      return { digest, size };
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  }

  get(digest: string): ReadStream {
    const file = this.pathOf(digest);
    const stream = createReadStream(file);
    stream.on("error", () => undefined);
    // Surface a missing blob as NOT_FOUND rather than a raw ENOENT.
    const original = stream.emit.bind(stream);
    stream.emit = ((event: string, ...args: unknown[]) => {
      if (event === "error" && (args[0] as NodeJS.ErrnoException)?.code === "ENOENT") {
        return original("error", new TrustplaneError("NOT_FOUND", "BLOB_NOT_FOUND", `no blob ${digest}`, "digest"));
      }
      return original(event, ...args);
    }) as typeof stream.emit;
    return stream;
  }

  async stat(digest: string): Promise<BlobInfo | undefined> {
    try {
      const s = await stat(this.pathOf(digest));
      return { digest, size: s.size };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw e;
    }
  }

  async has(digest: string): Promise<boolean> {
    return (await this.stat(digest)) !== undefined;
  }

  async delete(digest: string): Promise<boolean> {
    const existed = await this.has(digest);
    await rm(this.pathOf(digest), { force: true });
    return existed;
  }
}
